"""CT-like synthetic phantoms: a body with lungs, heart, spine and vessels; the target is the aorta.

The target is one or two round, uniformly bright (contrast-enhanced) vessels: the ascending aorta just above the
heart and, in most images, the descending aorta beside the spine. Distractors share one cue but not both: elongated
vessels as bright as the target, round vessels that are dimmer, bright-rimmed vertebrae, heart chambers of varied
contrast. A tiny UNet has to learn shape and contrast together, yet reaches a high dice in a few dozen epochs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from data.dataset import SPLITS, split_counts
from data.errors import DatasetError

__all__ = ["SYNTHETIC_VERSION", "make_phantom", "synthetic_arrays", "write_synthetic_dataset"]

logger = logging.getLogger(__name__)

SYNTHETIC_VERSION = 1
MARKER = "synthetic.json"
MIN_SIZE = 16
_MIN_TARGET_RADIUS_PX = 2.5


def make_phantom(*, size: int, rng: np.random.Generator, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like axial slice and its aorta mask.

    Args:
        size: side in pixels (>= 16).
        rng: the source of randomness (the phantom is a pure function of its state).
        channels: 1, or 3 (the gray image repeated).

    Returns:
        image uint8 [size, size, channels]; mask uint8 [size, size] with values in {0, 1}.
    """
    _check_size_channels(size, channels)
    s = float(size)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float64) + 0.5) / s  # pixel centres in [0, 1]
    img = np.full((size, size), rng.uniform(0.0, 0.04))

    # Body: fat ring around soft tissue.
    cy, cx = 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04)
    ry, rx = rng.uniform(0.30, 0.37), rng.uniform(0.40, 0.46)
    fat = rng.uniform(0.035, 0.06)
    img[_ellipse(yy, xx, cy, cx, ry, rx)] = rng.uniform(0.28, 0.36)
    inner = _ellipse(yy, xx, cy, cx, ry - fat, rx - fat)
    img[inner] = rng.uniform(0.44, 0.52)

    # Lungs: dark, left and right.
    for side in (-1.0, 1.0):
        lung = _ellipse(
            yy,
            xx,
            cy - 0.02 + rng.uniform(-0.02, 0.02),
            cx + side * rng.uniform(0.17, 0.22),
            ry * rng.uniform(0.55, 0.70),
            rx * rng.uniform(0.28, 0.36),
            angle=rng.uniform(-0.3, 0.3),
        )
        img[lung & inner] = rng.uniform(0.04, 0.12)

    # Heart: myocardium with chambers of varied contrast (never as bright as the target).
    hy, hx = cy + rng.uniform(-0.02, 0.05), cx + rng.uniform(-0.02, 0.06)
    hry, hrx = rng.uniform(0.11, 0.15), rng.uniform(0.13, 0.17)
    img[_ellipse(yy, xx, hy, hx, hry, hrx, angle=rng.uniform(-0.6, 0.6))] = rng.uniform(0.52, 0.60)
    for _ in range(int(rng.integers(2, 5))):
        chamber = _ellipse(
            yy,
            xx,
            hy + rng.uniform(-0.45, 0.45) * hry,
            hx + rng.uniform(-0.45, 0.45) * hrx,
            rng.uniform(0.035, 0.07),
            rng.uniform(0.035, 0.07),
            angle=rng.uniform(0, math.pi),
        )
        img[chamber] = rng.uniform(0.58, 0.74)

    # Spine: vertebral body with a bright cortical rim (bright and round, but not uniform).
    sy, sx = cy + ry * rng.uniform(0.55, 0.70), cx + rng.uniform(-0.02, 0.02)
    sr = rng.uniform(0.05, 0.07)
    img[_ellipse(yy, xx, sy, sx, sr, sr * rng.uniform(1.0, 1.2))] = rng.uniform(0.88, 1.0)
    img[_ellipse(yy, xx, sy, sx, sr * 0.7, sr * 0.7 * rng.uniform(1.0, 1.2))] = rng.uniform(0.60, 0.72)

    # Targets: ascending aorta above the heart, often the descending aorta beside the spine.
    target_level = rng.uniform(0.86, 1.0)
    ra = max(math.sqrt(rng.uniform(0.006, 0.03) / math.pi), _MIN_TARGET_RADIUS_PX / s)
    targets = [(hy - hry - ra * rng.uniform(0.2, 0.9), hx + rng.uniform(-0.06, 0.04), ra)]
    if rng.random() < 0.65:
        rd = max(ra * rng.uniform(0.6, 0.85), _MIN_TARGET_RADIUS_PX / s)
        targets.append((sy - sr - rd - rng.uniform(0.01, 0.03), sx + rng.uniform(0.05, 0.10), rd))

    # Distractor vessels, kept clear of the targets so the target boundary stays well defined.
    margin = 3.0 / s
    for _ in range(int(rng.integers(2, 6))):
        for _attempt in range(20):
            vy, vx = cy + rng.uniform(-0.8, 0.8) * (ry - fat), cx + rng.uniform(-0.8, 0.8) * (rx - fat)
            elongated = rng.random() < 0.5
            r1 = ra * rng.uniform(0.5, 1.1)
            r2 = r1 * rng.uniform(2.0, 3.2) if elongated else r1
            if all(math.hypot(vy - ty, vx - tx) > tr + max(r1, r2) + margin for ty, tx, tr in targets):
                vessel = _ellipse(yy, xx, vy, vx, r1, r2, angle=rng.uniform(0, math.pi))
                img[vessel & inner] = rng.uniform(0.80, 1.0) if elongated else rng.uniform(0.55, 0.70)
                break

    mask = np.zeros((size, size), dtype=bool)
    for ty, tx, tr in targets:
        mask |= _ellipse(yy, xx, ty, tx, tr, tr)
    img[mask] = target_level

    # Acquisition: mild blur (partial volume), then noise.
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=max(0.5, 0.6 * s / 64.0))
    img = img + rng.normal(0.0, rng.uniform(0.01, 0.035), size=img.shape)
    gray = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    image = np.repeat(gray[:, :, None], channels, axis=2)
    return image, mask.astype(np.uint8)


def synthetic_arrays(*, n: int, size: int, seed: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` phantoms in memory: images uint8 [n, size, size, channels], masks uint8 [n, size, size] in {0, 1}.

    Phantom ``i`` depends only on (seed, i), and equals image ``i`` of `write_synthetic_dataset` with the same seed.
    """
    if n < 1:
        raise ValueError(f"synthetic_arrays needs n >= 1. Received: n={n}")
    _check_size_channels(size, channels)
    images = np.empty((n, size, size, channels), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        images[i], masks[i] = make_phantom(size=size, rng=_rng(seed, i), channels=channels)
    return images, masks


def write_synthetic_dataset(
    out: Path | str,
    *,
    n: int,
    size: int,
    seed: int,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    channels: int = 1,
) -> Path:
    """Write ``n`` phantoms as lossless PNGs in the dataset layout ``out/{train,valid,test}/{images,masks}``.

    Masks are stored as 0/255. The same arguments give byte-identical files. An existing folder is reused when it
    holds a synthetic dataset written with the same arguments.

    Returns:
        ``out``.

    Raises:
        DatasetError: ``out`` is not empty and not a synthetic dataset with the same arguments.
        ValueError: invalid arguments.
    """
    out = Path(out).expanduser().absolute()
    _check_size_channels(size, channels)
    if len(split) != len(SPLITS):
        raise ValueError(f"split must give {len(SPLITS)} fractions {SPLITS}. Received: split={tuple(split)}")
    counts = split_counts(n, list(split))
    params = {
        "generator": "data.synthetic",
        "version": SYNTHETIC_VERSION,
        "n": n,
        "size": size,
        "seed": seed,
        "split": [float(f) for f in split],
        "channels": channels,
        "counts": dict(zip(SPLITS, counts, strict=True)),
    }
    if _reusable(out, params):
        logger.info("synthetic dataset %s already written with the same parameters; reusing it", out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        i = 0
        for name, count in zip(SPLITS, counts, strict=True):
            for kind in ("images", "masks"):
                (tmp / name / kind).mkdir(parents=True)
            for _ in range(count):
                image, mask = make_phantom(size=size, rng=_rng(seed, i), channels=channels)
                stem = f"phantom_{i:04d}"
                _write_png(tmp / name / "images" / f"{stem}.png", image if channels == 3 else image[:, :, 0])
                _write_png(tmp / name / "masks" / f"{stem}.png", mask * np.uint8(255))
                i += 1
        (tmp / MARKER).write_text(json.dumps(params, indent=1))
        _publish(tmp, out, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %d synthetic pairs (%dx%d, seed %d) to %s", n, size, size, seed, out)
    return out


# ---------------------------------------------------------------------------------------------------------------


def _rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, i])


def _check_size_channels(size: int, channels: int) -> None:
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"synthetic size must be an int >= {MIN_SIZE}. Received: size={size!r}")
    if channels not in (1, 3):
        raise ValueError(f"synthetic channels must be 1 or 3. Received: channels={channels!r}")


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, *, angle: float = 0.0
) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dy, dx = c * dy - s * dx, s * dy + c * dx
    return (dy / ry) ** 2 + (dx / rx) ** 2 <= 1.0


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise DatasetError(f"synthetic {path}: PNG encoding failed; expected a uint8 image")
    path.write_bytes(encoded.tobytes())


def _reusable(out: Path, params: dict[str, object]) -> bool:
    """True when ``out`` already holds this dataset; False when absent or empty; DatasetError otherwise."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise DatasetError(
            f"synthetic {out}: exists and is not a folder; expected an empty or missing folder"
        )
    if not any(out.iterdir()):
        return False
    try:
        previous = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        raise DatasetError(
            f"synthetic {out}: folder is not empty and holds no {MARKER}; expected an empty folder "
            "or a synthetic dataset written with the same parameters"
        ) from None
    if previous != params:
        differ = ", ".join(
            f"{k}={previous.get(k)!r} (asked {params[k]!r})" for k in params if previous.get(k) != params[k]
        )
        raise DatasetError(
            f"synthetic {out}: holds a synthetic dataset with other parameters ({differ}); "
            "expected an empty folder or the same parameters"
        )
    return True


def _publish(tmp: Path, out: Path, params: dict[str, object]) -> None:
    """Rename the finished temporary folder to ``out`` (replacing an empty one); tolerate an identical twin."""
    try:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        os.rename(tmp, out)
    except OSError:
        if not _reusable(out, params):
            raise
