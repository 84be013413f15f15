"""The admin API: JSON over HTTP on every replica.

Writes become commands proposed through the local replica (pysyncobj carries a follower's
command to the leader); reads are linearizable by default. The routes live in `routes.py`
(core resources), `ops_routes.py` (operations) and `agent_routes.py` (the agents' sync);
they reach the replica through the protocols of `backend.py`, and every failure they raise
is answered in `errors.py`.
"""

from __future__ import annotations

from aiohttp import web

from hacontrol.scheduler.leader_state import Leadership

from . import agent_routes, ops_routes, routes, ui
from .auth import token_middleware
from .backend import Cluster, Store
from .errors import error_middleware
from .request import CLUSTER, LEADERSHIP, MAX_BODY_BYTES, STORE, TOKEN


def build_app(store: Store, cluster: Cluster, leadership: Leadership,
              token: str) -> web.Application:
    app = web.Application(middlewares=[error_middleware, token_middleware(token)],
                          client_max_size=MAX_BODY_BYTES)
    app[STORE] = store
    app[CLUSTER] = cluster
    app[LEADERSHIP] = leadership
    app[TOKEN] = token
    routes.register(app)
    agent_routes.register(app)
    ops_routes.register(app)
    ui.register(app)
    return app
