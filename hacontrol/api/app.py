"""The admin API: JSON over HTTP on every replica.

Writes become commands proposed through the local replica (pysyncobj carries a follower's
command to the leader); reads are linearizable by default. The routes live in `routes.py`
(core resources), `ops_routes.py` (operations) and `agent_routes.py` (the agents' sync);
they reach the replica through the protocols of `backend.py`, and every failure they raise
is answered in `errors.py`.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from hacontrol.scheduler.leader_state import Leadership

from . import agent_routes, ops_routes, routes, ui
from .auth import token_middleware
from .backend import Cluster, Store
from .errors import error_middleware
from .peer import peer_role_middleware
from .request import AGENT_TLS, CLUSTER, LEADERSHIP, MAX_BODY_BYTES, STORE, TOKEN


def build_app(store: Store, cluster: Cluster, leadership: Leadership,
              token: str, agent_tls: ssl.SSLContext | None = None) -> web.Application:
    """The API app. `agent_tls`: the client context for calls to agents (mutual TLS, the
    agent's role checked); None calls agents over plain HTTP."""
    app = web.Application(middlewares=[error_middleware, peer_role_middleware(),
                                       token_middleware(token)],
                          client_max_size=MAX_BODY_BYTES)
    app[STORE] = store
    app[CLUSTER] = cluster
    app[LEADERSHIP] = leadership
    app[TOKEN] = token
    app[AGENT_TLS] = agent_tls
    routes.register(app)
    agent_routes.register(app)
    ops_routes.register(app)
    ui.register(app)
    return app
