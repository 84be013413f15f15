"""``hacontrol operator raft``."""

from __future__ import annotations

from hacontrol.cli.commands.base import SubParsers


def register(sub: SubParsers) -> None:
    """Adds the ``raft`` subcommands under ``operator`` (none yet)."""
