"""Dataclass <-> dict conversion with strict type checking and dotted overrides."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

__all__ = ["ConfigError", "apply_overrides", "from_dict", "load_config", "plain", "to_dict"]

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a (nested) dataclass instance to plain JSON-compatible data."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")
    return plain(dataclasses.asdict(cfg))


def plain(x: Any) -> Any:
    """Nested dicts/lists/tuples/paths as JSON-compatible data (tuples -> lists, paths -> str)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _removed_key_error(cls: Any, key: str, dotted: str) -> ConfigError | None:
    """The error for a key that ``cls`` no longer has, naming its replacement, or None.

    A config dataclass lists retired keys as ``__removed_keys__ = MappingProxyType({key: hint})``
    (hint: what to use instead), so an old config file fails with that hint instead of a bare
    "unknown key".
    """
    hint = (getattr(cls, "__removed_keys__", None) or {}).get(key)
    return None if hint is None else ConfigError(f"config key {dotted!r} was removed: {hint}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert where the conversion is lossless."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = get_args(tp) or (Any, Any)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: unsupported type {tp} for value {value!r}")


def from_dict(cls: type[C], data: Mapping[str, Any], *, prefix: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ``ConfigError``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        removed = _removed_key_error(cls, key, prefix + key)
        if removed is not None:
            raise removed
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys here: "
            + ", ".join(prefix + k for k in sorted(fields))
        )
    kwargs = {name: _coerce(v, hints[name], prefix + name) for name, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None
    return obj


def _parse_value(text: str) -> Any:
    # YAML's safe loader gives ints, floats, bools, null, lists ([1,2]) and strings; nothing runs.
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; users mean a number
        for conv in (int, float):
            try:
                return conv(value)
            except ValueError:
                pass
    return value


def _is_free_mapping(tp: Any) -> bool:
    """A ``dict[str, ...]`` field: its keys are free (validated later by whoever consumes it)."""
    tp = _strip_optional(tp)
    return tp is dict or get_origin(tp) is dict


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def apply_overrides(cfg: C, overrides: Iterable[str]) -> C:
    """Return a copy of ``cfg`` with ``a.b=value`` overrides applied and validated.

    Keys are checked against the dataclass fields (an unknown key lists the valid ones), except
    below a ``dict`` field (e.g. a method's free ``options``), whose keys the consumer validates.
    """
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node: dict[str, Any] = data
        tp: Any = type(cfg)
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            here = ".".join(parts[: i + 1])
            if tp is not None and dataclasses.is_dataclass(tp):
                hints = _field_types(tp)
                if p not in hints:
                    removed = _removed_key_error(tp, p, here)
                    if removed is not None:
                        raise removed
                    prefix = ".".join(parts[:i])
                    valid = ", ".join((prefix + "." if prefix else "") + k for k in sorted(hints))
                    raise ConfigError(f"unknown config key {here!r}; valid keys here: {valid}")
                field_tp = _strip_optional(hints[p])
                if not last and not (dataclasses.is_dataclass(field_tp) or _is_free_mapping(field_tp)):
                    raise ConfigError(f"config key {here!r} is a value, not a section")
                tp = field_tp if dataclasses.is_dataclass(field_tp) else None
            if last:
                node[p] = _parse_value(text)
            else:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
    return from_dict(type(cfg), data)


def load_config(cls: type[C], file: str | Path | None = None, overrides: Iterable[str] = ()) -> C:
    """Defaults of ``cls``, updated by a YAML/JSON ``file`` (if given), then by ``overrides``."""
    cfg = cls()
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            kind = "JSON" if path.suffix == ".json" else "YAML"
            raise ConfigError(f"{path}: not valid {kind}: {e}") from None
        if isinstance(data, dict) and "config" in data and "provenance" in data:
            data = data["config"]  # a run folder's config.json can be reused as a config file
        merged = _merge(to_dict(cfg), data or {})
        cfg = from_dict(cls, merged)
    return apply_overrides(cfg, overrides)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out
