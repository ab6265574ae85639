"""``environment.json``: what a study ran on (versions, machine, git revision), without importing TensorFlow."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["environment_info"]


def environment_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Installed versions from the package metadata: importing TensorFlow here would cost the driver
    # (which never trains) 2-3 s and ~600 MiB.
    from importlib import metadata

    for mod, dist in (("tensorflow", "tensorflow"), ("keras", "keras"), ("keras_tuner", "keras-tuner"),
                      ("optuna", "optuna"), ("numpy", "numpy"), ("cv2", "opencv-python-headless")):
        try:
            info[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[mod] = None
    try:
        info["git_revision"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_revision"] = None
    info["gpus_visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info
