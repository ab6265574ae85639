"""Load a study configuration: the YAML file, ``--demo`` settings and ``--set key=value`` overrides.

Precedence: built-in defaults < the YAML file < ``--demo`` settings < ``--set key=value``.
Every error is a :class:`ConfigError` whose one-line message names the dotted key path.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from search.config.schema import (
    AUTO,
    HYPERPARAMETER_DEFAULTS,
    SCHEMA_VERSION,
    Config,
    DataConfig,
    FinalConfig,
    StudyConfig,
    TrainConfig,
)
from search.config.validation import max_feasible_layers, parse_param, validate_config
from search.errors import ConfigError

logger = logging.getLogger(__name__)


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
    space = {str(k): parse_param(str(k), v, f"{source}: search_space.{k}") for k, v in space_raw.items()}
    cfg = Config(search_space=space, **sections)
    validate_config(cfg, source)
    return cfg



def _fit_space_to_image(space_raw: dict[str, Any], image_size: int, source: str) -> dict[str, Any]:
    """Resolve what the user left to the data: ``num_layers`` ``max: auto`` (or an omitted num_layers).

    ``max: auto`` becomes the deepest UNet that fits ``image_size`` (clipped to the reference's 8 levels);
    an omitted ``num_layers`` fixes the reference depth, clipped the same way. Each is logged once at INFO.
    Explicit numbers are left alone: one that cannot fit stays an error (``validate_config``).
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


_KIND = {int: "an integer", float: "a number", str: "a string", bool: "true/false"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        members = [arg for arg in args if arg is not type(None)]
        for arg in members[:-1]:  # the first member that takes the value (e.g. int | Literal["auto"])
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        if len(members) > 1 and get_origin(members[-1]) is Literal and value not in get_args(members[-1]):
            kinds = [_KIND.get(m, str(m)) for m in members[:-1]] + [repr(a) for a in get_args(members[-1])]
            raise ConfigError(f"{where}: expected {' or '.join(kinds)}, got {value!r}")
        return _coerce(value, members[-1], where)
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
