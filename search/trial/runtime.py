"""Runtime setup of a process that trains: the one place that touches devices and TF settings.

Called by the trial process (search/trial/process.py) and tests, never on import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.config import Config


__all__ = [
    "PACKAGE_LOGGERS",
    "configure_logging",
    "configure_runtime",
    "device_memory_budget",
    "temporary_environ",
    "trial_runtime",
]

logger = logging.getLogger(__name__)


PACKAGE_LOGGERS = ("search", "data", "models")


def configure_logging(level: int = logging.WARNING) -> None:
    """Log this project's packages at ``level`` and everything else at WARNING, to standard error.

    A trial process gets the driver's level (``TrialProcess`` passes it as ``log_level``), so ``-v``,
    ``-vv`` and ``--debug`` show its records too. Adds a handler only if the process has none.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in PACKAGE_LOGGERS:
        logging.getLogger(name).setLevel(level)


def configure_runtime(
    *,
    threads: int | None = None,
    mixed_precision: bool = False,
    deterministic: bool = True,
    log_level: int = logging.WARNING,
) -> dict[str, Any]:
    """Logging at ``log_level``; quiet TensorFlow, set thread pools, GPU memory growth, precision, determinism.

    Returns a description of the devices (for ``environment.json``).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_logging(log_level)
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        except RuntimeError:  # already initialised in this process
            pass
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision and gpus else "float32")
    if deterministic and not gpus:
        # CPU kernels are deterministic once seeded; op determinism also fixes tf.data order.
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001 - not available on every build
            pass
    return {"gpus": [g.name for g in gpus], "mixed_precision": bool(mixed_precision and gpus)}


def trial_runtime(cfg: Config) -> dict[str, Any]:
    """Runtime settings of a trial process (:func:`configure_runtime`'s arguments) from the study's config.

    Op determinism makes Keras drop XLA (with only a warning), so ``jit_compile`` turns it off.
    """
    return {
        "mixed_precision": cfg.train.mixed_precision,
        "deterministic": cfg.train.deterministic and not cfg.train.jit_compile,
    }


def device_memory_budget() -> int | None:
    """Bytes a trial may use: the first visible GPU's memory when there is a GPU, else 80 % of host memory.

    ``UNET_SEARCH_GPU_MEMORY_GB`` overrides. The driver calls this and must not import TensorFlow, so the
    GPU is asked with ``nvidia-smi`` (total memory of the first GPU in ``CUDA_VISIBLE_DEVICES``, else GPU
    0), and only where one could be visible: not when CUDA_VISIBLE_DEVICES is empty or -1. TensorFlow
    itself cannot say a GPU's size without setting the device up (``get_memory_info`` reports usage).
    None when a GPU is visible but its size is unknown (a MIG slice): no budget rather than a wrong one.
    """
    gpu_env = os.environ.get("UNET_SEARCH_GPU_MEMORY_GB")
    if gpu_env:
        return int(float(gpu_env) * 2**30)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = visible is not None and visible.strip() in ("", "-1")
    gpus = None if hidden else _nvidia_smi_gpus()
    if gpus:
        first = (visible or "0").split(",")[0].strip()
        for index, uuid, total_mib in gpus:
            if first == index or (first.startswith("GPU-") and uuid.startswith(first)):
                return total_mib * 2**20
        logger.debug("GPU %r (CUDA_VISIBLE_DEVICES) is not in nvidia-smi's list; no memory budget", first)
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    return int(total * 0.8) if total else None


def _nvidia_smi_gpus() -> list[tuple[str, str, int]]:
    """(index, uuid, total MiB) of each GPU nvidia-smi lists; empty without nvidia-smi or when it fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    cmd = ["nvidia-smi", "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
        rows = [[field.strip() for field in line.split(",")] for line in out.splitlines() if line.strip()]
        return [(index, uuid, int(float(total))) for index, uuid, total in rows]
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        logger.debug("nvidia-smi gave no GPU memory (%s)", e)
        return []


@contextlib.contextmanager
def temporary_environ(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block (this process and children it starts)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
