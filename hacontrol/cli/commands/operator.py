"""``hacontrol operator``: the cluster's own machinery, as Nomad's ``operator`` commands.

Each subgroup lives in its own module (``operator_raft``: membership; ``operator_snapshot``:
backups; ``operator_config``: the replicated settings) and registers itself under
``operator`` here.
"""

from __future__ import annotations

from hacontrol.cli.commands import operator_config, operator_raft, operator_snapshot
from hacontrol.cli.commands.base import SubParsers


def register(sub: SubParsers) -> None:
    group = sub.add_parser("operator", help="membership, backups and settings of the "
                                                "controllers")
    inner = group.add_subparsers(dest="operator_command", metavar="SUBCOMMAND", required=True)
    operator_raft.register(inner)
    operator_snapshot.register(inner)
    operator_config.register(inner)
