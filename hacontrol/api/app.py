"""The admin API: JSON over HTTP on every replica.

Writes become commands proposed through the local replica (pysyncobj carries a follower's
command to the leader); reads are linearizable by default. The routes live in `routes.py`
(core resources), `ops_routes.py` (operations) and `agent_routes.py` (the agents' sync);
they reach the replica through the protocols of `backend.py`, and every failure they raise
is answered in `errors.py`.
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from hacontrol.observe.metrics import ServerMetrics
from hacontrol.scheduler.leader_state import Leadership

from . import (
    acl_routes,
    agent_routes,
    alert_routes,
    members,
    membership_routes,
    metrics_routes,
    openapi,
    ops_routes,
    routes,
    scaling_routes,
    service_routes,
    snapshot_routes,
    ui,
)
from .auth import acl_middleware
from .backend import Cluster, Store
from .errors import error_middleware
from .limits import LimitedStore, Limits
from .peer import peer_role_middleware
from .request import (
    ACL_CONFIGURED,
    AGENT_TLS,
    CLUSTER,
    LEADERSHIP,
    MAX_BODY,
    STOPPING,
    STORE,
    TOKEN,
)


def build_app(store: Store, cluster: Cluster, leadership: Leadership,
              token: str, limits: Limits | None = None, *,
              bootstrap_token: bool = False,
              agent_tls: ssl.SSLContext | None = None,
              metrics: ServerMetrics | None = None,
              membership: membership_routes.Members | None = None) -> web.Application:
    """The API of one replica. `token`: the credential the controllers present to agents
    (requests are authorised against the replicated ACL tables, never against it);
    `limits`: caps on bodies and table sizes; `bootstrap_token`: this replica was given a
    token to bootstrap with, and is ready only once it is applied; `agent_tls`: the client
    context for calls to agents (mutual TLS, the agent's role checked), None for plain HTTP;
    `metrics`: the replica's instruments (a registry of this app's own when not given).
    `membership`: adds and removes replicas (None: every membership route answers 503)."""
    limits = limits or Limits()
    metrics = metrics if metrics is not None else ServerMetrics()
    app = web.Application(middlewares=[metrics_routes.metrics_middleware(metrics),
                                       error_middleware, peer_role_middleware(),
                                       acl_middleware()],
                          client_max_size=limits.max_body_bytes)
    app[MAX_BODY] = limits.max_body_bytes
    app[STORE] = LimitedStore(store, limits)
    app[CLUSTER] = cluster
    app[LEADERSHIP] = leadership
    app[TOKEN] = token
    app[ACL_CONFIGURED] = bootstrap_token
    app[AGENT_TLS] = agent_tls
    app[STOPPING] = asyncio.Event()

    async def stopping(app: web.Application) -> None:
        app[STOPPING].set()
    app.on_shutdown.append(stopping)
    routes.register(app)
    agent_routes.register(app)
    acl_routes.register(app)
    ops_routes.register(app)
    service_routes.register(app)
    metrics_routes.register(app, metrics)
    members.register(app)
    snapshot_routes.register(app)
    scaling_routes.register(app)
    membership_routes.register(app, membership)
    alert_routes.register(app)
    ui.register(app)
    openapi.register(app)  # documents every route, whenever it was registered
    return app
