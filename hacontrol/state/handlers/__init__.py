"""One handler per log operation, grouped by what they change.

A handler gets the `Applying` context and the command's arguments, checks the arguments
(through `validate`) and everything else it depends on before changing anything, and
returns the result's data or raises `Rejection`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import commands as C
from ..context import Applying, Result
from . import acl, alerts, allocations, deployments, jobs, namespaces, nodes, plans, restore

Handler = Callable[[Applying, dict[str, Any]], Result]


def noop(tx: Applying, args: dict[str, Any]) -> Result:
    return {}


HANDLERS: dict[str, Handler] = {
    C.NOOP: noop,
    C.NS_PUT: namespaces.put,
    C.JOB_PUT: jobs.put,
    C.JOB_SCALE: jobs.scale,
    C.JOB_DELETE: jobs.delete,
    C.JOB_REVERT: jobs.revert,
    C.NODE_REGISTER: nodes.register,
    C.NODE_STATUS: nodes.status,
    C.NODE_DRAIN: nodes.drain,
    C.PLAN: plans.apply_plan,
    C.ALLOC_UPDATE: allocations.update,
    C.MIGRATE: allocations.migrate,
    C.DEPLOY_STEP: deployments.step,
    C.ACL_BOOTSTRAP: acl.bootstrap,
    C.ACL_POLICY_PUT: acl.policy_put,
    C.ACL_POLICY_DELETE: acl.policy_delete,
    C.ACL_TOKEN_CREATE: acl.token_create,
    C.ACL_TOKEN_REVOKE: acl.token_revoke,
    C.NODE_CREDENTIAL: acl.node_credential,
    C.ACL_TOKEN_PRUNE: acl.token_prune,
    C.CONTROLLER_CREDENTIAL: acl.controller_credential,
    C.STATE_RESTORE: restore.restore,
    C.CLUSTER_CONFIG_PUT: alerts.config_put,
    C.ALERT_PUT: alerts.put,
    C.ALERT_DELETE: alerts.delete,
    C.ALERT_TRANSITION: alerts.transition,
    C.ALERT_DELIVERY: alerts.delivery,
}
