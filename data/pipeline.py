"""tf.data input pipelines: shuffled, augmented training batches and fixed-order evaluation batches.

Both read samples out of numpy arrays (a ``np.memmap`` works) by index inside ``tf.numpy_function``, so the
arrays never become graph constants. Training: every iteration draws an epoch key from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`` (a different key each epoch, the same
sequence of keys for the same seed), one permutation per pass from the stream (seed, "order", key, pass),
and augments each sample on its own from the stream (seed, "augment", key, pass, index) in a parallel map
(OpenCV is kept to one thread per call, parallelism comes from tf.data), so epoch k's batches are the same
for the same seed however many threads run. Streams are hashed from their whole key (:func:`_stream`), so
no two of them coincide (a pass's order is not some sample's augmentation). One iteration of a dataset is one epoch. By default an epoch is one pass over the
samples; with ``steps=N`` it is exactly N full batches, drawn from as many passes as that needs, each pass
freshly shuffled and augmented from (seed, epoch, pass), so a 10-image dataset can train 400 steps per
epoch without seeing one augmented sample twice. TensorFlow is imported when a pipeline is built, not when this module is imported.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from data.augment import Augmenter, AugmentSpec

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["eval_dataset", "train_dataset"]

logger = logging.getLogger(__name__)

IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))  # float32: 16-bit datasets, on 0..255 (data/cache.py)


def train_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int,
    augment: AugmentSpec | None,
    seed: int,
    shuffle: bool = True,
    num_parallel_calls: int | None = None,
    epoch: int | None = None,
    steps: int | None = None,
    num_classes: int = 2,
) -> tf.data.Dataset:
    """Training batches: (images [B, H, W, C] of the arrays' dtype, masks float32 [B, H, W, 1]), one epoch per
    iteration.

    Args:
        images: uint8 [N, H, W, C], or float32 on 0..255 (16-bit datasets); may be a ``np.memmap``.
        masks: uint8 [N, H, W], class indices below ``num_classes`` ({0, 1} for binary masks).
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        augment: strengths of the paired augmentations; None or all-zero trains on the images as they are.
        seed: non-negative int; the order and the augmentation of every epoch derive from it.
        shuffle: reshuffle every epoch (otherwise index order, still augmented per epoch).
        num_parallel_calls: parallel augmentation calls; None = the cores this process may use.
        epoch: None = every iteration draws a fresh epoch key from the seed's random stream; an int =
            the dataset is that one epoch (order and augmentation depend only on seed and epoch), so a
            run resumed at epoch k sees exactly the data the uninterrupted run saw.
        steps: None = one pass over the samples (the last batch may be smaller); an int = exactly this
            many batches of ``batch_size``, from ``ceil(steps * batch_size / N)`` passes, each pass with
            its own order and augmentation (samples are not repeated within a pass).
        num_classes: K, the background included (2 for binary masks); augmentation keeps indices exact.

    Raises:
        ValueError: arrays of the wrong dtype/shape, or an invalid argument (the message names it).
    """
    import tensorflow as tf

    n, height, width, channels = _check_arrays(images, masks)
    _check_batch_size(batch_size)
    _check_train_args(seed=seed, num_parallel_calls=num_parallel_calls, steps=steps)
    augmenter = _train_augmenter(augment, images.shape)
    seed = int(seed)
    logger.debug(
        "train_dataset: %d samples %dx%dx%d, batch %d, seed %d, shuffle %s, augment %s",
        n, height, width, channels, batch_size, seed, shuffle, augment.to_dict() if augment is not None else None,
    )

    passes = 1 if steps is None else -(-int(steps) * batch_size // n)

    def pass_order(key: np.ndarray) -> np.ndarray:
        # One call per pass over the samples: rows (sample index, epoch key, pass). A one-pass epoch is
        # pass 0, so steps=None and the first pass of steps=N agree.
        epoch_key, pass_index = int(key[0]), int(key[1])
        order = _stream(seed, _ORDER, epoch_key, pass_index).permutation(n) if shuffle else np.arange(n)
        return np.stack([order, np.full(n, epoch_key), np.full(n, pass_index)], axis=1).astype(np.int64)

    def load(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index, key, pass_index = int(row[0]), int(row[1]), int(row[2])
        image, mask = _read(images, masks, index, num_classes)
        if augmenter is not None:
            cv2.setNumThreads(1)
            image, mask = augmenter(image, mask, _stream(seed, _AUGMENT, key, pass_index, index))
        return image, mask

    def samples(key: tf.Tensor) -> tf.data.Dataset:
        rows = tf.numpy_function(pass_order, [key], tf.int64, stateful=False)
        rows.set_shape((n, 3))
        return tf.data.Dataset.from_tensor_slices(rows)

    # Not Dataset.from_generator: on Python 3.11 its kernel calls mallopt(M_MMAP_THRESHOLD, 128 KiB) for the
    # whole process (TF's ApplyPython311MemoryPatch), after which every large numpy/OpenCV temporary is a
    # fresh mmap and page-faults: the augmentation ran ~2x slower.
    if epoch is None:
        epoch_keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    else:
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"train_dataset: expected epoch to be None or an int >= 0. Received: epoch={epoch!r}")
        epoch_keys = tf.data.Dataset.from_tensors(tf.constant(int(epoch), tf.int64))
    pass_index = tf.data.Dataset.range(passes)
    keys = epoch_keys.flat_map(
        lambda k: pass_index.map(lambda p: tf.stack([k, p]))
    )
    ds = keys.flat_map(samples).apply(tf.data.experimental.assert_cardinality(n * passes))
    if steps is not None:
        ds = ds.take(int(steps) * batch_size)
    ds = ds.map(
        _numpy_map(load, shapes=((height, width, channels), (height, width)), image_dtype=images.dtype),
        num_parallel_calls=_parallel_calls() if num_parallel_calls is None else num_parallel_calls,
        deterministic=True,
    )
    return _finish(ds.batch(batch_size))


def _train_augmenter(augment: AugmentSpec | None, shape: tuple[int, ...]) -> Augmenter | None:
    """The shared augmenter of ``augment`` for images of ``shape`` [N, H, W, C]; None when nothing is on."""
    if augment is None or not augment.enabled:
        return None
    if shape[1] != shape[2]:
        raise ValueError(f"train_dataset: augmentation needs square images. Received: images shape={shape}")
    return _augmenter(augment, shape[1])


def _check_train_args(*, seed: Any, num_parallel_calls: Any, steps: Any) -> None:
    """train_dataset's scalar arguments, in the Keras wording (ValueError naming the argument)."""
    import tensorflow as tf

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"train_dataset: expected seed to be an int >= 0. Received: seed={seed!r}")
    if num_parallel_calls is not None and (
        isinstance(num_parallel_calls, bool) or not isinstance(num_parallel_calls, int)
        or (num_parallel_calls < 1 and num_parallel_calls != tf.data.AUTOTUNE)
    ):
        raise ValueError(
            "train_dataset: expected num_parallel_calls to be None, tf.data.AUTOTUNE or an int >= 1. "
            f"Received: num_parallel_calls={num_parallel_calls!r}"
        )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1):
        raise ValueError(f"train_dataset: expected steps to be None or an int >= 1. Received: steps={steps!r}")


# The purposes of the random streams (the second word of a stream's key).
_ORDER, _AUGMENT = 1, 2


def _stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """The generator of one stream: ``SeedSequence`` hashes (seed, purpose, *keys), each as two 32-bit words.

    Fixed-width words keep the key unambiguous (``SeedSequence`` reads ``[a, b]`` like ``[a, b, 0]``
    and a large int as several words), and the purpose word keeps streams of different uses apart.
    """
    words = np.asarray([int(v) % 2**64 for v in (seed, purpose, *keys)], dtype=np.uint64).view(np.uint32)
    return np.random.default_rng(np.random.SeedSequence(words))


@functools.lru_cache(maxsize=8)
def _augmenter(spec: AugmentSpec, size: int) -> Augmenter:
    """Augmenters are immutable after construction (precomputed maps): share one per spec and size."""
    return Augmenter(spec, size=size)


def eval_dataset(images: np.ndarray, masks: np.ndarray, *, batch_size: int, num_classes: int = 2) -> tf.data.Dataset:
    """Evaluation batches in index order, never augmented: (images [B, H, W, C] of the arrays' dtype, masks float32
    [B, H, W, 1])."""
    import tensorflow as tf

    n, height, width, channels = _check_arrays(images, masks)
    _check_batch_size(batch_size)

    def load(start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        begin = int(start)
        stop = min(begin + batch_size, n)
        image = np.array(images[begin:stop])
        mask = np.array(masks[begin:stop], dtype=np.uint8)
        _check_mask_values(mask, where=f"masks[{begin}:{stop}]", num_classes=num_classes)
        return image, mask

    ds = tf.data.Dataset.range(0, n, batch_size).map(
        _numpy_map(load, shapes=((None, height, width, channels), (None, height, width)), image_dtype=images.dtype),
        num_parallel_calls=_parallel_calls(),
        deterministic=True,
    )
    return _finish(ds)


def _numpy_map(
    fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    *,
    shapes: tuple[tuple[int | None, ...], ...],
    image_dtype: np.dtype,
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Wrap a numpy (image, mask) function as a tf.data map function with static shapes."""
    import tensorflow as tf

    image_type = tf.as_dtype(image_dtype)

    def mapped(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, mask = tf.numpy_function(fn, [x], (image_type, tf.uint8), stateful=False)
        image.set_shape(shapes[0])
        mask.set_shape(shapes[1])
        return image, mask

    return mapped


# tf.data autotuning stays off. Its background thread sleeps 10 ms × (2^n − 1) between wake-ups, and
# destroying an iterator waits for the next wake-up; the training loop makes one iterator per epoch, so
# every epoch ended on that grid (0.63, 1.27, 2.55, 5.11 s …). Off, with explicit parallelism, training
# ran 1.10–1.34× faster on 2 cores (BENCHMARKS.md, B1) and augmentation still far outpaces training.
AUTOTUNE = False
PREFETCH_BATCHES = 2


def _parallel_calls() -> int:
    import tensorflow as tf

    if AUTOTUNE:
        return int(tf.data.AUTOTUNE)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Masks to float32 [B, H, W, 1]; prefetch; autotuning off unless AUTOTUNE."""
    import tensorflow as tf

    ds = ds.map(lambda image, mask: (image, tf.cast(mask, tf.float32)[..., tf.newaxis]))
    ds = ds.prefetch(tf.data.AUTOTUNE if AUTOTUNE else PREFETCH_BATCHES)
    options = tf.data.Options()
    options.autotune.enabled = AUTOTUNE
    return ds.with_options(options)


def _read(images: np.ndarray, masks: np.ndarray, index: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Copy sample ``index`` out of the (possibly memory-mapped) arrays."""
    image = np.array(images[index])
    mask = np.array(masks[index], dtype=np.uint8)
    _check_mask_values(mask, where=f"masks[{index}]", num_classes=num_classes)
    return image, mask


def _check_mask_values(mask: np.ndarray, *, where: str, num_classes: int = 2) -> None:
    if mask.size and int(mask.max()) >= num_classes:
        raise ValueError(f"{where}: expected mask values in 0..{num_classes - 1} ({num_classes} classes). "
                         f"Received: max={int(mask.max())}")


def _check_arrays(images: np.ndarray, masks: np.ndarray) -> tuple[int, int, int, int]:
    """Validate the arrays; return (N, H, W, C)."""
    if not isinstance(images, np.ndarray) or images.dtype not in IMAGE_DTYPES or images.ndim != 4:
        raise ValueError(
            "images: expected a uint8 or float32 array [N, H, W, C]. "
            f"Received: {type(images).__name__} dtype={getattr(images, 'dtype', None)}, "
            f"shape={getattr(images, 'shape', None)}"
        )
    if not isinstance(masks, np.ndarray) or masks.dtype != np.uint8 or masks.shape != images.shape[:3]:
        raise ValueError(
            f"masks: expected a uint8 array [N, H, W] = {list(images.shape[:3])}. "
            f"Received: {type(masks).__name__} dtype={getattr(masks, 'dtype', None)}, "
            f"shape={getattr(masks, 'shape', None)}"
        )
    n, height, width, channels = (int(v) for v in images.shape)
    if n < 1:
        raise ValueError(f"images: expected at least one sample. Received: shape={images.shape}")
    return n, height, width, channels


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1. Received: batch_size={batch_size!r}")
