"""``hacontrol events``: the cluster's recent events, or follow them as they happen."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError, StreamBroken
from hacontrol.cli.commands.base import EXIT_OK, SubParsers, client_command
from hacontrol.cli.commands.flags import non_negative_int
from hacontrol.cli.sse import SseEvent, SseLineTooLong, iter_events

# The server sends a comment at least every ten seconds; silence for longer than
# this means the connection is gone even if no error has surfaced.
EVENTS_READ_TIMEOUT_S = 35.0


def register(sub: SubParsers) -> None:
    p = client_command(sub, "events", "show the cluster's recent events, or follow them",
                       cmd_events)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--index", type=non_negative_int, default=None,
                   help="only events after this log index")
    p.add_argument("--type", action="append", default=[], metavar="T[,T...]",
                   help="only events of these types")


def cmd_events(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    types = _event_types(args)
    if not args.follow:
        result = client.get("/v1/events", {"index": args.index, "follow": "false", "type": types})
        if args.json:
            output.print_json(result, out)
            return EXIT_OK
        events = result.get("events") or []
        for event in events:
            _print_event(args, event, out)
        if not events:
            out.write("No events.\n")
        return EXIT_OK
    try:
        return _follow_events(args, client, out, types)
    except KeyboardInterrupt:
        return EXIT_OK


def _event_types(args: argparse.Namespace) -> str | None:
    kinds = [t.strip() for v in args.type for t in v.split(",") if t.strip()]
    return ",".join(kinds) or None


def _print_event(args: argparse.Namespace, event: Any, out: IO[str]) -> None:
    if args.json:
        out.write(json.dumps(event, sort_keys=True) + "\n")
    elif isinstance(event, dict):
        out.write(output.event_line(event) + "\n")
    else:
        out.write(output.cell_text(event) + "\n")


def _follow_events(
    args: argparse.Namespace, client: Client, out: IO[str], types: str | None
) -> int:
    last_id: str | None = None if args.index is None else str(args.index)
    quiet_drops = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        query = {"index": last_id.partition(".")[0] if last_id is not None else None,
                 "follow": "true", "type": types}
        got_any = False
        try:
            with client.stream("/v1/events", query, headers,
                               read_timeout_s=EVENTS_READ_TIMEOUT_S) as stream:
                for sse in iter_events(stream.read_chunk):
                    got_any = True
                    last_id = _handle_sse(args, sse, last_id, out)
        except (StreamBroken, SseLineTooLong):
            pass
        # The stream ended or broke: resume elsewhere from the last event seen. A
        # server that keeps hanging up without sending anything is backed off from.
        quiet_drops = 0 if got_any else quiet_drops + 1
        client.rotate()
        if quiet_drops:
            if quiet_drops > client.retry.attempts:
                raise ClientError(0, "stream_broken", "the event stream keeps closing")
            client.sleep(client.backoff(quiet_drops - 1))


def _handle_sse(args: argparse.Namespace, sse: SseEvent, last_id: str | None,
                out: IO[str]) -> str | None:
    """Print one event unless it repeats one already printed; the new last id."""
    try:
        data: Any = json.loads(sse.data) if sse.data else {}
    except ValueError:
        data = sse.data
    if sse.event == "truncated":
        oldest = data.get("oldest_index") if isinstance(data, dict) else None
        sys.stderr.write(
            f"warning: events before index {output.cell_text(oldest)} are no longer kept\n"
        )
        return last_id
    event_key = _event_key(sse.id)
    last_key = _event_key(last_id)
    # Ids are "INDEX.SEQ" (several events may share a log index): anything not newer than
    # the last one printed is a repeat after a reconnect.
    if event_key is not None and last_key is not None and event_key <= last_key:
        return last_id
    _print_event(args, data, out)
    out.flush()
    return sse.id if event_key is not None else last_id


def _event_key(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    head, _, tail = raw.partition(".")
    try:
        return (int(head), int(tail) if tail else 10**9)
    except ValueError:
        return None
