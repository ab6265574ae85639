"""Load a study configuration: the YAML file, ``--demo`` settings and ``--set key=value`` overrides.

Precedence: built-in defaults < the YAML file < ``--demo`` settings < command-line flags and
``--set key=value``, in their order. Every error is a :class:`ConfigError` whose one-line message names
the dotted key path and where its value came from: the file, or the flag / ``--set`` that gave it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from models.families import FAMILIES
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


Override = str | tuple[str, str]
"""A ``key=value`` string (``--set``), or ``(flag, "key=value")`` for a command-line flag that sets a key."""


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Sequence[Override] = (),
    extra: dict[str, Any] | None = None,
    extra_label: str = "--demo",
) -> Config:
    """Load and validate a config.

    Args:
        path: YAML file; ``None`` uses the built-in defaults only.
        overrides: ``key=value`` strings (``--set``) or ``(flag, "key=value")`` pairs, applied last and
            in order; values parse as YAML.
        extra: a nested dict merged after the file and before ``overrides`` (used by ``--demo``).
        extra_label: what ``extra`` is called in error messages.

    Raises:
        ConfigError: with the dotted key path and its source (the file, ``extra_label``, the flag or
            ``--set``) in the message.
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
    origins: list[tuple[str, str]] = []  # (dotted key, what set it) for keys not from the file, in order
    if extra:
        raw = _deep_merge(raw, extra)
        origins += [(key, extra_label) for key in _dotted_keys(extra)]
    for item in overrides:
        label, text = item if isinstance(item, tuple) else (f"--set {item}", item)
        raw = apply_override(raw, text)
        origins.append((".".join(_split_key(text.partition("=")[0].strip())), label))
    try:
        return config_from_dict(raw, source=source)
    except ConfigError as e:
        raise _blame(e, source, origins) from None


def _dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Every leaf key of a nested dict, dotted (a search-space entry is one leaf)."""
    out: list[str] = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not prefix.startswith("search_space."):
            out.extend(_dotted_keys(v, key + "."))
        else:
            out.append(key)
    return out


def _blame(error: ConfigError, source: str, origins: list[tuple[str, str]]) -> ConfigError:
    """The error with its source replaced by the flag or ``--set`` that gave the key its value.

    Every message of this package reads ``<source>: <dotted.key>…``. An override counts when it set
    that key, a part of it (``search_space.x.max`` for ``search_space.x``) or its whole section; the
    last such override wins, as its value did.
    """
    text = str(error)
    head = f"{source}: "
    match = re.match(r"[\w.\-]+", text[len(head):]) if text.startswith(head) else None
    if match is None:
        return error
    named = match.group().rstrip(".")
    for key, label in reversed(origins):
        if key == named or key.startswith(named + ".") or named.startswith(key + "."):
            return ConfigError(f"{label}: {text[len(head):]}")
    return error


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
    """Split a dotted key; under search_space the hyperparameter name may itself contain a dot (``augment.<name>``,
    ``<family>.<option>``)."""
    parts = key.split(".")
    if parts[0] == "search_space" and len(parts) >= 3 and (parts[1] == "augment" or parts[1] in FAMILIES):
        return ["search_space", f"{parts[1]}.{parts[2]}", *parts[3:]]
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
    an omitted ``num_layers`` fixes the reference depth, clipped the same way. A depth below the
    reference's is a warning that says why (the user sees it when the run starts), else INFO.
    Explicit numbers are left alone: one that cannot fit stays an error (``validate_config``).
    """
    limit = max_feasible_layers(image_size)
    reference = HYPERPARAMETER_DEFAULTS["num_layers"]
    out = dict(space_raw)
    spec = out.get("num_layers")
    if isinstance(spec, dict) and spec.get("max") == AUTO:
        fitted = min(limit, reference)
        out["num_layers"] = {**spec, "max": fitted}
        if isinstance(spec.get("min"), int) and not isinstance(spec.get("min"), bool) and spec["min"] > fitted:
            raise ConfigError(
                f"{source}: search_space.num_layers: min {spec['min']} cannot fit image_size {image_size} "
                f"(the deepest that fits is {fitted}); lower min"
            )
        log = logger.warning if fitted < reference else logger.info
        log("search_space.num_layers: max auto -> %d, the deepest UNet that fits data.image_size %d%s",
            fitted, image_size, _why_shallow(image_size) if fitted < reference else "")
    elif spec is None and reference > limit:
        out["num_layers"] = {"value": limit}
        logger.warning("search_space.num_layers is not set and the reference depth %d does not fit data.image_size "
                       "%d: num_layers is fixed to %d%s. Set search_space.num_layers to choose",
                       reference, image_size, limit, _why_shallow(image_size))
    for name, entry in out.items():  # num_layers.max is resolved above; any other 'auto' is a mistake
        for key in ("min", "max"):
            if isinstance(entry, dict) and entry.get(key) == AUTO:
                raise ConfigError(f"{source}: search_space.{name}.{key}: 'auto' is accepted only for num_layers.max")
    return out


def _why_shallow(image_size: int) -> str:
    """Why an image allows fewer levels than the reference's 8, and sizes nearby that allow more."""
    lower = image_size // 32 * 32
    nearby = [f"{s} px fits {max_feasible_layers(s)}" for s in (lower, lower + 32) if s >= 32 and s != image_size]
    return (f" (each level halves the image evenly and the bottleneck needs at least 4 px, so {image_size} px "
            f"fits {max_feasible_layers(image_size)} levels; " + ", ".join(nearby) + ")")


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
    """``value`` as the annotation ``tp`` wants it (unions, literals, nested dataclasses, scalars)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, get_args(tp), where)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value if value is not None else {}, where)
    if tp in (bool, int, float, str):
        return _coerce_scalar(value, tp, where)
    return value


def _coerce_union(value: Any, args: tuple[Any, ...], where: str) -> Any:
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


def _coerce_scalar(value: Any, tp: type, where: str) -> Any:
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
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value
    return value
