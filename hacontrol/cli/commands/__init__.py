"""One module per command group, as Nomad's ``command/``.

Each group module has ``register(sub)``, which adds its subparsers and sets on each one
either ``handler`` (a client command: ``(args, client, out) -> exit code``, run with one
shared `Client`) or ``run`` (a daemon command: ``(args) -> exit code``). ``cli/main.py``
builds the top-level parser from `groups()`, in this order, and dispatches.

The groups are imported when asked for, not with this package: `hacontrol agent` imports
its own group only (`group("agent")`), since every other group's modules (YAML job files,
backups, output formatting) would stay in its memory for as long as it runs.
"""

from __future__ import annotations

import importlib

from hacontrol.cli.commands.base import CommandGroup

GROUP_NAMES: tuple[str, ...] = (
    "server", "agent", "dev", "status", "job", "allocation", "service", "node", "events",
    "namespace", "acl", "tls", "operator", "alert",
)


def group(name: str) -> CommandGroup:
    """The command group module `name` (one of `GROUP_NAMES`), imported now."""
    if name not in GROUP_NAMES:
        raise KeyError(name)
    module: CommandGroup = importlib.import_module(f"hacontrol.cli.commands.{name}")
    return module


def groups() -> tuple[CommandGroup, ...]:
    """Every command group, in the order the top-level help lists them."""
    return tuple(group(name) for name in GROUP_NAMES)
