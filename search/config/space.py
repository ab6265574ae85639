"""One search-space definition, translated to Keras Tuner and to Optuna.

``pow2`` entries and ``choice`` entries become categorical choices in both engines; ``int`` and
``float`` ranges keep their ``step``/``log`` settings. Fixed entries are not sampled: they are
merged into the values by :func:`complete_values`.
"""

from __future__ import annotations

from typing import Any

from data import AugmentSpec
from models import UNetSpec
from search.config import (
    AUGMENTATIONS,
    FAMILY_OPTION_DEFAULTS,
    HYPERPARAMETER_DEFAULTS,
    VARIANT,
    Config,
    ParamDef,
    family_values,
    is_active,
    max_feasible_layers,
)
from search.config.specs import TrainSpec

__all__ = [
    "REFERENCE_VALUES",
    "baseline_deviations",
    "baseline_values",
    "complete_values",
    "conditions",
    "describe",
    "family_openers",
    "suggest_optuna",
    "to_keras_tuner",
    "to_optuna",
]


def _reference_values() -> dict[str, Any]:
    """The reference tool's configuration (DESIGN §7, §9), read from the defaults of the specs that
    reproduce it (UNetSpec, TrainSpec, AugmentSpec.reference()), so that there is no second copy."""
    model, train, augment = UNetSpec(), TrainSpec(), AugmentSpec.reference()
    values: dict[str, Any] = {
        VARIANT: model.variant, "base_filters": model.base_filters, "base_kernels": model.base_kernels,
        "num_layers": model.num_layers, "dilation": model.dilation, "dropout_rate": model.dropout_rate, "learning_rate": train.learning_rate,
        "batch_norm": model.batch_norm, "standardize_input": model.standardize_input, "loss": train.loss,
    }
    # Each family's options at its reference setting (a baseline of another family, when the space excludes unet).
    return values | {f"augment.{name}": getattr(augment, name) for name in AUGMENTATIONS} | FAMILY_OPTION_DEFAULTS


# The hand-picked reference configuration: the baseline (trial 0) is these values placed inside the
# study's search space (:func:`baseline_values`; :func:`baseline_deviations` says where it differs).
REFERENCE_VALUES: dict[str, Any] = _reference_values()


def conditions(cfg: Config) -> dict[str, tuple[str, ...] | None]:
    """Each sampled hyperparameter, ``variant`` first, with the families that use it (None: every family): a family's
    options and the shared fields some families ignore are sampled only for the families that read them."""
    params = cfg.sampled_params()
    families = tuple(str(v) for v in (params[VARIANT].choices() if VARIANT in params
                                      else (cfg.fixed_values()[VARIANT],)))
    out: dict[str, tuple[str, ...] | None] = {VARIANT: None} if VARIANT in params else {}
    for name in params:
        if name == VARIANT:
            continue
        users = tuple(f for f in families if is_active(name, f))
        if users:  # a fixed variant that ignores a sampled field: not sampled at all
            out[name] = None if users == families else users
    return out


def to_keras_tuner(cfg: Config) -> Any:
    """A ``keras_tuner.HyperParameters`` holding every sampled hyperparameter, each family's under a conditional
    scope on ``variant``."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    params = cfg.sampled_params()
    for name, users in conditions(cfg).items():
        if users is None:
            _add_keras_tuner(hp, name, params[name])
        else:
            with hp.conditional_scope(VARIANT, list(users)):
                _add_keras_tuner(hp, name, params[name])
    return hp


def _add_keras_tuner(hp: Any, name: str, p: ParamDef) -> None:
    if p.type in ("choice", "pow2"):
        hp.Choice(name, list(p.choices()), ordered=_is_numeric(p.choices()))
    elif p.type == "int":
        hp.Int(
            name,
            min_value=int(p.min or 0),
            max_value=int(p.max or 0),
            step=None if p.log else int(p.step or 1),
            sampling="log" if p.log else "linear",
        )
    else:
        hp.Float(
            name,
            min_value=float(p.min or 0.0),
            max_value=float(p.max or 0.0),
            step=p.step,
            sampling="log" if p.log else "linear",
        )


def to_optuna(cfg: Config) -> dict[str, Any]:
    """Optuna distributions keyed by hyperparameter name."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in cfg.sampled_params().items():
        if p.type in ("choice", "pow2"):
            out[name] = CategoricalDistribution(list(p.choices()))
        elif p.type == "int":
            out[name] = IntDistribution(int(p.min or 0), int(p.max or 0), log=p.log, step=1 if p.log else int(p.step or 1))
        else:
            out[name] = FloatDistribution(float(p.min or 0.0), float(p.max or 0.0), log=p.log, step=p.step)
    return out


def suggest_optuna(trial: Any, cfg: Config) -> dict[str, Any]:
    """Ask an Optuna trial for every sampled hyperparameter its family uses (define-by-run: ``variant`` first, then
    the shared fields the chosen family reads and its own options; enqueued values are honoured)."""
    values: dict[str, Any] = {}
    params, unsampled = cfg.sampled_params(), cfg.unsampled_values()[VARIANT]
    for name, users in conditions(cfg).items():
        variant = values.get(VARIANT, unsampled)
        if users is not None and variant not in users:
            continue
        p = params[name]
        if p.type in ("choice", "pow2"):
            values[name] = trial.suggest_categorical(name, list(p.choices()))
        elif p.type == "int":
            values[name] = trial.suggest_int(
                name, int(p.min or 0), int(p.max or 0), step=1 if p.log else int(p.step or 1), log=p.log
            )
        else:
            values[name] = trial.suggest_float(name, float(p.min or 0.0), float(p.max or 0.0), step=p.step, log=p.log)
    return values


def complete_values(cfg: Config, sampled: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter's value for one trial: defaults < fixed entries < sampled values.

    Engine-private keys (Keras Tuner's ``tuner/...``) are dropped, and so are the hyperparameters the trial's family
    does not read (other families' options, shared fields it ignores): a trial records only what made its model.
    """
    values = cfg.unsampled_values()
    for k, v in sampled.items():
        if k in HYPERPARAMETER_DEFAULTS:
            values[k] = _plain(v)
    return family_values(values)


def baseline_values(cfg: Config) -> dict[str, Any]:
    """The reference configuration, scaled only where the image forces it, inside the space.

    num_layers is reduced to the deepest UNet that fits ``data.image_size``; every sampled
    hyperparameter is snapped to the nearest value its search-space entry allows.
    """
    ref = dict(REFERENCE_VALUES)
    ref["num_layers"] = min(ref["num_layers"], max_feasible_layers(cfg.data.image_size))
    sampled = {name: p.snap(ref[name]) for name, p in cfg.sampled_params().items()}
    variant = sampled.get(VARIANT, cfg.fixed_values()[VARIANT])
    return {name: v for name, v in sampled.items() if is_active(name, variant)}


def family_openers(cfg: Config) -> list[dict[str, Any]]:
    """When ``variant`` is searched, one partial trial per family the baseline does not already try
    (``{"variant": family}``; the sampler chooses the rest), so that every family is judged once before the sampler
    concentrates. Without them TPE, five random trials in, kept to the baseline's family: in B14 it tried 4 of 7
    families in 16 trials, 11 of them UNets."""
    p = cfg.sampled_params().get(VARIANT)
    if p is None:
        return []
    tried = {baseline_values(cfg).get(VARIANT)} if cfg.study.baselines else set()
    return [{VARIANT: family} for family in p.choices() if family not in tried]


def baseline_deviations(cfg: Config, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Where a baseline trial's ``values`` differ from :data:`REFERENCE_VALUES`, and why.

    Each entry: ``hyperparameter``, ``reference``, ``value`` and ``why``: "fixed by the search space"
    (a ``{value: X}`` entry, e.g. the shipped ``batch_norm: true``), "the deepest UNet that fits
    data.image_size", "snapped into the search space" (the nearest value a sampled entry allows), or
    "the study's default" (a hyperparameter the space leaves out).
    """
    out = []
    for name, ref in REFERENCE_VALUES.items():
        value = values.get(name, ref)
        if value == ref:
            continue
        p = cfg.search_space.get(name)
        deepest = max_feasible_layers(cfg.data.image_size)
        if p is not None and p.is_fixed:
            why = "fixed by the search space"
        elif name == "num_layers" and ref > deepest and value == deepest:
            why = "the deepest UNet that fits data.image_size"
        elif p is not None:
            why = "snapped into the search space"
        else:
            why = "the study's default"
        out.append({"hyperparameter": name, "reference": ref, "value": value, "why": why})
    return out


def _is_numeric(values: tuple[Any, ...]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _plain(v: Any) -> Any:
    """numpy scalars → Python scalars so values serialise cleanly."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v


def describe(p: ParamDef) -> str:
    if p.type == "fixed":
        return f"= {p.value!r}"
    if p.type in ("choice", "pow2"):
        return "{" + ", ".join(map(str, p.choices())) + "}"
    return f"[{p.min}, {p.max}]" + (" log" if p.log else "")
