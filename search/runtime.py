"""Runtime setup of a process that trains: the one place that touches devices and TF settings.

Called by the worker process (and tests), never on import.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


PACKAGE_LOGGERS = ("search", "data", "models")


def configure_logging(level: int = logging.WARNING) -> None:
    """Log this project's packages at ``level`` and everything else at WARNING, to standard error.

    A worker process gets the driver's level (``WorkerPool`` passes it as ``log_level``), so ``-v``,
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


def device_memory_budget() -> int | None:
    """Bytes a trial may use: GPU memory when a GPU is present, else 80 % of host memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    budget = int(total * 0.8) if total else None
    gpu_env = os.environ.get("UNET_SEARCH_GPU_MEMORY_GB")
    if gpu_env:
        return int(float(gpu_env) * 2**30)
    return budget


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
