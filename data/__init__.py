"""The input pipeline: discover and validate datasets, decoded cache, paired augmentation, tf.data.

Never imports ``models`` or ``search``. TensorFlow is imported only by the pipeline functions
(``train_dataset``, ``eval_dataset``), loaded lazily so that dataset tools stay fast.
"""

from __future__ import annotations

from typing import Any

from data.augment import Augmenter, AugmentSpec
from data.cache import CachedDataset, SplitArrays, cache_key, load_cached, open_cache
from data.dataset import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DatasetIndex,
    LoadSettings,
    MaskRule,
    Pair,
    ReadPlan,
    decode_raw,
    discover,
    list_names,
    prepare_image,
    read_bytes,
    read_pair,
    resize_image,
    resize_mask,
    to_channels,
    value_bits,
)
from data.errors import DatasetError
from data.fingerprint import CheckReport, check_dataset, content_hash, foreground_errors
from data.labels import ClassMap, class_map_from, palette, resize_labels, resolve_class_map
from data.synthetic import make_phantom, synthetic_arrays, write_synthetic_dataset
from data.volumes import Manifest, ManifestRow, find_volume_pairs, prepare_volumes

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "AugmentSpec",
    "Augmenter",
    "CachedDataset",
    "CheckReport",
    "ClassMap",
    "DatasetError",
    "DatasetIndex",
    "LoadSettings",
    "Manifest",
    "ManifestRow",
    "MaskRule",
    "Pair",
    "ReadPlan",
    "SplitArrays",
    "cache_key",
    "check_dataset",
    "class_map_from",
    "content_hash",
    "decode_raw",
    "discover",
    "eval_dataset",
    "find_volume_pairs",
    "foreground_errors",
    "list_names",
    "load_cached",
    "make_phantom",
    "open_cache",
    "palette",
    "prepare_image",
    "prepare_volumes",
    "read_bytes",
    "read_pair",
    "resize_image",
    "resize_labels",
    "resize_mask",
    "resolve_class_map",
    "synthetic_arrays",
    "to_channels",
    "train_dataset",
    "value_bits",
    "write_synthetic_dataset",
]

_LAZY = {"train_dataset", "eval_dataset"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")
