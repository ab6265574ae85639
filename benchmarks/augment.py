"""Throughput of the paired augmentation: samples/s, all nine at strength 1 vs none.

Two ways: (a) ``Augmenter`` called in a plain single-threaded loop; (b) through ``train_dataset`` with its
parallel map on all cores (batch 2, whole epochs, after one warm-up epoch). Prints one JSON line per
measurement, then a table.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/augment.py --size 512 --samples 300 --channels 3 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import cv2
import numpy as np

from data.augment import Augmenter, AugmentSpec
from data.pipeline import train_dataset

SPECS = {"none": AugmentSpec.none(), "all nine": AugmentSpec.reference()}


def synthetic(n: int, *, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noisy images with a few random blobs, and the blobs as masks."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, channels), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        background = cv2.GaussianBlur(rng.normal(90, 40, (size, size)).astype(np.float32), (0, 0), 3)
        for _ in range(4):
            centre = tuple(int(v) for v in rng.integers(size // 8, size - size // 8, 2))
            axes = tuple(int(v) for v in rng.integers(size // 40 + 2, size // 8, 2))
            cv2.ellipse(masks[i], centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        image = np.clip(background + 120 * masks[i], 0, 255).astype(np.uint8)
        images[i] = image[..., None]
    return images, masks


def loop_rate(spec: AugmentSpec, images: np.ndarray, masks: np.ndarray, samples: int) -> float:
    """Samples/s of the augmenter in a plain single-threaded loop (one rng per sample, as in the pipeline)."""
    cv2.setNumThreads(1)
    augmenter = Augmenter(spec, size=images.shape[1])
    n = len(images)
    for i in range(10):
        augmenter(images[i % n], masks[i % n], np.random.default_rng((0, 0, i)))
    start = time.perf_counter()
    for i in range(samples):
        augmenter(images[i % n], masks[i % n], np.random.default_rng((0, 1, i)))
    return samples / (time.perf_counter() - start)


def pipeline_rate(spec: AugmentSpec, images: np.ndarray, masks: np.ndarray, samples: int) -> float:
    """Samples/s through train_dataset (parallel map, AUTOTUNE), whole epochs after one warm-up epoch."""
    ds = train_dataset(images, masks, batch_size=2, augment=spec, seed=0)
    for _ in ds:
        pass
    epochs = math.ceil(samples / len(images))
    count = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for image, _mask in ds:
            count += int(image.shape[0])
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=300, help="timed samples per measurement")
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 1])
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores: {cores} (os.cpu_count() = {os.cpu_count()}), opencv {cv2.__version__}, numpy {np.__version__}")
    rows = []
    for channels in args.channels:
        images, masks = synthetic(min(64, args.samples), size=args.size, channels=channels)
        for name, spec in SPECS.items():
            for mode, measure in (("loop, 1 thread", loop_rate), ("train_dataset, parallel", pipeline_rate)):
                rate = measure(spec, images, masks, args.samples)
                row = {
                    "size": args.size, "channels": channels, "augment": name, "mode": mode,
                    "samples_per_s": round(rate, 1), "cores": cores,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    print()
    print(f"{'size':>5} {'ch':>3} {'augment':<9} {'mode':<24} {'samples/s':>10}")
    for r in rows:
        print(f"{r['size']:>5} {r['channels']:>3} {r['augment']:<9} {r['mode']:<24} {r['samples_per_s']:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
