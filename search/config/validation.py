"""Validation with the dotted key path: one search-space entry, one value, the whole config."""

from __future__ import annotations

import math
from typing import Any, Literal

from data.labels import class_map_from
from models import UNetSpec
from models.families import FAMILIES
from search.config.schema import (
    ACTIVATIONS,
    AUGMENTATIONS,
    BOOL_HYPERPARAMETERS,
    HYPERPARAMETER_DEFAULTS,
    INT_HYPERPARAMETERS,
    LOSS_NAMES,
    OPTUNA_STRATEGIES,
    STR_HYPERPARAMETERS,
    VARIANT,
    Config,
    ParamDef,
    family_options,
    option_family,
)
from search.errors import ConfigError


def parse_param(name: str, spec: Any, where: str) -> ParamDef:
    """One search-space entry (``{type: …}``, ``{value: X}`` or a bare value), checked, as a ParamDef."""
    if name not in HYPERPARAMETER_DEFAULTS:
        raise ConfigError(_unknown_hyperparameter(name, where))
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
        return _parse_choice(name, spec, where)
    return _parse_range(name, kind, spec, where)


def _parse_choice(name: str, spec: dict[str, Any], where: str) -> ParamDef:
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.values: expected a non-empty list, got {values!r}")
    checked = tuple(_check_value(name, v, f"{where}.values") for v in values)
    if len(set(map(repr, checked))) != len(checked):
        raise ConfigError(f"{where}.values: duplicate values in {values!r}")
    return ParamDef(name=name, type="choice", values=checked)


def _parse_range(name: str, kind: Literal["int", "float", "pow2"], spec: dict[str, Any], where: str) -> ParamDef:
    """An int, float or pow2 range: min, max, and step or log."""
    lo, hi = spec.get("min"), spec.get("max")
    for key, v in (("min", lo), ("max", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{key}: expected a number, got {v!r}")
    assert isinstance(lo, (int, float)) and isinstance(hi, (int, float))
    if lo > hi:
        raise ConfigError(f"{where}: min ({lo}) is greater than max ({hi})")
    log, step = _log_and_step(spec, lo, where)
    if kind in ("int", "pow2"):
        if name not in INT_HYPERPARAMETERS:
            raise ConfigError(f"{where}.type: {name} is not an integer hyperparameter; use float or choice")
        if not float(lo).is_integer() or not float(hi).is_integer():
            raise ConfigError(f"{where}: an {kind} range needs integer min/max, got {lo}..{hi}")
        lo, hi = int(lo), int(hi)
    if kind == "pow2":
        ilo, ihi = int(lo), int(hi)
        if ilo < 1 or ilo & (ilo - 1) or ihi & (ihi - 1):
            raise ConfigError(f"{where}: pow2 needs powers of two for min/max, got {lo}..{hi}")
        return ParamDef(name=name, type="pow2", min=ilo, max=ihi)
    if kind == "float" and (name in INT_HYPERPARAMETERS or name in BOOL_HYPERPARAMETERS or name in STR_HYPERPARAMETERS):
        raise ConfigError(f"{where}.type: {name} is not a float hyperparameter; use int or choice")
    if kind == "int" and log and step not in (None, 1):
        raise ConfigError(f"{where}: log sampling of an int range cannot have a step")
    if kind == "float" and log and step is not None:
        # Optuna refuses the pair (ValueError at the first trial); Keras Tuner would read step as a factor.
        raise ConfigError(f"{where}: log sampling of a float range cannot have a step; drop step or log")
    return ParamDef(name=name, type=kind, min=lo, max=hi, step=step, log=log)


def _log_and_step(spec: dict[str, Any], lo: float, where: str) -> tuple[bool, Any]:
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true/false, got {log!r}")
    if log and lo <= 0:
        raise ConfigError(f"{where}: log sampling needs min > 0, got min={lo}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}.step: expected a positive number, got {step!r}")
    return log, step


def _unknown_hyperparameter(name: str, where: str) -> str:
    """The message for a search-space key nobody understands: another option of a known family, an unknown family,
    or neither."""
    prefix, owner = name.split(".", 1)[0], option_family(name)
    if owner is not None:
        options = [f"{owner}.{o}" for o in FAMILIES[owner].options]
        return f"{where}: unknown option of model family {owner}; expected one of {options or 'none (it has none)'}"
    if "." in name and prefix != "augment":
        return f"{where}: unknown model family {prefix!r}; family options are <family>.<option>, families {list(FAMILIES)}"
    shared = sorted(k for k in HYPERPARAMETER_DEFAULTS if option_family(k) is None)
    return f"{where}: unknown hyperparameter; expected one of {shared} or <family>.<option> (README: model families)"


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
    if name == VARIANT and v not in FAMILIES:
        raise ConfigError(f"{where}: unknown model family {v!r}; expected one of {list(FAMILIES)}")
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


def validate_config(cfg: Config, source: str) -> None:
    """Checks across keys (ranges, engine/pruner/storage combinations, what fits the image)."""
    s = cfg.study
    w = source
    if not s.name or any(c in s.name for c in "/\\ ") or s.name.startswith("."):
        raise ConfigError(f"{w}: study.name: expected a folder-safe name (no spaces or slashes), got {s.name!r}")
    _check_integer_ranges(cfg, w)
    _check_values(cfg, w)
    _check_engine(cfg, w)
    _check_space(cfg, w)


def _check_integer_ranges(cfg: Config, w: str) -> None:
    """Integer keys and their lower bounds (``auto`` train rules are the budget's)."""
    s, d, t = cfg.study, cfg.data, cfg.train
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
        ("train.max_epochs", t.max_epochs, 1),
        ("train.patience", t.patience, 1),
        ("train.min_epochs", t.min_epochs, 1),
        ("train.samples_per_epoch", t.samples_per_epoch if t.samples_per_epoch is not None else 1, 1),
        ("train.steps_per_epoch", t.steps_per_epoch if t.steps_per_epoch is not None else 1, 1),
        ("train.warmup_samples", t.warmup_samples, 0),
        ("train.collapse_epochs", t.collapse_epochs, 0),
        ("train.reducer.patience", t.reducer.patience, 1),
        ("study.folds", s.folds, 2),
        ("final.reevaluate_top_k", cfg.final.reevaluate_top_k, 0),
        ("final.seeds", cfg.final.seeds, 1),
    ):
        if isinstance(v, str):  # AUTO: a train rule left to the budget (search/study/budget.py)
            continue
        if v < lo:
            raise ConfigError(f"{w}: {key}: expected an integer ≥ {lo}, got {v}")


def _check_classes(classes: Any, w: str) -> None:
    """data.classes: auto, binary, or a class map (data/labels.py) checked now, not in the first trial."""
    if isinstance(classes, str) and classes in ("auto", "binary"):
        return
    try:
        class_map_from(classes, source=f"{w}: data.classes")
    except ValueError as e:
        raise ConfigError(f"{e}; or auto (the dataset's labels.json) or binary") from None


def _check_values(cfg: Config, w: str) -> None:
    """Keys with a range or a vocabulary of their own."""
    s, d, t = cfg.study, cfg.data, cfg.train
    if isinstance(t.first_rung_size, int) and not 8 <= t.first_rung_size < d.image_size:
        raise ConfigError(f"{w}: train.first_rung_size: expected 8 ≤ size < data.image_size ({d.image_size}), "
                          f"auto or null, got {t.first_rung_size}")
    if d.channels != "auto" and (type(d.channels) is not int or d.channels not in (1, 3)):
        raise ConfigError(f"{w}: data.channels: expected 1, 3 or auto, got {d.channels!r}")
    if d.mask_threshold is not None and not 1 <= d.mask_threshold <= 255:  # 0 would make every pixel foreground
        raise ConfigError(f"{w}: data.mask_threshold: expected 1..255 (mask pixels >= it are foreground), "
                          f"got {d.mask_threshold}")
    _check_classes(d.classes, w)
    if not 0 < t.reducer.factor < 1:
        raise ConfigError(f"{w}: train.reducer.factor: expected 0 < factor < 1, got {t.reducer.factor}")
    if t.clipvalue <= 0:
        raise ConfigError(f"{w}: train.clipvalue: expected > 0, got {t.clipvalue}")
    if t.activation not in ACTIVATIONS:  # else every trial would be rejected as infeasible
        raise ConfigError(f"{w}: train.activation: unknown activation {t.activation!r}; "
                          f"expected one of {list(ACTIVATIONS)}")
    if not 0 <= s.fold_prune_p < 1:
        raise ConfigError(f"{w}: study.fold_prune_p: expected 0 ≤ p < 1 (0 = never prune on folds), got {s.fold_prune_p}")
    if s.groups not in ("auto", "contiguous", "none"):
        import re

        try:
            groups = re.compile(s.groups).groups
        except re.error as e:
            raise ConfigError(f"{w}: study.groups: {s.groups!r} is not a regular expression ({e})") from None
        if groups < 1:
            raise ConfigError(f"{w}: study.groups: expected auto, contiguous, none or a regular expression with one "
                              f"(group) for the patient id, got {s.groups!r}")
    if s.timeout_s is not None and not (math.isfinite(s.timeout_s) and s.timeout_s > 0):
        raise ConfigError(f"{w}: study.timeout_s: expected a positive number of seconds, got {s.timeout_s}")


def _check_engine(cfg: Config, w: str) -> None:
    """What the chosen engine can do (storage, pruning)."""
    s = cfg.study
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


def _check_space(cfg: Config, w: str) -> None:
    """Search-space values that no model could use (what fits the image, odd kernels, ranges)."""
    d = cfg.data
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
    _check_space_ranges(cfg, w)
    _check_families(cfg, w)


def _check_families(cfg: Config, w: str) -> None:
    """Every family option belongs to a family the variant can choose, and each option value the space allows
    builds a model of its family at data.image_size (at some depth the space allows)."""
    choosable = list(_choices(cfg, VARIANT))
    for key in cfg.search_space:
        owner = option_family(key)
        if owner is not None and owner not in choosable:
            raise ConfigError(f"{w}: search_space.{key}: an option of model family {owner}, which search_space.variant "
                              f"never chooses (its choices: {choosable}); drop it or add {owner} to variant's values")
    for name in choosable:
        trials: list[tuple[str, dict[str, Any]]] = [
            (f"search_space.{key}={value!r}", {option: value})
            for option in FAMILIES[name].options
            for key in (f"{name}.{option}",)
            for value in _choices(cfg, key)
        ]
        for where, options in trials or [(f"search_space.variant={name!r}", {})]:
            error = _family_error(cfg, name, options)
            if error is not None:
                raise ConfigError(f"{w}: {where}: model family {name} cannot be built at data.image_size "
                                  f"{cfg.data.image_size} at any num_layers the space allows: {error}")


def _choices(cfg: Config, name: str) -> tuple[Any, ...]:
    """The values hyperparameter ``name`` can take (a range: its two ends)."""
    p = cfg.search_space.get(name)
    return p.bounds_values() if p is not None else (HYPERPARAMETER_DEFAULTS[name],)


def _family_error(cfg: Config, variant: str, options: dict[str, Any]) -> str | None:
    """None when a spec of ``variant`` with ``options`` (the others fixed, or at their defaults) validates at some
    depth and width the space allows (the other shared fields at their smallest); else the last reason it did not."""
    opts = family_options(cfg.unsampled_values(), variant) | options
    shared = {k: min(_choices(cfg, k)) for k in ("base_kernels", "dilation", "dropout_rate")}
    low, high = (int(v) for v in (min(_choices(cfg, "num_layers")), max(_choices(cfg, "num_layers"))))
    channels = cfg.data.channels if isinstance(cfg.data.channels, int) else 3
    error = None
    for layers in range(low, high + 1):
        for filters in sorted({int(v) for v in _choices(cfg, "base_filters")}):
            spec = UNetSpec(image_size=cfg.data.image_size, channels=channels, variant=variant, options=opts,
                            num_layers=layers, base_filters=filters, base_kernels=int(shared["base_kernels"]),
                            dilation=int(shared["dilation"]), dropout_rate=float(shared["dropout_rate"]))
            try:
                spec.validate()
            except ValueError as e:
                error = str(e)
                continue
            return None
    return error


def _check_space_ranges(cfg: Config, w: str) -> None:
    """Filters, dilation, learning rate, dropout and augmentation strengths within their ranges."""
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
