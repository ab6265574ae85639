"""The one place that turns hyperparameter values into specs (model, augmentation, training).

The strategy code and the trial code both call :func:`specs_from_values`; nothing in ``models``
or ``data`` knows a tuner exists.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from data import AugmentSpec
from models import UNetSpec, estimate_training_memory_bytes
from search.config import AUGMENTATIONS, HYPERPARAMETER_DEFAULTS, VARIANT, Config, family_options
from search.errors import TrialFailed

__all__ = ["TrainSpec", "TrialSpecs", "check_memory", "derived_seed", "first_rung_size", "specs_from_values",
           "trial_seed"]


@dataclass(frozen=True)
class TrainSpec:
    """How one model is trained (everything but the architecture and the augmentation)."""

    learning_rate: float = 1e-4
    loss: str = "bce_dice"
    clipvalue: float = 0.5
    batch_size: int = 2
    max_epochs: int = 100
    patience: int = 10
    min_epochs: int = 1
    reducer_factor: float = 0.3
    reducer_patience: int = 4
    min_lr: float = 1e-7
    steps_per_epoch: int | None = None  # None: one pass over the training split
    warmup_samples: int = 0  # early stopping waits for this many training samples
    collapse_epochs: int = 5  # 0: never stop a collapsed model
    seed: int = 0
    jit_compile: bool = False
    mixed_precision: bool = False
    first_rung_size: int | None = None  # the warm-up trains at this image side (search/trial/training.py, FirstRung)


    def warmup_epochs(self, n_train: int) -> int:
        """Epochs that hold ``warmup_samples`` (an epoch is ``steps_per_epoch`` batches or one pass)."""
        per_epoch = self.steps_per_epoch * self.batch_size if self.steps_per_epoch is not None else n_train
        return max(1, -(-self.warmup_samples // max(1, per_epoch)))


@dataclass(frozen=True)
class TrialSpecs:
    model: UNetSpec
    augment: AugmentSpec
    train: TrainSpec


def specs_from_values(cfg: Config, values: dict[str, Any], *, seed: int, max_epochs: int | None = None) -> TrialSpecs:
    """Translate one trial's values into validated specs.

    Raises:
        TrialFailed: (infeasible=True) when the values cannot make a valid model for this data.
    """
    d, t = cfg.data, cfg.train
    if not isinstance(d.channels, int):  # the runner resolves "auto" from the data first (study_data.resolved_config)
        raise ValueError(f"data.channels {d.channels!r} is not resolved yet; expected 1 or 3 from the prepared data")
    v = {**HYPERPARAMETER_DEFAULTS, **values}  # a family's values leave out the shared fields it ignores
    variant = str(v[VARIANT])
    model = UNetSpec(
        image_size=d.image_size,
        channels=d.channels,
        num_classes=head_channels(d.num_classes),
        base_filters=int(v["base_filters"]),
        base_kernels=int(v["base_kernels"]),
        num_layers=int(v["num_layers"]),
        dilation=int(v["dilation"]),
        dropout_rate=float(v["dropout_rate"]),
        batch_norm=bool(v["batch_norm"]),
        standardize_input=bool(v["standardize_input"]),
        activation=t.activation,
        rescale_input=t.rescale_input,
        variant=variant,
        options=family_options(v, variant),
    )
    try:
        model.validate()
    except ValueError as e:
        raise TrialFailed(f"infeasible: {e}", infeasible=True) from None
    augment = AugmentSpec(**{name: float(v[f"augment.{name}"]) for name in AUGMENTATIONS})
    train = TrainSpec(
        learning_rate=float(v["learning_rate"]),
        loss=str(v["loss"]),
        clipvalue=t.clipvalue,
        batch_size=d.batch_size,
        max_epochs=int(max_epochs if max_epochs is not None else cfg.rule("max_epochs")),
        patience=cfg.rule("patience"),
        min_epochs=t.min_epochs,
        reducer_factor=t.reducer.factor,
        reducer_patience=t.reducer.patience,
        min_lr=t.reducer.min_lr,
        steps_per_epoch=cfg.steps_per_epoch,
        warmup_samples=cfg.rule("warmup_samples"),
        collapse_epochs=t.collapse_epochs,
        seed=seed,
        jit_compile=t.jit_compile,
        mixed_precision=t.mixed_precision,
        first_rung_size=first_rung_size(model, cfg.first_rung_size),
    )
    return TrialSpecs(model=model, augment=augment, train=train)


def head_channels(num_classes: int) -> int:
    """The model's output channels for K classes: one sigmoid channel for binary masks, else K (softmax)."""
    return 1 if num_classes <= 2 else num_classes


def first_rung_size(model: UNetSpec, wanted: int | None) -> int | None:
    """The smallest image side from ``wanted`` up that ``model`` can be built at (its depth needs a side
    divisible by 2**(num_layers - 1) and a large enough bottleneck); None when only its own size fits."""
    if wanted is None:
        return None
    step = 2 ** (model.num_layers - 1)
    for size in range(-(-wanted // step) * step, model.image_size, step):
        try:
            dataclasses.replace(model, image_size=size).validate()
        except ValueError:
            continue
        return size
    return None


def check_memory(specs: TrialSpecs, *, budget_bytes: int | None) -> None:
    """Reject a trial whose estimated training memory exceeds the device budget (before building)."""
    if budget_bytes is None:
        return
    need = estimate_training_memory_bytes(specs.model, batch_size=specs.train.batch_size)
    if need > budget_bytes:
        raise TrialFailed(
            f"infeasible: estimated training memory {need / 2**30:.1f} GiB exceeds the budget "
            f"{budget_bytes / 2**30:.1f} GiB ({specs.model.variant}, base_filters={specs.model.base_filters}, "
            f"num_layers={specs.model.num_layers}, batch_size={specs.train.batch_size})",
            infeasible=True,
        )


def trial_seed(study_seed: int, number: int) -> int:
    """Seeds are set once per study and derived per trial."""
    return (int(study_seed) * 1_000_003 + int(number)) % (2**31 - 1)


def derived_seed(seed: int, purpose: str, *keys: int) -> int:
    """A seed for one use of ``seed`` (e.g. ``"fold", f``), hashed from all of them by ``SeedSequence``.

    Not ``seed + k``: :func:`trial_seed` gives consecutive trials consecutive seeds, so trial n's
    ``seed + 1`` would be trial n+1's seed and the two runs would share their random streams.
    """
    words = [int(v) % 2**64 for v in (seed, zlib.crc32(purpose.encode()), *keys)]
    state = np.random.SeedSequence(np.asarray(words, dtype=np.uint64).view(np.uint32)).generate_state(1)
    return int(state[0]) % (2**31 - 1)
