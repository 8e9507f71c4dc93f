"""Typed dataclass configs: build from plain data, dump back, merge, dotted overrides, YAML presets.

Component configs are ordinary ``@dataclass`` classes owned by their modules; this file holds only
the generic machinery, so no component needs a hand-written parser and every error names the full
dotted path of the offending key (``model.text_encoder.width``), the type it wanted and what it got.

Rules (why they are strict: a config that silently accepts a typo trains the wrong model for hours):

* Values are checked against the field annotation (string annotations from
  ``from __future__ import annotations`` are resolved with ``typing.get_type_hints``). ``bool`` is
  never accepted for ``int``/``float`` and ``0``/``1`` never for ``bool``; ``int`` widens to
  ``float``; an integral float is accepted for ``int``. Strings such as ``"1e-3"``, which YAML 1.1
  (PyYAML) leaves untyped, are read as numbers for ``float``/``int`` fields. ``Path`` comes from
  ``str``; tuples and lists from YAML lists; ``Literal`` values must be one of the listed ones.
* A field annotated ``A | B | C`` whose members are dataclasses with a ``kind: str = "<name>"``
  field is a discriminated union: the ``kind`` key of the data picks the member. Without ``kind``,
  the class of the current value (merging) or of the field default (building) is kept, else the
  first member is used.
* Unknown keys are errors with the nearest sibling suggested, or the same key elsewhere in the tree.
* ``ValueError``/``TypeError`` from a dataclass ``__post_init__`` become ``ConfigError`` with the path.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")
_NONE = type(None)
_MISSING = dataclasses.MISSING
# Scientific notation that YAML 1.1 does not type (it needs a dot and a signed exponent: 1.0e-3).
_SCI = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$")

__all__ = ["ConfigError", "apply_overrides", "config_hash", "from_dict", "load_yaml_config", "merge", "to_dict"]


class ConfigError(ValueError):
    """A config value or key is invalid; the message starts with (or quotes) its full dotted path."""


# ----------------------------------------------------------------------------------------------
# public API


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build ``cls`` from a nested mapping; missing fields take their defaults, required ones must be given.

    ``cls`` is normally a dataclass, but any supported annotation works (e.g. a union of configs).
    ``path`` is the dotted prefix used in error messages when ``data`` is part of a larger tree.
    """
    return _convert(cls, data, path, _Ctx(cls, path))


def to_dict(cfg: Any) -> dict:
    """The config as plain JSON/YAML-safe data (tuples -> lists, Path -> str, enums -> values), ``kind`` included."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def merge(cfg: T, data: Mapping[str, Any], path: str = "") -> T:
    """A new config with the nested mapping ``data`` applied over ``cfg`` (fields not mentioned are kept).

    Nested dataclasses are merged recursively; a changed ``kind`` rebuilds that member from its own
    defaults plus the given keys. ``dict`` fields are updated key by key (like OmegaConf), every other
    value is replaced. ``cfg`` itself is never modified (``dataclasses.replace``, frozen or not).
    """
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"merge expects a dataclass instance, got {type(cfg).__name__}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(path)}: expected a mapping to merge, got {_desc(data)}")
    return _merge_value(type(cfg), cfg, data, path, _Ctx(type(cfg), path))


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Apply ``"a.b.c=value"`` overrides in order (later ones win) and return the new config.

    The value is parsed with ``yaml.safe_load`` (``256``, ``1e-3``, ``true``, ``[1, 2]``, ``null``,
    ``{kind: vit, width: 64}``), except for ``str``/``Path`` fields (and ``Literal`` ones listing the
    raw text), which take the text verbatim so ``name=2024`` or ``name=no`` stay strings. A dotted
    key that names a nested config needs a mapping value; ``a.b.kind=x`` switches a union member.
    """
    if isinstance(overrides, str):
        raise TypeError("apply_overrides expects a sequence of 'key=value' strings, not one string")
    # All overrides are collected into one nested mapping and merged once, so validation sees the
    # final values: `train.max_steps=30 train.warmup_steps=5` must not fail on the intermediate
    # state "max_steps=30 with the preset's warmup_steps=100".
    combined: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"malformed override {item!r}: expected 'dotted.key=value'")
        value = _parse_override_value(cfg, parts, raw.strip(), item)
        for part in reversed(parts):
            value = {part: value}
        _deep_update(combined, value)
    return merge(cfg, combined) if combined else cfg


def _deep_update(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Nested dict update where later values win and sibling keys of nested mappings are kept."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value


def load_yaml_config(
    path: str | os.PathLike[str],
    presets: Mapping[str, Callable[[], T]] | Callable[[str], T],
    *,
    default: Callable[[], T] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Load an experiment YAML: a top-level ``preset: <name>`` plus nested overrides of its fields.

    ``presets`` is a mapping or a ``vlp.registry.Registry`` of zero-argument preset functions, or a
    function ``name -> config`` that raises ``KeyError`` (``RegistryError`` is one) for unknown names.
    A YAML without ``preset`` starts from ``default()`` (the config class itself works when all its
    fields have defaults); with neither, it is an error. ``preset`` is therefore reserved at the top
    level. ``overrides`` (``--set`` style strings) are applied after the YAML. Errors are prefixed
    with the file name.
    """
    file = os.fspath(path)
    try:
        with open(file, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {_desc(data)}")
    data = dict(data)
    name = data.pop("preset", None)
    try:
        if name is not None:
            base = _lookup_preset(presets, name)
        elif default is not None:
            base = default()
        else:
            raise ConfigError("no 'preset' key and no default config given")
        return apply_overrides(merge(base, data), overrides)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from exc


def config_hash(cfg: Any, length: int = 12) -> str:
    """Short stable hex digest of ``to_dict(cfg)`` (sorted keys), for cache keys and run directories."""
    plain = _plain(cfg) if isinstance(cfg, Mapping) else to_dict(cfg)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ----------------------------------------------------------------------------------------------
# conversion


@dataclasses.dataclass(frozen=True)
class _Ctx:
    """The root of the tree being built, for "did you mean <same key elsewhere>" suggestions."""

    root: Any
    prefix: str


def _convert(tp: Any, value: Any, path: str, ctx: _Ctx, default: Callable[[], Any] | None = None) -> Any:
    """Check/coerce ``value`` against annotation ``tp``; ``default`` lazily gives the field's current/default value."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return _convert_union(tp, args, value, path, ctx, default)
    if value is None and tp is not _NONE:
        _fail(path, tp, value)
    if tp is _NONE:
        return value if value is None else _fail(path, tp, value)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{_where(path)}: expected one of {', '.join(map(repr, args))}, got {_desc(value)}{hint}")
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass([tp], value, path, ctx, default)
    if tp is bool:
        return value if isinstance(value, bool) else _fail(path, tp, value)
    if tp is int or tp is float:
        return _convert_number(tp, value, path)
    if tp is str:
        return value if isinstance(value, str) else _fail(path, tp, value)
    container = origin or tp
    if container in (tuple, list, Sequence, set, frozenset):
        return _convert_sequence(tp, container, args, value, path, ctx)
    if container in (dict, Mapping):
        if not isinstance(value, Mapping):
            _fail(path, tp, value)
        kt, vt = args or (Any, Any)
        return {_convert(kt, k, path, ctx): _convert(vt, v, _join(path, str(k)), ctx) for k, v in value.items()}
    if _is_class(tp, PurePath):
        return tp(value) if isinstance(value, (str, os.PathLike)) else _fail(path, tp, value)
    if _is_class(tp, enum.Enum):
        return _convert_enum(tp, value, path)
    if _is_class(tp, object):  # any other plain class: instances only
        return value if isinstance(value, tp) else _fail(path, tp, value)
    raise TypeError(f"{_where(path)}: unsupported annotation {tp!r}")


def _is_class(tp: Any, base: type) -> bool:
    """``issubclass`` that is False for generic aliases (``list[int]`` passes ``isinstance(_, type)`` on 3.10)."""
    return typing.get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, base)


def _convert_number(tp: type, value: Any, path: str) -> Any:
    if isinstance(value, str) and _SCI.match(value.strip()):
        value = float(value.replace("_", ""))  # YAML 1.1 leaves 1e-3 as a string
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, tp, value)
    if tp is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        _fail(path, tp, value)
    return int(value)


def _convert_enum(tp: type[enum.Enum], value: Any, path: str) -> Any:
    if isinstance(value, tp):
        return value
    for member in tp:
        if member.value == value or member.name == value:
            return member
    raise ConfigError(f"{_where(path)}: expected one of {', '.join(repr(m.value) for m in tp)}, got {_desc(value)}")


def _convert_sequence(tp: Any, container: Any, args: tuple, value: Any, path: str, ctx: _Ctx) -> Any:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, set, frozenset)):
        _fail(path, tp, value)
    items = list(value)
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise ConfigError(f"{_where(path)}: expected {_tname(tp)} ({len(args)} items), got {_desc(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]", ctx) for i, (a, v) in enumerate(zip(args, items)))
    elem = args[0] if args else Any
    out = [_convert(elem, v, f"{path}[{i}]", ctx) for i, v in enumerate(items)]
    return {tuple: tuple, set: set, frozenset: frozenset}.get(container, list)(out)


def _convert_union(tp: Any, args: tuple, value: Any, path: str, ctx: _Ctx, default: Callable[[], Any] | None) -> Any:
    members = [a for a in args if a is not _NONE]
    if value is None:
        return None if len(members) < len(args) else _fail(path, tp, value)
    if all(dataclasses.is_dataclass(m) for m in members) and _kind_map(members) is not None:
        return _convert_dataclass(members, value, path, ctx, default)
    if len(members) == 1 and (dataclasses.is_dataclass(members[0]) or typing.get_origin(members[0])):
        return _convert(members[0], value, path, ctx, default)  # Optional[config]: the inner error is precise
    for m in members:  # exact type first, so `int | float` keeps 2.0 a float and `float | str` keeps "a"
        if _is_class(m, object) and (type(value) is m or (dataclasses.is_dataclass(m) and isinstance(value, m))):
            return value
    for m in members:
        try:
            return _convert(m, value, path, ctx, default)
        except ConfigError:
            continue
    _fail(path, tp, value)


def _kind_map(members: Sequence[type]) -> dict[str, type] | None:
    """``{kind: class}`` when every member has a ``kind: str`` field with a distinct string default."""
    kinds: dict[str, type] = {}
    for m in members:
        f = next((f for f in dataclasses.fields(m) if f.name == "kind"), None)
        if f is None or not isinstance(f.default, str) or f.default in kinds:
            return None
        kinds[f.default] = m
    return kinds


def _convert_dataclass(members: list, value: Any, path: str, ctx: _Ctx, default: Callable[[], Any] | None) -> Any:
    if any(isinstance(value, m) for m in members):
        return value
    expected = " | ".join(m.__name__ for m in members)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{_where(path)}: expected a mapping for {expected}, got {_desc(value)}")
    kinds = _kind_map(members)
    if kinds and "kind" in value:
        cls = _select_kind(kinds, value["kind"], path)
    else:
        current = default() if default is not None else None
        cls = type(current) if type(current) in members else members[0]
    return _build(cls, value, path, ctx)


def _select_kind(kinds: dict[str, type], kind: Any, path: str) -> type:
    where = _join(path, "kind")
    if not isinstance(kind, str):
        _fail(where, str, kind)
    if kind not in kinds:
        near = difflib.get_close_matches(kind, list(kinds), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"{where}: unknown kind {kind!r}; {hint}valid kinds: {', '.join(map(repr, kinds))}")
    return kinds[kind]


def _build(cls: type, data: Mapping, path: str, ctx: _Ctx, base: Any = None) -> Any:
    """Construct ``cls`` from ``data`` (or ``replace`` ``base`` with it), checking keys and wrapping errors."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown key {_join(path, str(key))!r}{_suggest(str(key), cls, list(fields), path, ctx)}")
    kwargs = {}
    for name, value in data.items():
        sub = _join(path, name)
        if base is not None:
            kwargs[name] = _merge_value(hints[name], getattr(base, name), value, sub, ctx)
        else:
            kwargs[name] = _convert(hints[name], value, sub, ctx, functools.partial(_field_default, fields[name]))
    if base is None:
        missing = [_join(path, n) for n, f in fields.items() if n not in data and _required(f)]
        if missing:
            s = "s" if len(missing) > 1 else ""
            raise ConfigError(f"missing required key{s} {', '.join(map(repr, missing))}")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{_where(path)}: invalid {cls.__name__}: {exc}") from exc


def _field_default(f: dataclasses.Field) -> Any:
    """The field's default value (calling its factory), or None when it has none."""
    if f.default is not _MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not _MISSING else None


def _required(f: dataclasses.Field) -> bool:
    return f.default is _MISSING and f.default_factory is _MISSING


def _merge_value(tp: Any, current: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    if isinstance(value, Mapping) and dataclasses.is_dataclass(current) and not isinstance(current, type):
        members = [m for m in _members(tp) if dataclasses.is_dataclass(m)] or [type(current)]
        kinds = _kind_map(members)
        if kinds and "kind" in value and value["kind"] != getattr(current, "kind", None):
            return _build(_select_kind(kinds, value["kind"], path), value, path, ctx)
        return _build(type(current), value, path, ctx, base=current)
    dict_args = next((typing.get_args(m) for m in _members(tp) if (typing.get_origin(m) or m) in (dict, Mapping)), None)
    if isinstance(value, Mapping) and isinstance(current, dict) and dict_args is not None:
        kt, vt = dict_args or (Any, Any)
        out = dict(current)
        for k, v in value.items():
            key = _convert(kt, k, path, ctx)
            out[key] = _merge_value(vt, out.get(key), v, _join(path, str(k)), ctx)
        return out
    return _convert(tp, value, path, ctx, lambda: current)


def _members(tp: Any) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc


# ----------------------------------------------------------------------------------------------
# messages


def _suggest(key: str, cls: type, siblings: list[str], path: str, ctx: _Ctx) -> str:
    """Another union member's field; else the nearest sibling; else the same (or a near) leaf elsewhere; else the keys."""
    full = _join(path, key)
    tree = _tree(ctx.root, ctx.prefix, ())
    owners = [getattr(o, "kind", None) for p, _, o in tree if p == full]
    if any(isinstance(k, str) for k in owners):  # valid for another member of the same union
        this = getattr(cls, "kind", None)
        return f"; {key!r} is a field of kind {', '.join(repr(k) for k in owners if k)}, not {this!r}"
    near = difflib.get_close_matches(key, siblings, n=1)
    if near:
        return f"; did you mean {_join(path, near[0])!r}?"
    elsewhere = sorted({p for p, leaf, _ in tree if leaf == key})
    if not elsewhere:
        near = difflib.get_close_matches(key, list({leaf for _, leaf, _ in tree}), n=3, cutoff=0.8)
        elsewhere = sorted({p for p, leaf, _ in tree if leaf in near})
    if elsewhere:
        return f"; did you mean {' or '.join(map(repr, elsewhere[:3]))}?"
    return f"; valid keys: {', '.join(sorted(siblings))}"


def _tree(tp: Any, prefix: str, seen: tuple) -> list[tuple[str, str, type]]:
    """Every ``(dotted path, leaf name, owning class)`` reachable through dataclass fields and unions."""
    out = []
    for cls in (m for m in _members(tp) if dataclasses.is_dataclass(m) and m not in seen):
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                sub = _join(prefix, f.name)
                out.append((sub, f.name, cls))
                out.extend(_tree(hints[f.name], sub, (*seen, cls)))
    return out


def _where(path: str) -> str:
    return path or "<root>"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _desc(value: Any) -> str:
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:77] + '...'} ({type(value).__name__})"


def _tname(tp: Any) -> str:
    if tp is _NONE or tp is None:
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " | ".join(_tname(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _tname(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, tp: Any, value: Any) -> Any:
    raise ConfigError(f"{_where(path)}: expected {_tname(tp)}, got {_desc(value)}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in (sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    return value


# ----------------------------------------------------------------------------------------------
# overrides and presets


def _parse_override_value(cfg: Any, parts: list[str], raw: str, item: str) -> Any:
    target = _target_type(cfg, parts)
    members = [m for m in _members(target) if m is not _NONE]
    if len(members) == 1 and raw not in ("", "~", "null", "Null", "NULL"):
        target = members[0]  # Optional[str]: text unless it spells null
    if raw[:1] not in ("'", '"') and target is not None:
        if target is str or _is_class(target, PurePath):
            return raw
        if typing.get_origin(target) is Literal and raw in typing.get_args(target):
            return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value {raw!r}: {exc}") from exc


def _target_type(cfg: Any, parts: list[str]) -> Any:
    """The annotation of the field ``parts`` points at, when it can be followed through current values."""
    obj, tp = cfg, None
    for part in parts:
        if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
            return None
        hints = _hints(type(obj))
        if part not in hints:
            return None
        obj, tp = getattr(obj, part, None), hints[part]
    return tp


def _lookup_preset(presets: Any, name: Any) -> Any:
    if not isinstance(name, str):
        raise ConfigError(f"preset: expected str, got {_desc(name)}")
    names = presets.names() if hasattr(presets, "names") else list(presets) if isinstance(presets, Mapping) else None
    if names is not None:
        if name not in names:
            near = difflib.get_close_matches(name, list(names), n=3)
            hint = f"did you mean {' or '.join(map(repr, near))}? " if near else ""
            raise ConfigError(f"unknown preset {name!r}; {hint}available: {', '.join(sorted(names))}")
        factory = presets.get(name) if hasattr(presets, "names") else presets[name]
        cfg = factory()
    else:
        try:
            cfg = presets(name)
        except KeyError as exc:
            raise ConfigError(f"preset: {exc}") from exc  # RegistryError already names the choices
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"preset {name!r} returned {type(cfg).__name__}, not a config dataclass")
    return cfg
