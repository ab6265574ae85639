"""TensorFlow's start-up noise, kept out of the commands that load it in the CLI process (``predict``).

TensorFlow 2.21 writes its start-up lines from C++ straight to the stderr file descriptor, several of
them before ``TF_CPP_MIN_LOG_LEVEL`` applies ("All log messages before absl::InitializeLog() …",
oneDNN, "Could not find cuda drivers"), and "failed call to cuInit" as an *error* on every machine
without a GPU. ``TF_CPP_MIN_LOG_LEVEL=3`` would hide real errors too, so instead the start-up (import
and device discovery, after which TensorFlow prints nothing more of the kind) runs with stderr going
to a temporary file, and every line that is not known noise is written to stderr afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

__all__ = ["filtered_stderr", "is_startup_noise", "start_tensorflow_quietly"]

# Informational lines of a healthy start: the pre-absl banner, oneDNN and CPU-feature notes, the CUDA
# stub on a machine without drivers, and the plugin registrations TensorFlow repeats on every import.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc"
    r"|^To enable the following instructions:"
    r"|Could not find cuda drivers on your machine"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|computation_placer\.cc.*already registered"
)
_CUINIT = re.compile(r"failed call to cuInit")


def is_startup_noise(line: str) -> bool:
    """Whether a stderr line of TensorFlow's start-up says nothing is wrong.

    "failed call to cuInit" is noise only where no GPU is expected (no NVIDIA device, or
    ``CUDA_VISIBLE_DEVICES`` empty or -1); on a GPU machine it is the error that explains a CPU run.
    """
    if _NOISE.search(line):
        return True
    return bool(_CUINIT.search(line)) and not _gpu_expected()


def _gpu_expected() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


@contextlib.contextmanager
def filtered_stderr(noise: Callable[[str], bool] = is_startup_noise) -> Iterator[None]:
    """Hold back what is written to file descriptor 2 inside the block; then write every line but ``noise``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def start_tensorflow_quietly(*, debug: bool = False) -> None:
    """Import TensorFlow and discover its devices with the start-up noise held back (all of it with ``debug``)."""
    with contextlib.nullcontext() if debug else filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
