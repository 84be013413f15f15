"""Small checks for untrusted values; each raises `Rejection` naming the field."""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import invalid

# Always used with `fullmatch`: `$` also matches before a trailing newline, so `match` with
# `^...$` accepted "web\n" (and made allocation ids such as "web\n-000001").
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?")
# Allocation ids are `<job name>-<sequence>`; the agent names a directory after one, so the
# character set leaves no room for "/", "." or ".." to escape its data directory.
ALLOC_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,199}")
# C0, DEL and C1: never part of a name, a label or an environment variable's name.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise invalid(field, "must be 1-64 characters of a-z, 0-9, '-', '_' or '.', "
                             "starting and ending with a letter or digit")
    return value


def check_alloc_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ALLOC_ID_RE.fullmatch(value):
        raise invalid(field, "must be an allocation id")
    return value


def has_control(value: str) -> bool:
    return CONTROL_RE.search(value) is not None


def obj(value: Any, field: str) -> dict[str, Any]:
    """A map (None counts as an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(field, "must be an object")
    return value


def no_unknown(d: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for k in d:
        if k not in allowed:
            raise invalid(f"{prefix}{k}", "unknown field")


def number(value: Any, field: str, *, minimum: float = 0.0, maximum: float = 1e9,
           allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(field, "must be a number")
    if value < minimum or value > maximum or (not allow_zero and value == 0):
        raise invalid(field, f"must be between {minimum} and {maximum}"
                             + ("" if allow_zero else " and not zero"))
    return float(value)


def integer(value: Any, field: str, *, minimum: int = 0, maximum: int = 2**31) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if value < minimum or value > maximum:
        raise invalid(field, f"must be between {minimum} and {maximum}")
    return value


def optional_integer(value: Any, field: str, *, minimum: int = 0,
                     maximum: int = 2**31) -> int | None:
    return None if value is None else integer(value, field, minimum=minimum, maximum=maximum)


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def string(value: Any, field: str, *, max_len: int = 2000) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise invalid(field, "must be a short string")
    return value


def optional_string(value: Any, field: str, *, max_len: int = 2000) -> str | None:
    return None if value is None else string(value, field, max_len=max_len)


def port(value: Any, field: str) -> int:
    return integer(value, field, minimum=1, maximum=65535)


def argv(value: Any, field: str) -> list[str]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(a, str) and "\x00" not in a for a in value)):
        raise invalid(field, "must be a non-empty list of strings")
    return list(value)


def str_list(value: Any, field: str, *, max_items: int = 100_000) -> list[str]:
    if (not isinstance(value, list) or len(value) > max_items
            or not all(isinstance(v, str) for v in value)):
        raise invalid(field, "must be a list of strings")
    return list(value)


def str_map(raw: Any, field: str, *, max_items: int = 64) -> dict[str, str]:
    """A small map of short strings, sorted by key (equal maps encode equally)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > max_items:
        raise invalid(field, f"must be an object of at most {max_items} strings")
    for k, v in raw.items():
        if (not isinstance(k, str) or not isinstance(v, str) or len(k) > 128 or len(v) > 512
                or not k or has_control(k) or has_control(v)):
            raise invalid(f"{field}.{k}", "keys and values must be short strings without control characters")
    return dict(sorted(raw.items()))


def one_of(value: Any, choices: type[Any], field: str) -> Any:
    """A member of the `StrEnum` `choices`."""
    try:
        return choices(value)
    except (ValueError, TypeError):
        raise invalid(field, "must be one of " + ", ".join(c.value for c in choices)) from None
