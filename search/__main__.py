"""``python -m search`` / ``unet-search``: the command-line interface."""

from __future__ import annotations

import sys

from search.cli import main


def entry() -> None:
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    entry()
