"""``hacontrol operator snapshot``."""

from __future__ import annotations

from hacontrol.cli.commands.base import SubParsers


def register(sub: SubParsers) -> None:
    """Adds the ``snapshot`` subcommands under ``operator`` (none yet)."""
