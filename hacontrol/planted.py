"""Faults planted on purpose, so the chaos suite can show that its checkers catch them.

Off unless a server is started with `--plant NAME`, and refused even then unless the
environment says this is a test (`HACONTROL_ALLOW_PLANTED_FAULTS=1`). Never enable these on
a cluster that holds anything of value.
"""

from __future__ import annotations

import os

STALE_READ = "stale-read"  # followers answer "linearizable" reads from local state
QUOTA_SKIP = "quota-skip"  # followers skip the quota check when applying
EARLY_ACK = "early-ack"  # writes are acknowledged before their entry commits

PLANTS = (STALE_READ, QUOTA_SKIP, EARLY_ACK)
ALLOW_ENV = "HACONTROL_ALLOW_PLANTED_FAULTS"


class PlantRefused(SystemExit):
    pass


def check_plant(name: str | None) -> str | None:
    if not name:
        return None
    if name not in PLANTS:
        raise PlantRefused(f"--plant {name!r}: unknown; one of {', '.join(PLANTS)}")
    if os.environ.get(ALLOW_ENV) != "1":
        raise PlantRefused(f"--plant {name} is a test-only fault and is refused outside tests "
                           f"(set {ALLOW_ENV}=1 in a test environment)")
    return name
