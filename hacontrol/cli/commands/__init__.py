"""One module per command group, as Nomad's ``command/``.

Each group module has ``register(sub)``, which adds its subparsers and sets on each one
either ``handler`` (a client command: ``(args, client, out) -> exit code``, run with one
shared `Client`) or ``run`` (a daemon command: ``(args) -> exit code``). ``cli/main.py``
builds the top-level parser from `GROUPS`, in this order, and dispatches.
"""

from __future__ import annotations

from hacontrol.cli.commands import (
    acl,
    agent,
    alert,
    allocation,
    dev,
    events,
    job,
    namespace,
    node,
    operator,
    server,
    service,
    status,
    tls,
)
from hacontrol.cli.commands.base import CommandGroup

GROUPS: tuple[CommandGroup, ...] = (
    server, agent, dev, status, job, allocation, service, node, events, namespace, acl, tls,
    operator, alert,
)
