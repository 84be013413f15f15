"""``hacontrol operator snapshot``: save, inspect and restore backups of the whole state.

The file format is `hacontrol/state/backup.py`: a header (index, term, counts), the
state's own snapshot encoding deflated, and a SHA-256 over both. Every command checks the
whole file before it trusts any of it: `save` before the file takes its name, `restore`
before anything is sent, `inspect` before it prints a number.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError, _result_from, _retry_after
from hacontrol.cli.commands.base import EXIT_OK, SubParsers, client_command, command_group
from hacontrol.cli.transport import Request, Response, TransportError
from hacontrol.state import backup

PATH = "/v1/operator/snapshot"
# A save at 10,000 jobs is a few hundred ms of encoding before the first byte.
READ_TIMEOUT_S = 60.0
# The replica answers a restore within a few seconds (the result, or 202 while it goes
# on); this only bounds a replica that hangs.
RESTORE_TIMEOUT_S = 60.0
# How long to follow a restore still being applied (the server gives up after 120 s).
PENDING_WAIT_S = 150.0
# Polls in a row without any answer before the outcome counts as unknown.
POLL_MISSES = 3


def register(sub: SubParsers) -> None:
    """Adds the ``snapshot`` subcommands under ``operator``."""
    group = command_group(sub, "snapshot", "save, inspect and restore backups of the state")
    p = client_command(group, "save", "save a snapshot of the whole state to FILE "
                       "(it holds token hashes: keep it as secret as a token)", cmd_save)
    p.add_argument("file", type=Path)
    p = client_command(group, "inspect", "check a snapshot file and show what it holds "
                       "(reads only the file)", cmd_inspect)
    p.add_argument("file", type=Path)
    p = client_command(group, "restore", "replace the whole state of the cluster with a "
                       "snapshot's, as one log entry", cmd_restore)
    p.add_argument("file", type=Path)


def _damaged(path: Path, exc: Exception) -> ClientError:
    return ClientError(0, "damaged", f"{path}: {exc}; nothing was done with it")


def _load(path: Path) -> tuple[backup.Backup, dict[str, Any]]:
    """The verified file and its decoded tables; ClientError saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClientError(0, "file", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        found = backup.unpack(data)
        return found, backup.state_tables(found)
    except backup.DamagedSnapshot as exc:
        raise _damaged(path, exc) from None


def _describe(summary: dict[str, Any]) -> str:
    counts = summary.get("counts") or {}
    created = summary.get("created_at")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(created))
            if isinstance(created, int | float) and created else "-")
    return output.format_kv([
        ("Index", summary.get("index")), ("Term", summary.get("term")),
        ("Size", f"{summary.get('size')} bytes (state {summary.get('state_bytes')} bytes)"),
        ("Saved", f"{when} by {summary.get('source') or '-'}"),
        ("SHA-256", summary.get("sha256")),
        *((name.capitalize(), counts.get(name, 0)) for name, _ in backup.COUNTED)])


def cmd_save(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    path: Path = args.file
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    chunks: list[bytes] = []
    with client.stream(PATH, read_timeout_s=READ_TIMEOUT_S) as stream:
        while chunk := stream.read_chunk():
            chunks.append(chunk)
    data = b"".join(chunks)
    try:
        found = backup.unpack(data)
    except backup.DamagedSnapshot as exc:
        raise ClientError(0, "damaged", f"the snapshot arrived damaged ({exc}); {path} was "
                                        f"not written") from None
    # Token hashes are inside: the file is private from its first byte, and takes its
    # name only once it is whole on disk.
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ClientError(0, "file", f"cannot write {path}: {exc.strerror or exc}") from None
    summary = found.summary()
    if args.json:
        output.print_json({"file": str(path), **summary}, out)
    else:
        out.write(f"Saved {path}\n{_describe(summary)}\n")
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    found, _ = _load(args.file)
    summary = found.summary()
    if args.json:
        output.print_json(summary, out)
    else:
        out.write(_describe(summary) + "\n")
    return EXIT_OK


def _wait_pending(client: Client, response: Response, url: str) -> tuple[Response, str]:
    """Follow a 202 (the restore still applying on the replica that took it) by polling
    the receipt it gave, on that replica, until the answer is final. No token is sent: the
    restore may have replaced it, and the receipt is what the poll needs."""
    deadline = time.monotonic() + PENDING_WAIT_S
    origin = urllib.parse.urlunsplit(urllib.parse.urlsplit(url)[:2] + ("", "", ""))
    while response.status == 202:
        try:
            poll = json.loads(response.body).get("poll")
        except (ValueError, AttributeError):
            poll = None
        if not isinstance(poll, str) or not poll.startswith("/v1/"):
            raise ClientError(202, "bad_response", f"{origin} accepted the restore without "
                              "saying where to wait for it: check with one of the "
                              "snapshot's tokens (hacontrol job list) before restoring again")
        if time.monotonic() > deadline:
            raise ClientError(0, "pending", f"the restore is still being applied after "
                              f"{PENDING_WAIT_S:.0f} s; its outcome: {origin}{poll} (no "
                              "token needed)")
        hinted = _retry_after(response.headers, 5.0)
        client.sleep(1.0 if hinted is None else hinted)
        response = _poll(client, origin + poll, pending=response)
    return response, url


def _poll(client: Client, url: str, pending: Response) -> Response:
    """One answer from the receipt's URL; a replica busy applying the restore may miss
    a few (`pending` stands in for those); one that stops answering for good is an
    unknown outcome."""
    for attempt in range(POLL_MISSES):
        try:
            return client.transport.handle_request(Request(
                "GET", url, {"Accept": "application/json"}, None, client.timeout_s))
        except TransportError as exc:
            if attempt + 1 == POLL_MISSES:
                origin = urllib.parse.urlunsplit(urllib.parse.urlsplit(url)[:2] + ("", "", ""))
                raise ClientError(0, "outcome_unknown", f"{origin} took the restore and "
                                  f"stopped answering ({exc}): it may or may not have "
                                  "applied; check with one of the snapshot's tokens "
                                  "(hacontrol job list) before restoring again") from None
            client.sleep(1.0)
    return pending


def cmd_restore(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    found, _ = _load(args.file)
    data = args.file.read_bytes()
    headers = {"Accept": "application/json", "Content-Type": "application/octet-stream",
               "Idempotency-Key": str(uuid.uuid4())}
    if client.token:
        headers["Authorization"] = f"Bearer {client.token}"
    # The shared client sends JSON bodies only; this is its own exchange (failover,
    # retries with one idempotency key, redirects to members) with the file as the body.
    template = Request("PUT", PATH, headers, data, RESTORE_TIMEOUT_S)
    result = _result_from(_wait_pending(client, *client._exchange(template)), client.token)
    if args.json:
        output.print_json(result, out)
        return EXIT_OK
    restored = result.get("restored") if isinstance(result, dict) else None
    index = result.get("index") if isinstance(result, dict) else None
    out.write(f"Restored {args.file} (snapshot index {found.index}) at index {index}\n")
    if isinstance(restored, dict):
        out.write(output.format_kv([(name.capitalize(), restored.get(name, 0))
                                    for name, _ in backup.COUNTED]) + "\n")
    return EXIT_OK
