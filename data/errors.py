"""The one exception type of the data package."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(Exception):
    """A dataset on disk is missing, malformed or unreadable.

    The message is one line that names the file or folder and says what was expected; the CLI maps this
    exception to exit code 3.
    """
