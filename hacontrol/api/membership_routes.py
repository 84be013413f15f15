"""`/v1/operator/raft/peers`: the controllers' membership (list, add, remove).

Every route is served by the leader: another replica answers 307 to the leader's API (the
CLI follows redirects to members only). The rules are in `controller/membership.py`.
"""

from __future__ import annotations

import re
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from hacontrol.controller.errors import NotLeader
from hacontrol.controller.membership import MemberInfo, PeerRow
from hacontrol.model.errors import invalid
from hacontrol.tls.roles import Role, peer_roles

from .errors import RequestError
from .openapi import READ_ERRORS, WRITE_ERRORS, Operation, Param, documented
from .request import cluster_of, json_body, only_fields
from .schemas import INTEGER, NAME, STRING

HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$")


class Members(Protocol):
    """Membership changes (`controller.membership.Membership`)."""

    def peers(self) -> list[PeerRow]: ...

    async def add(self, info: MemberInfo) -> dict[str, Any]: ...

    async def remove(self, member_id: str, force: bool) -> dict[str, Any]: ...


MEMBERS = web.AppKey[Members]("members")

MEMBER = {"type": "object", "required": ["id", "raft", "api"],
          "properties": {"id": NAME, "raft": STRING, "api": STRING}}
PEER = {"type": "object",
        "required": ["id", "raft", "api", "voter", "leader", "alive", "last_contact_s",
                     "index_lag"],
        "properties": {"id": STRING, "raft": STRING, "api": STRING,
                       "voter": {"type": "boolean"}, "leader": {"type": "boolean"},
                       "alive": {"type": "boolean"},
                       "last_contact_s": {"type": ["number", "null"]},
                       "index_lag": {"type": ["integer", "null"]}}}
REDIRECT = "A replica that does not lead answers 307 to the leader's API."


def _on_leader(request: web.Request, exc: NotLeader) -> web.HTTPException:
    if exc.leader_api:
        return web.HTTPTemporaryRedirect(exc.leader_api.rstrip("/") + request.path_qs)
    return web.HTTPServiceUnavailable(
        text='{"error": {"code": "unavailable", "message": "no leader known", '
             '"field": null, "outcome": "not_applied"}}',
        content_type="application/json", headers={"Retry-After": "1"})


@documented(Operation("The controllers: id, addresses, voter, leader, last contact, lag",
                      "operator", description=REDIRECT,
                      ok={"type": "object", "required": ["peers"],
                          "properties": {"peers": {"type": "array", "items": PEER}}},
                      errors=READ_ERRORS))
async def list_peers(request: web.Request) -> web.Response:
    try:
        rows = request.app[MEMBERS].peers()
    except NotLeader as exc:
        raise _on_leader(request, exc) from None
    return web.json_response({"peers": rows, "leader": cluster_of(request).id})


def parse_member(body: dict[str, Any], scheme: str) -> MemberInfo:
    only_fields(body, ("id", "raft", "api"))
    mid, raft, api = body.get("id"), body.get("raft"), body.get("api")
    if not isinstance(mid, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", mid):
        raise invalid("id", "required: a replica id (letters, digits, _ . -)")
    if not isinstance(raft, str) or not HOST_PORT.match(raft) \
            or not 0 < int(raft.rsplit(":", 1)[1]) < 65536:
        raise invalid("raft", "required: the replica's Raft address HOST:PORT")
    parts = urlsplit(api) if isinstance(api, str) else None
    if parts is None or parts.scheme != scheme or not parts.hostname or parts.path not in (
            "", "/") or parts.query or parts.fragment or not isinstance(api, str):
        raise invalid("api", f"required: the replica's API URL, {scheme}://HOST:PORT like "
                             "this cluster's")
    return MemberInfo(mid, raft, api.rstrip("/"))


@documented(Operation(
    "Add a controller replica (what `hacontrol server --join` asks for)", "operator",
    description="Answers once the new replica has caught up (snapshot plus log), one "
                "change at a time: a change while another is in progress is a 409 with "
                "reason change_in_progress. Over TLS the caller must present a server "
                "certificate (the joining replica's). " + REDIRECT,
    ok={"type": "object", "required": ["member", "index_lag", "catch_up_s"],
        "properties": {"member": MEMBER, "index": {"type": ["integer", "null"]},
                       "index_lag": {"type": ["integer", "null"]},
                       "catch_up_s": {"type": "number"}}},
    body=MEMBER, write=True, errors=WRITE_ERRORS))
async def add_peer(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None and transport.get_extra_info("ssl_object") is not None \
            and Role.SERVER not in peer_roles(transport.get_extra_info("peercert")):
        # Over TLS only a replica (a server certificate of the cluster's CA) asks to be
        # added: a stolen operator token alone cannot add a voter that never answers.
        raise RequestError("forbidden", "adding a replica needs a client certificate of "
                           f"role {Role.SERVER.value} ({Role.SERVER.hostname})", "certificate")
    body = await json_body(request)
    info = parse_member(body, request.scheme)
    try:
        answer = await request.app[MEMBERS].add(info)
    except NotLeader as exc:
        raise _on_leader(request, exc) from None
    return web.json_response(answer)


@documented(Operation(
    "Remove a controller replica, live or dead", "operator",
    description="Removing the leader hands leadership over first (then a 307 to the new "
                "leader, which removes it). Refused (409, reason quorum_at_risk) when fewer "
                "than a majority of the remaining members would be alive, unless force. "
                + REDIRECT,
    params=(Param("force", {"type": "boolean", "default": False},
                  "remove even when that leaves no live majority"),),
    path={"id": NAME},
    ok={"type": "object", "required": ["removed", "index"],
        "properties": {"removed": MEMBER, "index": INTEGER, "forced": {"type": "boolean"}}},
    write=True, errors=WRITE_ERRORS))
async def remove_peer(request: web.Request) -> web.Response:
    force = request.query.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise invalid("force", "must be true or false")
    try:
        answer = await request.app[MEMBERS].remove(request.match_info["id"],
                                                   force in ("true", "1"))
    except NotLeader as exc:
        raise _on_leader(request, exc) from None
    return web.json_response(answer)


class NoMembers:
    """For an app built without membership changes (tests): no leader to change it."""

    def peers(self) -> list[PeerRow]:
        raise NotLeader(None, None)

    async def add(self, info: MemberInfo) -> dict[str, Any]:
        raise NotLeader(None, None)

    async def remove(self, member_id: str, force: bool) -> dict[str, Any]:
        raise NotLeader(None, None)


def register(app: web.Application, members: Members | None) -> None:
    app[MEMBERS] = members or NoMembers()
    app.router.add_get("/v1/operator/raft/peers", list_peers)
    app.router.add_post("/v1/operator/raft/peers", add_peer)
    app.router.add_delete("/v1/operator/raft/peers/{id}", remove_peer)
