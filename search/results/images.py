"""Prediction images: the one place that draws them and writes them as PNG files.

Two pictures are drawn here: the *panel* (image | truth | prediction, side by side) that trials and the final
stage keep in the study folder, and the *overlay* (the image in colour with the predicted mask tinted red and
outlined; several classes: each in its colour) that ``predict --overlay`` writes. A study of several classes draws
each class in the colour of its class map (colour masks) or of ``data.labels.palette`` (index masks). Every PNG goes through :func:`write_png`, which writes atomically
(temp file + rename), so a reader never sees a torn image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.labels import palette
from search.results import atomic_write_bytes

__all__ = [
    "OVERLAY_ALPHA",
    "OVERLAY_COLOR_BGR",
    "class_colours_bgr",
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


def prediction_panel(image: np.ndarray, mask: np.ndarray, prob: np.ndarray,
                     colours: np.ndarray | None = None) -> np.ndarray:
    """Image (grey) | truth | prediction, side by side, as one uint8 array: grey 0/255 masks with the prediction
    thresholded at 0.5 (one channel), or (several classes, ``prob`` [H, W, K]) BGR with each class in its colour
    (``colours`` RGB [K, 3]; default data.labels.palette) and the prediction's argmax."""
    import cv2

    gray = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if gray.ndim == 3:
        gray = cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_RGB2GRAY)
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    if prob.ndim == 3:
        k = prob.shape[-1]
        lut = class_colours_bgr(k, colours)
        return np.concatenate([cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), lut[np.asarray(mask).astype(np.int64)],
                               lut[np.argmax(prob, axis=-1)]], axis=1)
    return np.concatenate(
        [gray, (np.asarray(mask) > 0).astype(np.uint8) * 255, (prob > 0.5).astype(np.uint8) * 255],
        axis=1,
    )


def class_colours_bgr(k: int, colours: np.ndarray | None = None) -> np.ndarray:
    """uint8 [K, 3] BGR colours of K classes: ``colours`` (RGB, the class map's) or data.labels.palette."""
    rgb = palette(k) if colours is None else np.asarray(colours, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, ::-1])


def overlay_image(raw: np.ndarray, mask: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
    """The image in colour with the predicted mask tinted and outlined (BGR uint8): red for a binary mask; with
    ``colours`` (RGB [K, 3]) each class of ``mask`` (class indices) in its own colour."""
    import cv2

    base = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR) if raw.ndim == 2 else raw.copy()
    tinted = base.astype(np.float32)
    bgr = [np.array(OVERLAY_COLOR_BGR, np.float32)] if colours is None else class_colours_bgr(len(colours), colours)
    classes = [(mask > 0, bgr[0])] if colours is None else [(mask == k, bgr[k]) for k in range(1, len(colours))]
    for on, colour in classes:
        tinted[on] = (1 - OVERLAY_ALPHA) * tinted[on] + OVERLAY_ALPHA * np.asarray(colour, np.float32)
    out = tinted.astype(np.uint8)
    for on, colour in classes:
        contours, _ = cv2.findContours(on.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), max(1, round(max(raw.shape[:2]) / 400)))
    return out


def save_predictions(folder: Path, images: np.ndarray, masks: np.ndarray, prob: np.ndarray, stems: list[str],
                     colours: np.ndarray | None = None) -> None:
    """One PNG per image, ``<stem>.png``: image | truth | prediction, side by side (:func:`prediction_panel`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for img, mask, p, stem in zip(images, masks, prob, stems, strict=False):
        write_png(folder / f"{stem}.png", prediction_panel(img, mask, p, colours))
