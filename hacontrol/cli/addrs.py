"""The API addresses a command line names: the default one, and a comma-separated list.

Apart from `client.py` (which re-exports both) so that a daemon's flags (`hacontrol agent
--controllers`) are parsed without importing the client and its HTTP transport.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_ADDR = "http://127.0.0.1:8101"


def split_addrs(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    return [p.strip() for p in parts if p.strip()]
