"""Typed study configuration: load ``search_space.yaml``, apply overrides, validate.

Precedence: built-in defaults < the YAML file < ``--demo`` settings < ``--set key=value``.
Every error is a :class:`ConfigError` whose one-line message names the dotted key path.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from search.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

KT_STRATEGIES = ("random", "bayesian", "hyperband")
OPTUNA_STRATEGIES = ("tpe", "cmaes", "gp", "random-optuna")
STRATEGIES = KT_STRATEGIES + OPTUNA_STRATEGIES
PRUNERS = ("auto", "none", "median", "asha", "hyperband")
LOSS_NAMES = ("bce_dice", "bce_dice_image", "dice", "bce", "bce_iou")
AUGMENTATIONS = ("hflip", "vflip", "rotation", "shrink", "shear", "elastic", "distortion", "barrel", "pincushion")

# Every hyperparameter the trial understands, with its value when the search space leaves it out.
# The defaults are the reference experiment (DESIGN §7, §9): all nine augmentations at strength 1.
HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
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
}
INT_HYPERPARAMETERS = ("base_filters", "base_kernels", "num_layers", "dilation")
BOOL_HYPERPARAMETERS = ("batch_norm", "standardize_input")
STR_HYPERPARAMETERS = ("loss",)


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
    hyperband_factor: int = 3
    heartbeat_s: int | None = None  # Optuna RDB heartbeat interval (None: UNET_SEARCH_HEARTBEAT_S or 30 s)
    prune_warmup_epochs: int | None = None  # epochs before a pruner may stop a trial (None: max(3, max_epochs // 10))


@dataclass(frozen=True)
class DataConfig:
    root: str = "dataset/ALCAPA"
    image_size: int = 512
    channels: int = 3
    batch_size: int = 2
    mask_threshold: int = 128
    cache_dir: str | None = None
    num_val_predictions: int = 4


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 100
    patience: int = 10
    min_epochs: int = 1
    reducer: ReducerConfig = field(default_factory=ReducerConfig)
    clipvalue: float = 0.5
    samples_per_epoch: int | None = 800  # the reference: 400 steps x batch 2; null = one pass over train
    steps_per_epoch: int | None = None  # overrides samples_per_epoch
    warmup_samples: int = 4000  # neither early stopping nor a pruner judges a trial before this
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
        """Every hyperparameter's value when not sampled: defaults overridden by fixed entries."""
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
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch; None = one pass over the training split."""
        t = self.train
        if t.steps_per_epoch is not None:
            return t.steps_per_epoch
        if t.samples_per_epoch is None:
            return None
        return max(1, math.ceil(t.samples_per_epoch / self.data.batch_size))

    def warmup_epochs(self, n_train: int | None = None) -> int:
        """Epochs in ``train.warmup_samples`` (a one-pass epoch has ``n_train`` samples; unknown: 1 epoch)."""
        steps = self.steps_per_epoch
        per_epoch = steps * self.data.batch_size if steps is not None else n_train
        if not per_epoch:
            return 1
        return max(1, math.ceil(self.train.warmup_samples / per_epoch))

    @property
    def prune_warmup(self) -> int:
        """Epochs before a pruner may stop a trial: study.prune_warmup_epochs, else the training warm-up."""
        if self.study.prune_warmup_epochs is not None:
            return self.study.prune_warmup_epochs
        if self.steps_per_epoch is None:
            return max(3, self.train.max_epochs // 10)
        return min(self.warmup_epochs(), self.train.max_epochs)

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


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> Config:
    """Load and validate a config.

    Args:
        path: YAML file; ``None`` uses the built-in defaults only.
        overrides: ``key=value`` strings (``--set``), applied last; values parse as YAML.
        extra: a nested dict merged after the file and before ``overrides`` (used by ``--demo``).

    Raises:
        ConfigError: with the file and dotted key path in the message.
    """
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass --config FILE or run from the project root")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        raw = loaded
    if extra:
        raw = _deep_merge(raw, extra)
    for item in overrides:
        raw = apply_override(raw, item)
    return config_from_dict(raw, source=source)


def apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """Apply one ``key=value`` override to a raw config dict (returns a new dict)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set study.max_trials=20")
    key, _, text = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = _split_key(key)
    out = copy.deepcopy(raw)
    node = out
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
    return out


def _split_key(key: str) -> list[str]:
    """Split a dotted key; under search_space the hyperparameter name may itself contain a dot."""
    parts = key.split(".")
    if parts[0] == "search_space" and len(parts) >= 3 and parts[1] == "augment":
        return ["search_space", f"augment.{parts[2]}", *parts[3:]]
    return parts


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "search_space":
            out[k] = _deep_merge(out[k], v)
        elif k == "search_space" and isinstance(v, dict) and isinstance(out.get(k), dict):
            merged = dict(out[k])
            merged.update(copy.deepcopy(v))
            out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    return out


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a nested dict."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    known = {"study", "data", "train", "final", "search_space", "schema_version"}
    for k in raw:
        if k not in known:
            raise ConfigError(f"{source}: unknown key {k!r}; expected one of {sorted(known)}")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{source}: schema_version {version!r} is not supported; expected {SCHEMA_VERSION}")
    sections: dict[str, Any] = {}
    for name, cls in (("study", StudyConfig), ("data", DataConfig), ("train", TrainConfig), ("final", FinalConfig)):
        sections[name] = _build_dataclass(cls, raw.get(name) or {}, f"{source}: {name}")
    space_raw = raw.get("search_space") or {}
    if not isinstance(space_raw, dict):
        raise ConfigError(f"{source}: search_space: expected a mapping of hyperparameter -> definition")
    space_raw = _fit_space_to_image(space_raw, sections["data"].image_size, source)
    space = {str(k): _parse_param(str(k), v, f"{source}: search_space.{k}") for k, v in space_raw.items()}
    cfg = Config(search_space=space, **sections)
    _validate(cfg, source)
    return cfg


AUTO = "auto"


def _fit_space_to_image(space_raw: dict[str, Any], image_size: int, source: str) -> dict[str, Any]:
    """Resolve what the user left to the data: ``num_layers`` ``max: auto`` (or an omitted num_layers).

    ``max: auto`` becomes the deepest UNet that fits ``image_size`` (clipped to the reference's 8 levels);
    an omitted ``num_layers`` fixes the reference depth, clipped the same way. Each is logged once at INFO.
    Explicit numbers are left alone: one that cannot fit stays an error (``_validate``).
    """
    limit = max_feasible_layers(image_size)
    out = dict(space_raw)
    spec = out.get("num_layers")
    if isinstance(spec, dict) and spec.get("max") == AUTO:
        fitted = min(limit, 8)
        out["num_layers"] = {**spec, "max": fitted}
        if isinstance(spec.get("min"), int) and not isinstance(spec.get("min"), bool) and spec["min"] > fitted:
            raise ConfigError(
                f"{source}: search_space.num_layers: min {spec['min']} cannot fit image_size {image_size} "
                f"(the deepest that fits is {fitted}); lower min"
            )
        logger.info("search_space.num_layers: max auto -> %d (the deepest UNet that fits image_size %d)",
                    fitted, image_size)
    elif spec is None and HYPERPARAMETER_DEFAULTS["num_layers"] > limit:
        out["num_layers"] = {"value": limit}
        logger.info("search_space.num_layers: not set; the reference depth %d cannot fit image_size %d, using %d",
                    HYPERPARAMETER_DEFAULTS["num_layers"], image_size, limit)
    for name, entry in out.items():  # num_layers.max is resolved above; any other 'auto' is a mistake
        for key in ("min", "max"):
            if isinstance(entry, dict) and entry.get(key) == AUTO:
                raise ConfigError(f"{source}: search_space.{name}.{key}: 'auto' is accepted only for num_layers.max")
    return out


def _build_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {sorted(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            return _coerce(value, arg, where)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value if value is not None else {}, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _parse_param(name: str, spec: Any, where: str) -> ParamDef:
    if name not in HYPERPARAMETER_DEFAULTS:
        raise ConfigError(
            f"{where}: unknown hyperparameter; expected one of {sorted(HYPERPARAMETER_DEFAULTS)}"
        )
    if not isinstance(spec, dict):
        # A bare scalar fixes the value: `dilation: 1`.
        spec = {"value": spec}
    if "value" in spec:
        extra = set(spec) - {"value"}
        if extra:
            raise ConfigError(f"{where}: a fixed entry takes only 'value', got also {sorted(extra)}")
        return ParamDef(name=name, type="fixed", value=_check_value(name, spec["value"], where + ".value"))
    allowed = {"type", "values", "min", "max", "step", "log"}
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"{where}.{k}: unknown key; expected one of {sorted(allowed | {'value'})}")
    kind = spec.get("type")
    if kind not in ("choice", "int", "float", "pow2"):
        raise ConfigError(f"{where}.type: expected choice, int, float or pow2 (or {{value: X}}), got {kind!r}")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: expected a non-empty list, got {values!r}")
        checked = tuple(_check_value(name, v, f"{where}.values") for v in values)
        if len(set(map(repr, checked))) != len(checked):
            raise ConfigError(f"{where}.values: duplicate values in {values!r}")
        return ParamDef(name=name, type="choice", values=checked)
    lo, hi = spec.get("min"), spec.get("max")
    for key, v in (("min", lo), ("max", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{key}: expected a number, got {v!r}")
    assert isinstance(lo, (int, float)) and isinstance(hi, (int, float))
    if lo > hi:
        raise ConfigError(f"{where}: min ({lo}) is greater than max ({hi})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true/false, got {log!r}")
    if log and lo <= 0:
        raise ConfigError(f"{where}: log sampling needs min > 0, got min={lo}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}.step: expected a positive number, got {step!r}")
    if kind in ("int", "pow2"):
        if name not in INT_HYPERPARAMETERS:
            raise ConfigError(f"{where}.type: {name} is not an integer hyperparameter; use float or choice")
        if not float(lo).is_integer() or not float(hi).is_integer():
            raise ConfigError(f"{where}: an {kind} range needs integer min/max, got {lo}..{hi}")
        lo, hi = int(lo), int(hi)
    if kind == "pow2":
        if lo < 1 or lo & (lo - 1) or hi & (hi - 1):
            raise ConfigError(f"{where}: pow2 needs powers of two for min/max, got {lo}..{hi}")
        return ParamDef(name=name, type="pow2", min=lo, max=hi)
    if kind == "float" and (name in INT_HYPERPARAMETERS or name in BOOL_HYPERPARAMETERS or name in STR_HYPERPARAMETERS):
        raise ConfigError(f"{where}.type: {name} is not a float hyperparameter; use int or choice")
    if kind == "int" and log and step not in (None, 1):
        raise ConfigError(f"{where}: log sampling of an int range cannot have a step")
    if kind == "float" and log and step is not None:
        # Optuna refuses the pair (ValueError at the first trial); Keras Tuner would read step as a factor.
        raise ConfigError(f"{where}: log sampling of a float range cannot have a step; drop step or log")
    return ParamDef(name=name, type=kind, min=lo, max=hi, step=step, log=log)


def _check_value(name: str, v: Any, where: str) -> Any:
    default = HYPERPARAMETER_DEFAULTS[name]
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: {name} expects true/false, got {v!r}")
    elif isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: {name} expects integers, got {v!r}")
    elif isinstance(default, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: {name} expects numbers, got {v!r}")
        v = float(v)
    elif isinstance(default, str) and not isinstance(v, str):
        raise ConfigError(f"{where}: {name} expects a string, got {v!r}")
    if name == "loss" and v not in LOSS_NAMES:
        raise ConfigError(f"{where}: unknown loss {v!r}; expected one of {list(LOSS_NAMES)}")
    if name.startswith("augment.") and not 0.0 <= v <= 1.0:
        raise ConfigError(f"{where}: augmentation strengths are in [0, 1] (0 = off, 1 = reference), got {v!r}")
    return v


def max_feasible_layers(image_size: int) -> int:
    """Deepest UNet for this image: bottleneck ≥ 4 px and image divisible by 2^(L-1)."""
    layers = 1
    while image_size % (2**layers) == 0 and image_size // (2**layers) >= 4:
        layers += 1
    return layers


def _validate(cfg: Config, source: str) -> None:
    s, d, t = cfg.study, cfg.data, cfg.train
    w = source
    if not s.name or any(c in s.name for c in "/\\ ") or s.name.startswith("."):
        raise ConfigError(f"{w}: study.name: expected a folder-safe name (no spaces or slashes), got {s.name!r}")
    for key, v, lo in (
        ("study.max_trials", s.max_trials, 1),
        ("study.max_consecutive_failures", s.max_consecutive_failures, 1),
        ("study.workers", s.workers, 1),
        ("study.recycle_after", s.recycle_after, 1),
        ("study.hyperband_factor", s.hyperband_factor, 2),
        ("study.heartbeat_s", s.heartbeat_s if s.heartbeat_s is not None else 1, 1),
        ("study.prune_warmup_epochs", s.prune_warmup_epochs if s.prune_warmup_epochs is not None else 1, 1),
        ("data.image_size", d.image_size, 8),
        ("data.batch_size", d.batch_size, 1),
        ("data.channels", d.channels, 1),
        ("train.max_epochs", t.max_epochs, 1),
        ("train.patience", t.patience, 1),
        ("train.min_epochs", t.min_epochs, 1),
        ("train.samples_per_epoch", t.samples_per_epoch if t.samples_per_epoch is not None else 1, 1),
        ("train.steps_per_epoch", t.steps_per_epoch if t.steps_per_epoch is not None else 1, 1),
        ("train.warmup_samples", t.warmup_samples, 0),
        ("train.collapse_epochs", t.collapse_epochs, 0),
        ("train.reducer.patience", t.reducer.patience, 1),
    ):
        if v < lo:
            raise ConfigError(f"{w}: {key}: expected an integer ≥ {lo}, got {v}")
    if d.channels not in (1, 3):
        raise ConfigError(f"{w}: data.channels: expected 1 or 3, got {d.channels}")
    if not 1 <= d.mask_threshold <= 255:  # mask pixels >= threshold are foreground: 0 would make all of them so
        raise ConfigError(f"{w}: data.mask_threshold: expected 1..255 (mask pixels >= it are foreground), "
                          f"got {d.mask_threshold}")
    if not 0 < t.reducer.factor < 1:
        raise ConfigError(f"{w}: train.reducer.factor: expected 0 < factor < 1, got {t.reducer.factor}")
    if t.clipvalue <= 0:
        raise ConfigError(f"{w}: train.clipvalue: expected > 0, got {t.clipvalue}")
    if s.timeout_s is not None and s.timeout_s <= 0:
        raise ConfigError(f"{w}: study.timeout_s: expected > 0 seconds, got {s.timeout_s}")
    if s.storage is not None and cfg.engine != "optuna":
        raise ConfigError(
            f"{w}: study.storage is for Optuna strategies {list(OPTUNA_STRATEGIES)}; "
            f"strategy {s.strategy!r} uses Keras Tuner (see README: chief/worker mode)"
        )
    if cfg.engine == "keras_tuner" and s.pruner not in ("none", "auto"):
        # Keras Tuner 1.4 cannot stop a trial mid-training; refuse instead of silently ignoring.
        raise ConfigError(
            f"{w}: study.pruner {s.pruner!r} needs an Optuna strategy {list(OPTUNA_STRATEGIES)}; "
            f"Keras Tuner 1.4 cannot prune mid-training (set study.pruner: none)"
        )
    limit = max_feasible_layers(d.image_size)
    nl = cfg.search_space.get("num_layers")
    layer_values = nl.bounds_values() if nl is not None else (HYPERPARAMETER_DEFAULTS["num_layers"],)
    if nl is not None:
        bad = [v for v in layer_values if v is not None and (int(v) > limit or int(v) < 2)]
        if bad:
            raise ConfigError(
                f"{w}: search_space.num_layers: {bad} cannot fit image_size {d.image_size} "
                f"(needs image_size / 2^(num_layers-1) ≥ 4 and divisible); use 2..{limit}"
            )
    for name in ("base_kernels",):
        p = cfg.search_space.get(name)
        if p is not None:
            bad = [v for v in p.bounds_values() if int(v) < 1 or int(v) % 2 == 0]
            if p.type == "int" and (p.step or 1) % 2 == 1 and p.min != p.max:
                bad = bad or ["even values between min and max (use a choice or step: 2)"]
            if bad:
                raise ConfigError(f"{w}: search_space.{name}: kernels must be odd and ≥ 1, got {bad}")
    for name in ("base_filters", "dilation"):
        p = cfg.search_space.get(name)
        if p is not None and any(int(v) < 1 for v in p.bounds_values()):
            raise ConfigError(f"{w}: search_space.{name}: expected values ≥ 1, got {list(p.bounds_values())}")
    p = cfg.search_space.get("learning_rate")
    if p is not None and any(float(v) <= 0 for v in p.bounds_values()):
        raise ConfigError(f"{w}: search_space.learning_rate: expected values > 0, got {list(p.bounds_values())}")
    p = cfg.search_space.get("dropout_rate")
    if p is not None and any(not 0 <= float(v) < 1 for v in p.bounds_values()):
        raise ConfigError(f"{w}: search_space.dropout_rate: expected 0 ≤ rate < 1, got {list(p.bounds_values())}")
    for name in AUGMENTATIONS:
        p = cfg.search_space.get(f"augment.{name}")
        if p is not None and any(not 0 <= float(v) <= 1 for v in p.bounds_values()):
            raise ConfigError(f"{w}: search_space.augment.{name}: strengths are in [0, 1], got {list(p.bounds_values())}")
