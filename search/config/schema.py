"""The study configuration's schema: frozen dataclasses per section, one search-space entry, defaults.

Loading, overrides and validation are in :mod:`search.config.loading` and :mod:`search.config.validation`;
``search.config`` lists the public names of all three.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from data.augment import AUGMENTATIONS
from data.labels import ClassMap, class_map_from
from models import ACTIVATIONS as ACTIVATIONS
from models import LOSS_NAMES as LOSS_NAMES
from models.families import FAMILIES, SHARED_FIELDS

SCHEMA_VERSION = 1

# Names a config may use. Losses, activations and augmentations are the registries of models/ and
# data/augment.py (re-exported here); the strategies and pruners are what the engines dispatch on
# (search/engines/kt_engine.py, optuna_engine/sampling.py; tests/config_tests/test_config.py ties them together).
KT_STRATEGIES = ("random", "bayesian", "hyperband")
OPTUNA_STRATEGIES = ("tpe", "cmaes", "gp", "random-optuna")
STRATEGIES = KT_STRATEGIES + OPTUNA_STRATEGIES
PRUNERS = ("auto", "none", "median", "asha", "hyperband")

FIRST_RUNG_FROM = 128  # train.first_rung_size auto: a first rung at half the size from this image side up
AUTO = "auto"  # a value the study works out itself (num_layers.max from the image size, train rules from the budget)

# train.* rules left at "auto" come from the time budget (search/study/budget.py); without one, the reference
# tool's scale: an epoch of 800 samples (400 steps x batch 2), a 4000-sample warm-up, patience 10, 100 epochs.
NO_BUDGET_RULES: dict[str, Any] = {"samples_per_epoch": 800, "warmup_samples": 4000, "patience": 10, "max_epochs": 100}

VARIANT = "variant"  # the hyperparameter that chooses the model family (models/families/)

# Each family's own hyperparameters, ``<family>.<option>``, at their defaults (the reference tool's settings).
FAMILY_OPTION_DEFAULTS: dict[str, Any] = {
    f"{f.name}.{option}": value for f in FAMILIES.values() for option, value in f.options.items()
}

# Every hyperparameter the trial understands, with its value when the search space leaves it out.
# The defaults are the reference experiment (DESIGN §7, §9): all nine augmentations at strength 1.
HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    VARIANT: "unet",
    "base_filters": 16,
    "base_kernels": 9,
    "num_layers": 8,
    "dilation": 3,
    "dropout_rate": 0.05,
    "learning_rate": 1e-4,
    "batch_norm": False,
    "standardize_input": False,
    "loss": "bce_dice",
    **{f"augment.{name}": 1.0 for name in AUGMENTATIONS},
    **FAMILY_OPTION_DEFAULTS,
}
INT_HYPERPARAMETERS = ("base_filters", "base_kernels", "num_layers", "dilation") + tuple(
    k for k, v in FAMILY_OPTION_DEFAULTS.items() if isinstance(v, int) and not isinstance(v, bool)
)
BOOL_HYPERPARAMETERS = ("batch_norm", "standardize_input") + tuple(
    k for k, v in FAMILY_OPTION_DEFAULTS.items() if isinstance(v, bool)
)
STR_HYPERPARAMETERS = ("loss", VARIANT) + tuple(k for k, v in FAMILY_OPTION_DEFAULTS.items() if isinstance(v, str))


def option_family(name: str) -> str | None:
    """The family whose option ``name`` is (``swin_unet.window_size`` → ``swin_unet``); None for the others."""
    prefix = name.split(".", 1)[0]
    return prefix if "." in name and prefix in FAMILIES else None


def family_options(values: dict[str, Any], variant: str) -> dict[str, Any]:
    """``variant``'s options among ``values``, by option name (``swin_unet.window_size`` → ``window_size``)."""
    return {k.split(".", 1)[1]: v for k, v in values.items() if option_family(k) == variant}


def is_active(name: str, variant: str) -> bool:
    """Whether hyperparameter ``name`` changes a model of family ``variant``: its own options and the shared fields
    it reads are; other families' options and the shared fields it ignores are not (so they are not sampled)."""
    owner = option_family(name)
    if owner is not None:
        return owner == variant
    if name in SHARED_FIELDS:
        return name in FAMILIES[variant].uses
    return True


def family_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the hyperparameters its family (``values["variant"]``, unet when absent) does not use."""
    variant = str(values.get(VARIANT, HYPERPARAMETER_DEFAULTS[VARIANT]))
    if variant not in FAMILIES:
        return dict(values)
    return {k: v for k, v in values.items() if is_active(k, variant)}


@dataclass(frozen=True)
class ReducerConfig:
    factor: float = 0.3
    patience: int = 4
    min_lr: float = 1e-7


@dataclass(frozen=True)
class StudyConfig:
    name: str = "alcapa"
    strategy: Literal["random", "bayesian", "hyperband", "tpe", "cmaes", "gp", "random-optuna"] = "tpe"
    pruner: Literal["auto", "none", "median", "asha", "hyperband"] = "auto"  # auto: asha (Optuna), none (KT)
    max_trials: int = 60
    timeout_s: float | None = None
    seed: int = 137
    storage: str | None = None
    baselines: bool = True
    max_consecutive_failures: int = 5
    workers: int = 1
    recycle_after: int = 10
    # The reduction factor of successive halving: Keras Tuner's Hyperband and Optuna's ASHA and
    # Hyperband pruners alike (named before ASHA was added; kept so that saved studies load).
    hyperband_factor: int = 3
    evaluation: Literal["holdout", "kfold"] = "holdout"  # kfold: patient-grouped folds of train+valid
    folds: int = 5  # kfold: number of folds
    groups: str = "auto"  # kfold grouping: auto | contiguous | none | a regex with one (group) = patient id
    fold_prune_p: float = 0.05  # kfold: stop a trial worse than the best on the same images (p < this; 0 = never)
    heartbeat_s: int | None = None  # Optuna RDB heartbeat interval (None: UNET_SEARCH_HEARTBEAT_S or 30 s)
    prune_warmup_epochs: int | None = None  # pruner warm-up; None: Config.prune_warmup (the warm-up's epochs)


@dataclass(frozen=True)
class DataConfig:
    root: str = "dataset/ALCAPA"
    image_size: int = 512
    channels: Literal[1, 3, "auto"] = "auto"  # auto: 1 when every image is greyscale, else 3 (study.yaml: resolved)
    batch_size: int = 2
    mask_threshold: int | None = None  # None: the dataset's mask rule (data/dataset.py mask_rule); else >= it on 0..255
    cache_dir: str | None = None
    num_val_predictions: int = 4
    # Multi-class masks (data/labels.py): a mapping of class name → grey level or [R, G, B], background first;
    # auto: the dataset's labels.json when it has one, else binary; binary: foreground/background whatever
    # labels.json says. study.yaml records the map a study was run with.
    classes: Literal["auto", "binary"] | dict[str, Any] = "auto"

    def class_map(self) -> ClassMap | None:
        """The class map when ``classes`` is a mapping (as study.yaml records it), else None (binary, or ``auto``
        not yet resolved from the dataset)."""
        if isinstance(self.classes, dict):
            return class_map_from(self.classes, source="data.classes")
        return None

    @property
    def num_classes(self) -> int:
        """K, the background included: 2 for binary masks (and ``auto`` before the data is read)."""
        k = self.class_map()
        return 2 if k is None else k.num_classes


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int | Literal["auto"] = "auto"  # auto: from the budget (search/study/budget.py), else 100
    patience: int | Literal["auto"] = "auto"  # epochs; auto: twice the warm-up, else 10
    min_epochs: int = 1
    reducer: ReducerConfig = field(default_factory=ReducerConfig)
    clipvalue: float = 0.5
    samples_per_epoch: int | None | Literal["auto"] = "auto"  # auto: from the budget, else 800; null = one pass
    steps_per_epoch: int | None = None  # overrides samples_per_epoch
    warmup_samples: int | Literal["auto"] = "auto"  # no judgement before this; auto: from the budget, else 4000
    # The first rung's image side: the warm-up (up to a trial's first judgement) trains and validates at
    # this size, then the trial continues at data.image_size with its weights. auto: half of
    # data.image_size from 128 up; null (the default): off (search/trial/training.py, FirstRung). Off by
    # default: in B12 it judged no more configurations in 600 s (a trial's start-up dominates, and the
    # deep configurations do not fit the reduced size) and its final dice were not better.
    first_rung_size: int | None | Literal["auto"] = None
    collapse_epochs: int = 5  # all-background + flat loss this long = collapsed (0 = never)
    rescale_input: bool = True
    activation: str = "relu"
    mixed_precision: bool = False
    jit_compile: bool = False
    checkpoint_every_epoch: bool = True
    tensorboard: bool = False
    deterministic: bool = True


@dataclass(frozen=True)
class FinalConfig:
    retrain: bool = True
    train_on_valid: bool = False
    num_predictions: int = 6
    # Re-evaluation before the final pick (search/study/reevaluation.py): the k best trials and the baseline
    # trained again with `seeds` fresh seeds each, picked by the mean or the lower bound (mean - se)
    # of the fresh scores. 0 = off: the search's best is the final configuration.
    reevaluate_top_k: int = 0
    seeds: int = 2
    select: Literal["mean", "lcb"] = "mean"


@dataclass(frozen=True)
class ParamDef:
    """One search-space entry. ``type`` is choice | int | float | pow2 | fixed."""

    name: str
    type: Literal["choice", "int", "float", "pow2", "fixed"]
    values: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False
    value: Any = None

    @property
    def is_fixed(self) -> bool:
        return self.type == "fixed"

    def choices(self) -> tuple[Any, ...]:
        """Discrete values of a choice or pow2 entry (pow2 becomes a choice of powers of two)."""
        if self.type == "choice":
            return self.values
        if self.type == "pow2":
            assert self.min is not None and self.max is not None
            out, v = [], int(self.min)
            while v <= self.max:
                out.append(v)
                v *= 2
            return tuple(out)
        raise ValueError(f"{self.name} is not discrete")

    def bounds_values(self) -> tuple[Any, ...]:
        """The extreme values this entry can produce (for feasibility checks)."""
        if self.type == "fixed":
            return (self.value,)
        if self.type in ("choice", "pow2"):
            return self.choices()
        return (self.min, self.max)

    def contains(self, v: Any) -> bool:
        if self.type == "fixed":
            return bool(v == self.value)
        if self.type in ("choice", "pow2"):
            return v in self.choices()
        assert self.min is not None and self.max is not None
        return bool(self.min <= v <= self.max)

    def snap(self, v: Any) -> Any:
        """The allowed value nearest to ``v`` (used to place the baseline inside the space)."""
        if self.type == "fixed":
            return self.value
        if self.type in ("choice", "pow2"):
            opts = self.choices()
            if v in opts:
                return v
            if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in opts) and isinstance(
                v, (int, float)
            ):
                return min(opts, key=lambda o: (abs(math.log(max(o, 1e-12)) - math.log(max(v, 1e-12))), o))
            return opts[0]
        assert self.min is not None and self.max is not None
        clipped = min(max(v, self.min), self.max)
        return int(round(clipped)) if self.type == "int" else float(clipped)

    def to_dict(self) -> dict[str, Any]:
        if self.type == "fixed":
            return {"value": self.value}
        if self.type == "choice":
            return {"type": "choice", "values": list(self.values)}
        d: dict[str, Any] = {"type": self.type, "min": self.min, "max": self.max}
        if self.step is not None:
            d["step"] = self.step
        if self.log:
            d["log"] = True
        return d


@dataclass(frozen=True)
class Config:
    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    search_space: dict[str, ParamDef] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for name in ("study", "data", "train", "final"):
            out[name] = dataclasses.asdict(getattr(self, name))
        out["search_space"] = {k: p.to_dict() for k, p in self.search_space.items()}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)

    def fixed_values(self) -> dict[str, Any]:
        """The values of a trial that samples nothing: defaults overridden by fixed entries, for the family they
        fix (:func:`family_values`: other families' options and the shared fields it ignores left out)."""
        return family_values(self.unsampled_values())

    def unsampled_values(self) -> dict[str, Any]:
        """Every hyperparameter's value when not sampled, every family's options included: defaults overridden
        by fixed entries."""
        values = dict(HYPERPARAMETER_DEFAULTS)
        for name, p in self.search_space.items():
            if p.is_fixed:
                values[name] = p.value
        return values

    def sampled_params(self) -> dict[str, ParamDef]:
        return {k: p for k, p in self.search_space.items() if not p.is_fixed}

    @property
    def pruner(self) -> str:
        """The pruner in force: ``auto`` means asha for Optuna strategies and none for Keras Tuner."""
        if self.study.pruner == "auto":
            return "asha" if self.engine == "optuna" else "none"
        return self.study.pruner

    @property
    def first_rung_size(self) -> int | None:
        """The first rung's image side (``train.first_rung_size``, auto resolved); None: no reduced rung."""
        value, full = self.train.first_rung_size, self.data.image_size
        if value == AUTO:
            return full // 2 if full >= FIRST_RUNG_FROM else None
        return value if isinstance(value, int) and value < full else None

    def rule(self, key: str) -> Any:
        """A ``train`` rule with ``auto`` read as :data:`NO_BUDGET_RULES` (a run resolves it from its budget first)."""
        value = getattr(self.train, key)
        return NO_BUDGET_RULES[key] if value == AUTO else value

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch; None = one pass over the training split."""
        t = self.train
        if t.steps_per_epoch is not None:
            return t.steps_per_epoch
        samples = self.rule("samples_per_epoch")
        if samples is None:
            return None
        return max(1, math.ceil(samples / self.data.batch_size))

    def warmup_epochs(self, n_train: int | None = None) -> int:
        """Epochs in ``train.warmup_samples`` (a one-pass epoch has ``n_train`` samples; unknown: 1 epoch)."""
        steps = self.steps_per_epoch
        per_epoch = steps * self.data.batch_size if steps is not None else n_train
        if not per_epoch:
            return 1
        return max(1, math.ceil(self.rule("warmup_samples") / per_epoch))

    @property
    def prune_warmup(self) -> int:
        """Epochs before a pruner may stop a trial: study.prune_warmup_epochs, else the epochs in the training
        warm-up; with one pass per epoch (whose size the pruner cannot know) max(3, max_epochs // 10). The
        trial itself is never judged before its training warm-up either way (search/trial/training.py)."""
        if self.study.prune_warmup_epochs is not None:
            return self.study.prune_warmup_epochs
        if self.steps_per_epoch is None:
            return max(3, self.rule("max_epochs") // 10)
        return min(self.warmup_epochs(), self.rule("max_epochs"))

    @property
    def engine(self) -> Literal["keras_tuner", "optuna"]:
        return "keras_tuner" if self.study.strategy in KT_STRATEGIES else "optuna"


def best_config(cfg: Config, values: dict[str, Any]) -> Config:
    """A re-runnable config whose every hyperparameter is fixed to ``values`` (one trial, no baseline)."""
    space = {k: ParamDef(name=k, type="fixed", value=v) for k, v in values.items()}
    study = dataclasses.replace(
        cfg.study, name=f"{cfg.study.name}-best", max_trials=1, baselines=False, storage=None, timeout_s=None
    )
    return cfg.replace(search_space=space, study=study)
