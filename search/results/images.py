"""Prediction images: the one place that draws them and writes them as PNG files.

Two pictures are drawn here: the *panel* (image | truth | prediction, side by side) that trials and the final
stage keep in the study folder, and the *overlay* (the image in colour with the predicted mask tinted red and
outlined) that ``predict --overlay`` writes. Every PNG goes through :func:`write_png`, which writes atomically
(temp file + rename), so a reader never sees a torn image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search.results import atomic_write_bytes

__all__ = [
    "OVERLAY_ALPHA",
    "OVERLAY_COLOR_BGR",
    "overlay_image",
    "prediction_panel",
    "save_predictions",
    "write_png",
]

OVERLAY_COLOR_BGR = (40, 40, 214)  # red
OVERLAY_ALPHA = 0.45


def write_png(path: Path, array: np.ndarray) -> Path:
    """Encode ``array`` (uint8 grey or BGR) as PNG and write it to ``path`` atomically.

    Raises:
        ValueError: OpenCV cannot encode the array.
        OSError: the file cannot be written.
    """
    import cv2

    ok, buf = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 arrays
        raise ValueError(f"cannot encode {path} as PNG (array {array.dtype} {array.shape})")
    atomic_write_bytes(path, buf.tobytes())
    return path


def prediction_panel(image: np.ndarray, mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Image (grey) | truth | prediction (thresholded at 0.5), side by side, as one uint8 array."""
    import cv2

    gray = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if gray.ndim == 3:
        gray = cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_RGB2GRAY)
    return np.concatenate(
        [gray.astype(np.uint8), (np.asarray(mask) > 0).astype(np.uint8) * 255, (prob > 0.5).astype(np.uint8) * 255],
        axis=1,
    )


def overlay_image(raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image in colour with the predicted mask tinted red and outlined (BGR uint8)."""
    import cv2

    base = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR) if raw.ndim == 2 else raw.copy()
    on = mask > 0
    tinted = base.astype(np.float32)
    tinted[on] = (1 - OVERLAY_ALPHA) * tinted[on] + OVERLAY_ALPHA * np.array(OVERLAY_COLOR_BGR, np.float32)
    out = tinted.astype(np.uint8)
    contours, _ = cv2.findContours(on.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OVERLAY_COLOR_BGR, max(1, round(max(raw.shape[:2]) / 400)))
    return out


def save_predictions(folder: Path, images: np.ndarray, masks: np.ndarray, prob: np.ndarray, stems: list[str]) -> None:
    """One PNG per image, ``<stem>.png``: image | truth | prediction (thresholded at 0.5), side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    for img, mask, p, stem in zip(images, masks, prob, stems, strict=False):
        write_png(folder / f"{stem}.png", prediction_panel(img, mask, p))
