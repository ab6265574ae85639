"""``predict``: a study's final model (or one trial's weights) on a folder of images of any size and format.

Each image is converted as the study's training data were (16-bit images scaled by the study's recorded bit
depth, data_fingerprint.json), resized to the model's input size, predicted, and its probability map resized back
to the image's *original* size (bilinear, pixel-centre aligned like the resize down) before thresholding, so masks
line up with the input pixel for pixel.
Masks are lossless 0/255 PNGs named like the images; ``--overlay`` adds ``<stem>_overlay.png``. A study of several
classes writes index masks instead (each pixel its class's value in the class map: 0..K-1 for colour maps, the
map's grey levels for index maps, 16-bit when they need it), a colour mask ``<stem>_colour.png`` (the class map's
colours, or the palette of index maps) and overlays with each class in its colour; a pixel's class is the argmax of
the probabilities resized back to the image's size.
Every image is decoded (checked) before anything is written, so a corrupt file stops the command with
nothing written; each output file is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data import (
    IMAGE_EXTENSIONS,
    ClassMap,
    DatasetError,
    decode_raw,
    list_names,
    prepare_image,
    read_bytes,
    value_bits,
)
from search.config.specs import head_channels
from search.errors import ConfigError
from search.results import StudyDir, read_json, read_study_config
from search.results.images import overlay_image, write_png
from search.results.io import ensure_writable
from search.results.layout import BEST_WEIGHTS, MODEL_KERAS
from search.study.final import model_source
from search.trial.final import load_source
from search.vocabulary import TrialState

__all__ = ["LoadedModel", "PredictResult", "find_images", "load_model", "predict_folder", "predict_probability"]

logger = logging.getLogger(__name__)

OVERLAY_SUFFIX = "_overlay"
COLOUR_SUFFIX = "_colour"


@dataclass
class LoadedModel:
    model: Any
    image_size: int
    channels: int
    source: str
    image_bits: int | None = None  # the study's image bit depth (data_fingerprint.json); None: unknown
    classes: ClassMap | None = None  # the study's class map (study.yaml data.classes); None: binary


@dataclass
class PredictResult:
    masks: list[Path]
    overlays: list[Path]
    source: str
    colour_masks: list[Path] = field(default_factory=list)  # several classes: <stem>_colour.png


# --------------------------------------------------------------------------------------------- model


def load_model(study: StudyDir, *, trial: int | None = None) -> LoadedModel:
    """The final model (``final/model.keras``) or trial ``trial``'s best weights in a freshly built model.

    Raises:
        ConfigError: no final model / no such trial / no weights, or the file cannot be loaded.
    """
    import keras

    import models  # noqa: F401 - registers the "unet_search" losses and metrics for deserialisation
    import models.registry  # noqa: F401 - and every model family's custom layers (Swin-UNet's windows, …)

    if trial is None:
        path = study.final_dir / MODEL_KERAS
        if not path.is_file():
            raise ConfigError(
                f"study {study.name!r} has no final model; run `python -m search final {study.name}` first "
                f"(or pass --trial N to use a trial's weights)"
            )
        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as e:  # noqa: BLE001 - any load failure is one line for the user
            raise ConfigError(f"cannot load {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        source = str(path)
    else:
        model, source = _trial_model(study, trial)
    shape = tuple(model.input_shape)
    size, channels = shape[1], shape[3]
    cfg = read_study_config(study)
    if size is None or channels is None:
        size, channels = size or cfg.data.image_size, channels or cfg.data.channels
    classes = _checked_classes(cfg.data.class_map(), int(model.output_shape[-1]), source)
    return LoadedModel(model=model, image_size=int(size), channels=int(channels), source=source,
                       image_bits=_study_image_bits(study), classes=classes)


def _checked_classes(classes: ClassMap | None, outputs: int, source: str) -> ClassMap | None:
    """The study's class map, if the model's outputs agree with it (1 channel: binary; K: K classes)."""
    expected = head_channels(classes.num_classes if classes is not None else 2)
    if outputs != expected:
        described = "binary masks (1 output channel)" if expected == 1 else (
            f"a class map of {expected} classes ({', '.join(classes.names) if classes else ''})")
        raise ConfigError(f"{source}: the model has {outputs} output channels but the study's data.classes "
                          f"(study.yaml) is {described}; expected a model trained on this study's classes")
    return classes if expected > 1 else None


def _study_image_bits(study: StudyDir) -> int | None:
    """The bit depth the study's images were read with (16-bit data are scaled by it), if recorded."""
    try:
        bits = read_json(study.fingerprint_json).get("image_bits")
    except (OSError, ValueError):
        return None
    return int(bits) if isinstance(bits, int) else None


def _trial_model(study: StudyDir, number: int) -> tuple[Any, str]:
    """A trial's model: its best weights, or (k-fold) the mean of its fold models, as the final stage builds it."""
    rec = study.read_trial(number)
    if rec is None:
        known = [r.number for r in study.trials()]
        raise ConfigError(f"study {study.name!r} has no trial {number}; trials: {list_names([str(n) for n in known])}")
    cfg = read_study_config(study)
    source = model_source(study, cfg, rec, label=f"trial {number}")
    if rec.status != TrialState.COMPLETE or source is None:
        where = study.trial_dir(number) / (f"fold*/{BEST_WEIGHTS}" if cfg.study.evaluation == "kfold" else BEST_WEIGHTS)
        raise ConfigError(
            f"trial {number} of study {study.name!r} is {rec.status} and has no saved weights ({where}); "
            f"choose a completed trial"
        )
    try:
        model = load_source(source)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot load {source.weights[0]} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if len(source.weights) == 1:
        return model, source.weights[0]
    return model, f"the ensemble of trial {number}'s {len(source.weights)} fold models ({study.trial_dir(number)}/fold*)"


# --------------------------------------------------------------------------------------------- images


def find_images(folder: Path) -> list[Path]:
    """Image files (png/jpg/bmp/tif) of ``folder``, sorted, one per stem.

    Raises:
        DatasetError: the folder is missing, unreadable, holds no image, or two images share a stem.
    """
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist or is not a folder")
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"image folder {folder} cannot be read ({e.strerror})") from None
    images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    if not images:
        raise DatasetError(
            f"image folder {folder} holds no images; expected {'/'.join(IMAGE_EXTENSIONS)} files"
        )
    stems: dict[str, list[str]] = {}
    for p in images:
        stems.setdefault(p.stem, []).append(p.name)
    clashes = [", ".join(names) for names in stems.values() if len(names) > 1]
    if clashes:
        raise DatasetError(f"image folder {folder}: several images share a stem ({list_names(clashes)}); "
                           "masks are named by stem, so keep one file per stem")
    return images


def _decode(path: Path) -> np.ndarray:
    return decode_raw(read_bytes(path, what="image"), path, what="image")


def predict_probability(loaded: LoadedModel, raws: list[np.ndarray]) -> list[np.ndarray]:
    """Probability maps at each raw image's own size (uint8/uint16 grey [H, W] or BGR [H, W, 3] in)."""
    batch = np.stack([model_input(raw, loaded) for raw in raws])
    prob = np.asarray(loaded.model(batch, training=False), dtype=np.float32)
    if prob.shape[-1] == 1:
        prob = prob[..., 0]
    out = []
    for raw, p in zip(raws, prob, strict=True):
        h, w = raw.shape[:2]
        out.append(p if (h, w) == p.shape[:2] else _resize_channels(p, w, h))
    return out


def _resize_channels(p: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bilinear resize of [H, W] or [H, W, K] probabilities (OpenCV takes at most 4 channels at once)."""
    if p.ndim == 2 or p.shape[-1] <= 4:
        out = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
        return out if out.ndim == p.ndim else out[:, :, None]
    return np.stack([cv2.resize(np.ascontiguousarray(p[..., k]), (w, h), interpolation=cv2.INTER_LINEAR)
                     for k in range(p.shape[-1])], axis=-1)


def model_input(raw: np.ndarray, loaded: LoadedModel) -> np.ndarray:
    """One decoded image as the model's training data were read (data.prepare_image): 8-bit values as they are,
    16-bit ones scaled onto 0..255 by the study's bit depth (as full 16-bit when the study's images were 8-bit)."""
    bits = image_bits(raw, loaded)
    channels = loaded.channels if loaded.channels in (1, 3) else 1
    image = prepare_image(raw, channels=channels, size=loaded.image_size, image_bits=bits)
    return image if channels == loaded.channels else np.repeat(image, loaded.channels, axis=2)


def image_bits(raw: np.ndarray, loaded: LoadedModel) -> int:
    """The bit depth a 16-bit ``raw`` is scaled by: the study's, for every image of a 16-bit study (as in
    training, a dark slice too), at least the image's own significant bits so no value lands above 255; for an
    8-bit study (or an unknown one), 8 when the values fit in 8 bits, else 16."""
    if raw.dtype == np.uint8:
        return 8
    own = value_bits(raw)
    if loaded.image_bits is not None and loaded.image_bits > 8:
        return max(loaded.image_bits, own)
    return 8 if own <= 8 else 16


def _display(raw: np.ndarray, loaded: LoadedModel) -> np.ndarray:
    """An 8-bit view of a decoded image for the overlay (16-bit ones scaled like the model input)."""
    bits = image_bits(raw, loaded)
    if bits <= 8:
        return raw.astype(np.uint8)
    return np.clip(np.rint(raw.astype(np.float32) * (255.0 / (2**bits - 1))), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- command


def predict_folder(
    study: StudyDir,
    *,
    images: Path | str,
    out: Path | str,
    threshold: float = 0.5,
    overlay: bool = False,
    trial: int | None = None,
    batch_size: int = 4,
) -> PredictResult:
    """Write one 0/255 PNG mask per image of ``images`` into ``out`` (and overlays when asked); several classes:
    an index mask and a colour mask per image (module docstring).

    Raises:
        ConfigError: bad threshold, no final model or trial weights, output folder not writable.
        DatasetError: the image folder is missing/empty or an image cannot be decoded.
    """
    images, out = Path(images), Path(out)
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold: expected a probability between 0 and 1, got {threshold}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size: expected ≥ 1, got {batch_size}")
    files = find_images(images)
    if out.resolve() == images.resolve():
        raise ConfigError(f"--out {out} is the image folder; choose another folder so no image is overwritten")
    for p in files:  # decode everything first: a corrupt file must stop us before anything is written
        _decode(p)
    loaded = load_model(study, trial=trial)
    _check_writable(out)
    masks: list[Path] = []
    overlays: list[Path] = []
    colour_masks: list[Path] = []
    for chunk in _chunks(files, batch_size):
        raws = [_decode(p) for p in chunk]
        for p, raw, prob in zip(chunk, raws, predict_probability(loaded, raws), strict=True):
            written = _write_masks(out, p.stem, prob, loaded.classes, threshold)
            masks.append(written[0])
            colour_masks.extend(written[1:])
            if overlay:
                labels = np.argmax(prob, axis=-1) if loaded.classes is not None else (prob > threshold)
                colours = loaded.classes.colours() if loaded.classes is not None else None
                overlays.append(_write_png(out / f"{p.stem}{OVERLAY_SUFFIX}.png",
                                           overlay_image(_display(raw, loaded), labels.astype(np.uint8), colours)))
    logger.info("predicted %d images of %s with %s into %s", len(masks), images, loaded.source, out)
    return PredictResult(masks=masks, overlays=overlays, source=loaded.source, colour_masks=colour_masks)


def _write_masks(out: Path, stem: str, prob: np.ndarray, classes: ClassMap | None, threshold: float) -> list[Path]:
    """A 0/255 mask (binary), or an index mask and a colour mask (several classes)."""
    if classes is None:
        return [_write_png(out / f"{stem}.png", (prob > threshold).astype(np.uint8) * 255)]  # as models/metrics.py
    labels = np.argmax(prob, axis=-1)
    values = np.arange(classes.num_classes) if classes.kind == "colour" else np.array(classes.values)
    index = values[labels].astype(np.uint16 if values.max() > 255 else np.uint8)
    colour = np.ascontiguousarray(classes.colours()[labels][:, :, ::-1])  # RGB → BGR for OpenCV
    return [_write_png(out / f"{stem}.png", index), _write_png(out / f"{stem}{COLOUR_SUFFIX}.png", colour)]


def _chunks(items: list[Path], n: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _check_writable(folder: Path) -> None:
    try:
        ensure_writable(folder)
    except OSError as e:
        raise ConfigError(f"output folder {folder} is not writable ({e.strerror or e})") from None


def _write_png(path: Path, array: np.ndarray) -> Path:
    """:func:`search.results.images.write_png`, with a failure as one line for the user."""
    try:
        return write_png(path, array)
    except ValueError as e:  # pragma: no cover - OpenCV always encodes uint8 arrays
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror or e})") from None
