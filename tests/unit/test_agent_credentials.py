"""The agent's join: an introduction token exchanged once for a node credential kept in a
0600 file, against the real API over an in-memory state machine."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from hacontrol.acl.secrets import controller_credential
from hacontrol.agent.credentials import (
    CONTROLLER_KEY_FILE,
    NODE_CREDENTIAL_FILE,
    ControllerKey,
    JoinRefused,
    node_credential,
    write_private,
)
from hacontrol.api.app import build_app
from hacontrol.scheduler.leader_state import Leadership

from .test_acl_api import LocalReplica

CONTROLLER = controller_credential("cluster-secret")


def test_write_private_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "f", "secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
    assert (tmp_path / "f").read_text() == "secret"


def test_controller_key_is_pinned_once(tmp_path: Path) -> None:
    key = ControllerKey(tmp_path)
    assert not key.accepts(CONTROLLER) and not key.accepts("")
    good = hashlib.sha256(CONTROLLER.encode()).hexdigest()
    key.pin("not a hash")
    assert key.sha256 is None
    key.pin(good)
    key.pin(hashlib.sha256(b"forged").hexdigest())  # a later answer cannot change it
    assert key.accepts(CONTROLLER) and not key.accepts("forged")
    assert ControllerKey(tmp_path).accepts(CONTROLLER)  # kept across restarts
    assert stat.S_IMODE((tmp_path / CONTROLLER_KEY_FILE).stat().st_mode) == 0o600


async def _join(tmp_path: Path) -> None:
    replica = LocalReplica()
    app = build_app(replica, replica, Leadership(lambda: 3), CONTROLLER)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        boot = await _post(url, "/v1/acl/bootstrap", {}, None)
        root = boot["token"]["secret_id"]
        intro = (await _post(url, "/v1/nodes/intro", {"name": "n1"}, root))["token"]["secret_id"]
        # A wrong name is refused; the right one gets a credential, kept 0600.
        with pytest.raises(JoinRefused):
            await node_credential([url], "n2", tmp_path / "a", ControllerKey(tmp_path / "a"),
                                  intro, None, deadline_s=0.5)
        d = tmp_path / "n1"
        d.mkdir()
        key = ControllerKey(d)
        cred = await node_credential([url], "n1", d, key, intro, None)
        assert (d / NODE_CREDENTIAL_FILE).read_text() == cred
        assert stat.S_IMODE((d / NODE_CREDENTIAL_FILE).stat().st_mode) == 0o600
        assert key.accepts(CONTROLLER)
        token = replica.m.store.token_by_hash(hashlib.sha256(cred.encode()).hexdigest())
        assert token is not None and token.type == "node" and token.node == "n1"
        # Kept: a restart uses it without another exchange (the intro is used up anyway).
        assert await node_credential([url], "n1", d, key, intro, None) == cred
        # An agent given a token that may write nodes introduces itself.
        d3 = tmp_path / "n3"
        d3.mkdir()
        cred3 = await node_credential([url], "n3", d3, ControllerKey(d3), None, root)
        assert cred3 != root
        token3 = replica.m.store.token_by_hash(hashlib.sha256(cred3.encode()).hexdigest())
        assert token3 is not None and token3.node == "n3"


async def _post(url: str, path: str, body: object, token: str | None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.post(url + path, json=body,
                                                    headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, object] = await resp.json()
        return data


def test_join_with_an_introduction_token(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    asyncio.run(_join(tmp_path))
