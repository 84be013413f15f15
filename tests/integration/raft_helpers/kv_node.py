"""One Replica with a tiny msgpack key/value machine, driven over HTTP.

Run as a subprocess by the raft integration tests; the cluster secret comes
from the HC_RAFT_SECRET environment variable, never the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web

from hacontrol.raft import (
    ApplyFailed,
    LogBridge,
    NotApplied,
    OutcomeUnknown,
    RaftTuning,
    Replica,
    ReplicaConfig,
    safety,
)

NOOP = msgpack.packb({"op": "noop"})


class KvMachine:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.index = 0

    def apply(self, command: bytes, index: int) -> Any:
        self.index = index
        try:
            cmd = msgpack.unpackb(command, raw=False)
            op = cmd.get("op")
            if op == "noop":
                return {"ok": True, "index": index}
            if op == "set":
                self.data[cmd["k"]] = cmd["v"]
                return {"ok": True, "index": index}
            if op == "incr":
                value = int(self.data.get(cmd["k"], 0)) + 1
                self.data[cmd["k"]] = value
                return {"ok": True, "index": index, "value": value}
            if op == "boom":
                raise RuntimeError("asked to fail")
            if op == "slow":
                # A long apply (a restore's), blocking the tick thread as one would.
                time.sleep(float(cmd["seconds"]))
                self.data[cmd["k"]] = len(cmd.get("pad", b""))
                return {"ok": True, "index": index}
            return {"ok": False, "error": f"unknown op {op!r}"}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return {"ok": False, "error": str(exc)}

    def snapshot(self) -> bytes:
        return msgpack.packb({"data": self.data, "index": self.index})

    def restore(self, data: bytes) -> None:
        doc = msgpack.unpackb(data, raw=False)
        self.data = dict(doc["data"])
        self.index = int(doc["index"])


def build_app(replica: Replica, bridge: LogBridge) -> web.Application:
    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        timeout = float(body.pop("timeout", 5.0))
        retry = bool(body.pop("retry", True))
        try:
            result = await bridge.submit(msgpack.packb(body), timeout, retry=retry)
        except NotApplied as exc:
            return web.json_response({"outcome": "not_applied", "reason": exc.reason})
        except OutcomeUnknown as exc:
            return web.json_response({"outcome": "unknown", "reason": exc.reason})
        except ApplyFailed as exc:
            return web.json_response({"outcome": "apply_failed", "reason": exc.reason})
        return web.json_response({"outcome": "ok", "result": result})

    async def read(request: web.Request) -> web.Response:
        index = None
        if request.query.get("barrier") == "1":
            try:
                index = await bridge.barrier(NOOP, float(request.query.get("timeout", "5")))
            except (NotApplied, OutcomeUnknown) as exc:
                return web.json_response({"outcome": "unavailable", "reason": exc.reason})
        data, applied = bridge.read(lambda m: (dict(m.data), m.index))  # type: ignore[attr-defined]
        return web.json_response(
            {"outcome": "ok", "barrier": index, "index": applied, "data": data}
        )

    async def status(_request: web.Request) -> web.Response:
        st = dataclasses.asdict(bridge.status())
        st["pid"] = os.getpid()
        return web.json_response(st)

    async def compact(_request: web.Request) -> web.Response:
        replica.force_compaction()
        return web.json_response({"ok": True})

    async def find_classes(_request: web.Request) -> web.Response:
        return web.json_response(sorted(set(safety.find_class_log or [])))

    app = web.Application()
    app.router.add_post("/submit", submit)
    app.router.add_get("/read", read)
    app.router.add_get("/status", status)
    app.router.add_post("/compact", compact)
    app.router.add_get("/find_class", find_classes)
    return app


async def serve(replica: Replica, http_port: int) -> None:
    bridge = LogBridge(replica)
    runner = web.AppRunner(build_app(replica, bridge), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", http_port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--node-id", required=True)
    p.add_argument("--raft", required=True)
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--compaction-min-entries", type=int, default=5000)
    args = p.parse_args()
    logging.basicConfig(
        level=os.environ.get("HC_LOG_LEVEL", "WARNING"), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    if os.environ.get("HC_LOG_FIND_CLASS"):
        safety.find_class_log = []
    if os.environ.get("HC_PICKLE_PROTOCOL"):
        # Lets a test observe what an older (protocol 2) peer would make us unpickle.
        safety.PICKLE_PROTOCOL = int(os.environ["HC_PICKLE_PROTOCOL"])
    tuning = RaftTuning(log_compaction_min_entries=args.compaction_min_entries)
    if os.environ.get("HC_HANDSHAKE_TIMEOUT"):
        tuning = dataclasses.replace(
            tuning, handshake_timeout=float(os.environ["HC_HANDSHAKE_TIMEOUT"]))
    if os.environ.get("HC_LONG_APPLY_OFF"):
        tuning = dataclasses.replace(tuning, heartbeat_before_bytes=0, long_apply_grace=0.0)
    if os.environ.get("HC_MAX_PENDING"):
        tuning = dataclasses.replace(
            tuning, max_pending_connections=int(os.environ["HC_MAX_PENDING"]))
    config = ReplicaConfig(
        node_id=args.node_id,
        raft_addr=args.raft,
        peers=args.peer,
        data_dir=Path(args.data_dir),
        secret=os.environ["HC_RAFT_SECRET"],
        tuning=tuning,
    )
    replica = Replica(config, KvMachine())
    try:
        asyncio.run(serve(replica, args.http_port))
    finally:
        replica.destroy()


if __name__ == "__main__":
    main()
