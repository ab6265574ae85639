"""Prediction panels written into the study folder (trial validation and final test predictions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_predictions"]


def save_predictions(folder: Path, images: np.ndarray, masks: np.ndarray, prob: np.ndarray, stems: list[str]) -> None:
    """One PNG per image: image | truth | prediction (thresholded at 0.5), side by side."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for img, mask, p, stem in zip(images, masks, prob, stems, strict=False):
        gray = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
        if gray.ndim == 3:
            gray = cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_RGB2GRAY)
        panel = np.concatenate(
            [gray.astype(np.uint8), (np.asarray(mask) > 0).astype(np.uint8) * 255, (p > 0.5).astype(np.uint8) * 255],
            axis=1,
        )
        tmp = folder / f".{stem}.tmp.png"
        cv2.imwrite(str(tmp), panel)
        tmp.replace(folder / f"{stem}.png")
