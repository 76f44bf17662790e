"""Parse a configuration section (a TOML table) into a dataclass, so each default lives once.

A config type is a dataclass whose field defaults are the defaults; ``parse_section`` passes on
only the keys the section has (``msgspec.convert``), so a missing key takes the field's default
and changing that default changes what every parser returns. An unknown key, or a value of the
wrong type, is a ``ConfigError`` naming the key. Pure: no I/O (files are read by
``core.config.read_toml``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from core.errors import ConfigError

__all__ = ["parse_section", "section_keys"]

T = TypeVar("T")


def section_keys(cls: type) -> frozenset[str]:
    """The keys a section of ``cls`` may hold: its init fields."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init)


def parse_section(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    where: str,
    names: Mapping[str, str] | None = None,
    ignore: Iterable[str] = (),
) -> T:
    """Build ``cls`` from the keys of ``data`` (missing keys: the field defaults).

    Args:
        cls: a dataclass; its ``__post_init__`` runs (and may raise its own ``ConfigError``).
        data: the section, keyed by field name.
        where: how the section is named in errors, e.g. ``"[models.churn.monitoring]"``.
        names: field name -> how the key is named in errors, when it differs (``sql_threads`` ->
            ``"[sql] threads"``); a named key is shown without ``where``.
        ignore: keys read by someone else: allowed, not passed on.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type, naming the key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table, got {data!r}")
    skip = set(ignore)
    known = section_keys(cls)
    unknown = sorted(str(k) for k in set(data) - known - skip)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known | skip))}")
    try:
        return msgspec.convert({k: v for k, v in data.items() if k not in skip}, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(_message(str(exc), data, where, names or {})) from None


_TYPES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false", "array": "a list",
          "object": "a table", "null": "none"}


def _message(text: str, data: Mapping[str, Any], where: str, names: Mapping[str, str]) -> str:
    """``Expected `int`, got `str` - at `$.threads``` -> ``[sql] threads must be an integer, got 'two'``."""
    what, _, at = text.partition(" - at `$")
    if not at:  # raised by the dataclass' own checks (__post_init__): already says what is wrong
        return text
    path = at.rstrip("`").lstrip(".")
    key = path.split(".")[0].split("[")[0]
    shown = names[key] + path[len(key):] if key in names else f"{where} {path}".strip()
    if not what.startswith("Expected "):
        return f"{shown}: {what}"
    expected = what.removeprefix("Expected ").split(", got")[0].replace("`", "")
    expected = " or ".join(_TYPES.get(t.strip(), t.strip()) for t in expected.split("|"))
    got = f"{data[key]!r}" if path == key and key in data else what.split(", got ")[-1].replace("`", "")
    return f"{shown} must be {expected}, got {got}"
