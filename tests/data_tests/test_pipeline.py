"""tf.data pipelines (data/pipeline.py): dtypes, shapes, determinism, epochs, evaluation untouched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from data.augment import AugmentSpec
from data.pipeline import eval_dataset, train_dataset

N, SIZE = 10, 32


def make_arrays(n: int = N, size: int = SIZE, channels: int = 3, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct random images; masks are a disc per sample."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cx, cy = (int(v) for v in rng.integers(8, size - 8, 2))
        cv2.circle(masks[i], (cx, cy), int(rng.integers(3, 8)), 1, -1)
    return images, masks


def epoch(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """One iteration (epoch) of a dataset, concatenated."""
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def order_of(images: np.ndarray, seen: np.ndarray) -> list[int]:
    """Index of each seen (un-augmented) image in ``images``."""
    lookup = {images[i].tobytes(): i for i in range(len(images))}
    return [lookup[img.tobytes()] for img in seen]


def test_train_batches_have_the_promised_dtypes_and_shapes() -> None:
    images, masks = make_arrays()
    ds = train_dataset(images, masks, batch_size=4, augment=AugmentSpec.reference(), seed=0)
    assert ds.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    assert ds.element_spec[1].shape.as_list() == [None, SIZE, SIZE, 1]
    assert int(ds.cardinality()) == 3  # known, so Keras can show progress and size epochs
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    for image, mask in batches:
        assert image.dtype == np.uint8 and mask.dtype == np.float32
        assert mask.shape == (*image.shape[:3], 1)
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}


def test_unaugmented_epochs_are_reshuffled_permutations() -> None:
    images, masks = make_arrays(n=16)
    ds = train_dataset(images, masks, batch_size=3, augment=None, seed=7)
    first_images, first_masks = epoch(ds)
    second_images, _ = epoch(ds)
    first, second = order_of(images, first_images), order_of(images, second_images)
    assert sorted(first) == sorted(second) == list(range(16))
    assert first != second
    assert np.array_equal(first_masks[..., 0], masks[first])


def test_same_seed_same_epochs_different_seed_different() -> None:
    images, masks = make_arrays()
    spec = AugmentSpec.reference()
    a = train_dataset(images, masks, batch_size=4, augment=spec, seed=11)
    b = train_dataset(images, masks, batch_size=4, augment=spec, seed=11, num_parallel_calls=1)
    c = train_dataset(images, masks, batch_size=4, augment=spec, seed=12)
    a0, a1, b0, b1, c0 = epoch(a), epoch(a), epoch(b), epoch(b), epoch(c)
    for x, y in ((a0, b0), (a1, b1)):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    assert not np.array_equal(a0[0], a1[0])
    assert not np.array_equal(a0[0], c0[0])


def test_no_shuffle_keeps_index_order_but_augments_per_epoch() -> None:
    images, masks = make_arrays()
    plain = train_dataset(images, masks, batch_size=4, augment=None, seed=0, shuffle=False)
    assert order_of(images, epoch(plain)[0]) == list(range(N))
    ds = train_dataset(images, masks, batch_size=4, augment=AugmentSpec(hflip=1.0, vflip=1.0), seed=0, shuffle=False)
    first, second = epoch(ds)[0], epoch(ds)[0]
    assert not np.array_equal(first, second)
    for i in range(N):  # every sample is its own image, possibly flipped
        variants = [images[i], images[i, ::-1], images[i, :, ::-1], images[i, ::-1, ::-1]]
        assert any(np.array_equal(first[i], v) for v in variants)


def test_augmented_images_stay_aligned_with_masks() -> None:
    _, masks = make_arrays(n=8, size=64)
    images = np.repeat((masks * 255)[..., None], 3, axis=3)
    ds = train_dataset(images, masks, batch_size=4, augment=AugmentSpec.reference(), seed=3)
    ring = np.ones((3, 3), np.uint8)
    for _ in range(2):
        out_images, out_masks = epoch(ds)
        for image, mask in zip(out_images, out_masks[..., 0].astype(bool), strict=True):
            thresholded = image[..., 0] > 127
            # The mask is resampled with nearest neighbour, the image bilinearly: with one transform they
            # differ on the outline only (a disc of radius 3-7 px), never by a shift of more than a pixel.
            assert not (mask & ~cv2.dilate(thresholded.astype(np.uint8), ring).astype(bool)).any()
            assert not (thresholded & ~cv2.dilate(mask.astype(np.uint8), ring).astype(bool)).any()
            union = (thresholded | mask).sum()
            assert union == 0 or (thresholded & mask).sum() / union >= 0.8


def test_eval_is_never_augmented_and_in_order() -> None:
    images, masks = make_arrays(n=7)
    ds = eval_dataset(images, masks, batch_size=3)
    assert int(ds.cardinality()) == 3
    assert ds.element_spec[1].shape.as_list() == [None, SIZE, SIZE, 1]
    for _ in range(2):
        out_images, out_masks = epoch(ds)
        assert out_images.dtype == np.uint8 and out_masks.dtype == np.float32
        assert np.array_equal(out_images, images)
        assert np.array_equal(out_masks[..., 0], masks)


def test_memmap_inputs(tmp_path: Path) -> None:
    images, masks = make_arrays(n=6, channels=1)
    on_disk = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=images.shape)
    on_disk[:] = images
    on_disk.flush()
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    out_images, _ = epoch(eval_dataset(mapped, masks, batch_size=4))
    assert np.array_equal(out_images, images)
    out_images, out_masks = epoch(train_dataset(mapped, masks, batch_size=4, augment=AugmentSpec.reference(), seed=1))
    assert out_images.shape == (6, SIZE, SIZE, 1) and out_masks.shape == (6, SIZE, SIZE, 1)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"images": np.zeros((2, SIZE, SIZE, 3), np.float64)}, "images: expected a uint8 or float32"),
        ({"images": np.zeros((2, SIZE, SIZE), np.uint8)}, "images: expected a uint8 or float32"),
        ({"masks": np.zeros((3, SIZE, SIZE), np.uint8)}, "masks: expected"),
        ({"masks": np.zeros((2, SIZE, SIZE, 1), np.uint8)}, "masks: expected"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"num_parallel_calls": 0}, "num_parallel_calls=0"),
        ({"images": np.zeros((2, SIZE, 16, 3), np.uint8), "masks": np.zeros((2, SIZE, 16), np.uint8)}, "square"),
    ],
)
def test_train_dataset_rejects_bad_arguments(change: dict, fragment: str) -> None:
    kwargs = {
        "images": np.zeros((2, SIZE, SIZE, 3), np.uint8),
        "masks": np.zeros((2, SIZE, SIZE), np.uint8),
        "batch_size": 2,
        "augment": AugmentSpec.reference(),
        "seed": 0,
    } | change
    with pytest.raises(ValueError, match=fragment):
        train_dataset(**kwargs)


def test_eval_dataset_rejects_bad_batch_size() -> None:
    images, masks = make_arrays(n=2)
    with pytest.raises(ValueError, match="batch_size"):
        eval_dataset(images, masks, batch_size=0)


def test_keras_fit_runs_one_epoch_per_iteration() -> None:
    import keras

    images, masks = make_arrays(n=6)
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    train = train_dataset(images, masks, batch_size=4, augment=AugmentSpec.reference(), seed=0)
    history = model.fit(
        train, validation_data=eval_dataset(images, masks, batch_size=4), epochs=2, shuffle=False, verbose=0
    )
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["val_loss"]))


def test_steps_make_an_epoch_of_exactly_that_many_full_batches_freshly_augmented_per_pass() -> None:
    """10 images, batch 4, steps 7 = 28 samples from 3 passes: every pass a permutation of its own."""
    images, masks = make_arrays(n=10)
    ds = train_dataset(images, masks, batch_size=4, augment=None, seed=3, epoch=0, steps=7)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4] * 7
    seen = order_of(images, np.concatenate([b[0] for b in batches]))
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != seen[10:20]  # the second pass is reshuffled, not a repeat
    # pass 0 is the one-pass epoch: steps only adds passes after it
    one_pass = order_of(images, epoch(train_dataset(images, masks, batch_size=4, augment=None, seed=3, epoch=0))[0])
    assert seen[:10] == one_pass

    spec = AugmentSpec.reference()
    aug = lambda e: epoch(train_dataset(images, masks, batch_size=4, augment=spec, seed=3, epoch=e, steps=5))  # noqa: E731
    (a, am), (b, bm), (c, _) = aug(1), aug(1), aug(2)
    np.testing.assert_array_equal(a, b)  # deterministic per (seed, epoch): a resumed run sees the same data
    np.testing.assert_array_equal(am, bm)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[:10], a[10:20])  # each pass augmented afresh


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_steps_must_be_a_positive_int(steps: Any) -> None:
    images, masks = make_arrays(n=4)
    with pytest.raises(ValueError, match="steps"):
        train_dataset(images, masks, batch_size=2, augment=None, seed=0, steps=steps)


def test_float_images_of_16_bit_datasets_pass_through_augmentation_and_evaluation() -> None:
    """16-bit datasets are cached as float32 on the 0..255 scale; both pipelines keep that dtype and its levels."""
    images, masks = make_arrays(n=4, channels=1)
    fine = images.astype(np.float32) + np.float32(0.25)  # levels between the 8-bit ones
    ds = train_dataset(fine, masks, batch_size=2, augment=AugmentSpec(hflip=1.0, rotation=1.0, elastic=1.0), seed=3)
    out_images, out_masks = epoch(ds)
    assert out_images.dtype == np.float32 and out_images.shape == fine.shape
    assert 0.0 <= out_images.min() and out_images.max() <= 255.25
    assert np.any(out_images % 1 != 0) and set(np.unique(out_masks).tolist()) <= {0.0, 1.0}
    evaluated, _ = epoch(eval_dataset(fine, masks, batch_size=3))
    assert evaluated.dtype == np.float32 and np.array_equal(evaluated, fine)


def test_every_random_stream_of_an_epoch_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass p's order once came from (seed, epoch, p), the stream of sample p's augmentation in pass 0
    (and pass 0's (seed, epoch) equals (seed, epoch, 0) to SeedSequence): every stream now differs (review §14)."""
    states: list[tuple[int, ...]] = []
    real = np.random.default_rng

    def recording(seed: Any = None) -> np.random.Generator:
        if sys._getframe(1).f_globals.get("__name__") != "data.pipeline":  # e.g. SciPy's own generators
            return real(seed)
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        states.append(tuple(int(v) for v in sequence.generate_state(4)))
        return real(seed)

    monkeypatch.setattr(np.random, "default_rng", recording)
    images, masks = make_arrays(n=4)
    ds = train_dataset(images, masks, batch_size=2, augment=AugmentSpec(hflip=1.0), seed=3, epoch=0, steps=4,
                       num_parallel_calls=1)
    epoch(ds)  # 8 samples: 2 passes over 4 images
    assert len(states) == 2 + 8  # one order per pass, one augmentation per sample
    assert len(set(states)) == len(states)
