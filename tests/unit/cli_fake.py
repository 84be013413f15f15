"""An in-memory admin API for CLI tests, behind the client's transport seam.

`FakeApi.transport` answers every request the client sends: from a route for
(method, path), else from scripted replies in order, else from `default`. Addresses in
`down` refuse connections, as a stopped replica does.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hacontrol.cli.main import main
from hacontrol.cli.transport import MockTransport, Request, Response, TransportError

ADDRS = ["http://10.9.0.1:8101", "http://10.9.0.2:8101"]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_path: str
    addr: str
    request: Request


Reply = tuple[int, Any, dict[str, str]]
Route = Callable[[Seen], Response]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"Content-Type": "application/json", **(headers or {})},
                    json.dumps(body).encode())


@dataclass
class FakeApi:
    urls: list[str] = field(default_factory=lambda: list(ADDRS))
    down: set[str] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    # Scripted answers, consumed in order; afterwards `default` answers everything.
    replies: list[Reply] = field(default_factory=list)
    default: Callable[[Seen], Reply] = lambda s: (200, {}, {})

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def last(self) -> Seen:
        return self.seen[-1]

    @property
    def transport(self) -> MockTransport:
        return MockTransport(self.handle)

    def reply(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.routes[(method, path)] = lambda seen: json_response(status, body)

    def handle(self, request: Request) -> Response:
        parts = urllib.parse.urlsplit(request.url)
        addr = f"{parts.scheme}://{parts.netloc}"
        if addr in self.down:
            raise TransportError("Connection refused")
        seen = Seen(request.method, urllib.parse.unquote(parts.path),
                    dict(urllib.parse.parse_qsl(parts.query)), dict(request.headers),
                    json.loads(request.body) if request.body else None, parts.path, addr,
                    request)
        self.seen.append(seen)
        route = self.routes.get((request.method, seen.path))
        if route is not None:
            return route(seen)
        status, body, headers = self.replies.pop(0) if self.replies else self.default(seen)
        return json_response(status, body, headers)

    def main(self, *argv: str) -> int:
        """Run the command line against this fake."""
        return main(list(argv), transport=self.transport)

    def run(self, *argv: str) -> int:
        """Run a command with this fake's first address and a token."""
        return self.main(*argv, "--addr", self.url, "--token", "sekrit")


def not_found(seen: Seen) -> Reply:
    return 404, {"error": {"code": "not_found", "message": "no route"}}, {}
