"""A small synchronous client for the hacontrol admin API.

Everything here is logic over a `Transport` (see transport.py): failing over between
replicas, retrying with one idempotency key, following redirects to the leader, and
turning error answers into `ClientError`. The network itself is behind the transport.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hacontrol.cli.addrs import DEFAULT_ADDR, split_addrs
from hacontrol.cli.transport import (
    HttpTransport,
    IterStream,
    Request,
    Response,
    StreamBroken,
    Transport,
    TransportError,
)

__all__ = [
    "DEFAULT_ADDR",
    "Client",
    "ClientError",
    "RetryPolicy",
    "Stream",
    "StreamBroken",
    "quote",
    "split_addrs",
]

# Statuses after which the same request may be sent again. With an idempotency key
# the server applies a write at most once, so even an "outcome unknown" is safe.
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_REDIRECTS = 3
# Asking a replica for the members after a failure: it answers from memory or not at all.
MEMBERS_TIMEOUT_S = 3.0
# A client running this long asks for the members again before its next request.
MEMBERS_MAX_AGE_S = 30.0

# Decoded JSON as served by the API; each command knows the shape it asked for.
Json = Any


class ClientError(Exception):
    """An error answer from the API, or no answer at all (status 0)."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        if self.field:
            return f"{self.message} (field: {self.field})"
        return self.message

    def __repr__(self) -> str:
        return (
            f"ClientError(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, field={self.field!r})"
        )


class Stream:
    """An open successful response whose body is read as it arrives."""

    def __init__(self, url: str, response: Response) -> None:
        self.url = url
        self.status = response.status
        self.headers = response.headers
        self._body = response.stream or IterStream([response.body])

    def read_chunk(self) -> bytes:
        """Whatever part of the body has arrived; b"" at the end; StreamBroken if cut."""
        return self._body.read_chunk()

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RetryPolicy:
    attempts: int = 8
    deadline_s: float = 30.0
    backoff_s: float = 0.25
    backoff_max_s: float = 2.0
    retry_after_max_s: float = 5.0
    # A read nobody answers is usually a cluster that is not running; fail fast.
    unreachable_read_attempts: int = 3


@dataclass
class Client:
    addrs: list[str]
    token: str | None = None
    timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    transport: Transport = field(default_factory=HttpTransport)
    clock: Callable[[], float] = time.monotonic
    _preferred: int = 0
    # Origins of the cluster's members as /v1/status lists them (None: not asked yet).
    _members: set[tuple[str, str, int]] | None = None
    # When the addresses were last taken from /v1/status (or given).
    _members_at: float = 0.0

    def __post_init__(self) -> None:
        self.addrs = [a.strip().rstrip("/") for a in self.addrs if a.strip()]
        if not self.addrs:
            raise ClientError(0, "config", "no API address given")
        for addr in self.addrs:
            parsed = urllib.parse.urlsplit(addr)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ClientError(
                    0, "config", f"invalid API address {addr!r}: expected http://HOST:PORT"
                )
        self._members_at = self.clock()

    # -- convenience verbs -------------------------------------------------

    def get(self, path: str, query: Mapping[str, object] | None = None) -> Json:
        return self.request("GET", path, query=query)

    def put(self, path: str, body: Json) -> Json:
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Json) -> Json:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Json:
        return self.request("DELETE", path)

    # -- core ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        body: Json = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Send one logical request, failing over between replicas and retrying.

        Writes carry one idempotency key across every retry so the server can
        recognise a repeat of a write whose first attempt may have been applied.
        """
        method = method.upper()
        if method != "GET" and idempotency_key is None:
            idempotency_key = str(uuid.uuid4())
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        template = Request(method, path + _query_string(query), headers, data, self.timeout_s)
        return _result_from(self._exchange(template), self.token)

    def stream(
        self,
        path: str,
        query: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout_s: float | None = None,
    ) -> Stream:
        """Open a GET whose body is read while it arrives, failing over like request().

        Connecting and waiting for the response headers use the usual timeout; reading
        the body then waits at most read_timeout_s per read (None: forever).
        """
        all_headers = {"Accept": "*/*"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        template = Request("GET", path + _query_string(query), all_headers, None,
                           self.timeout_s, stream=True, read_timeout_s=read_timeout_s)
        response, url = self._exchange(template)
        if 200 <= response.status < 300:
            return Stream(url, response)
        raise _error_from(response, self.token)

    def rotate(self) -> None:
        """Start the next request at the next address (after a stream from this one broke)."""
        self._preferred = (self._preferred + 1) % len(self.addrs)

    def backoff(self, attempt: int) -> float:
        return min(self.retry.backoff_max_s, self.retry.backoff_s * 2.0**attempt)

    def _exchange(self, template: Request) -> tuple[Response, str]:
        """The final answer to one logical request (a success or an error not worth
        retrying) and the URL that gave it. template.url holds the path and query.

        Members come and go (join, remove-peer): after a replica did not answer, or when
        no replica gave a usable answer, the addresses become the members an answering
        replica lists in /v1/status (`_refresh_members`), and the retry goes there with
        the same idempotency key."""
        deadline = time.monotonic() + self.retry.deadline_s
        failures: list[str] = []
        last_error: ClientError | None = None
        answered = False
        if self.clock() - self._members_at > MEMBERS_MAX_AGE_S:
            # A long invocation (following a deployment, a log) keeps up with joins and
            # removals even while every address it has still answers.
            self._refresh_members(template, self.addrs[self._preferred % len(self.addrs)])
        for attempt in range(self.retry.attempts):
            answer = None
            addrs = self.addrs
            n = len(addrs)
            for k in range(n):
                i = (self._preferred + k) % n
                try:
                    answer = self._send(template, addrs[i] + template.url)
                except TransportError as exc:
                    failures.append(f"{addrs[i]}: {exc}")
                    continue
                if self.addrs is not addrs:
                    # A redirect's check learned new members: where is this one now?
                    i = _index_of(self.addrs, answer[1])
                    n = len(self.addrs)
                if answer[0].status in RETRY_STATUSES:
                    # That replica may be cut off from the leader; start elsewhere next time.
                    self._preferred = (i + 1) % n
                else:
                    self._preferred = i
                break

            if answer is not None and answer[0].status not in RETRY_STATUSES:
                if failures:  # one did not answer: it may have left the cluster
                    self._refresh_members(template, answer[1])
                return answer
            self._refresh_members(template, answer[1] if answer is not None else None)
            if answer is None:
                wait = self.backoff(attempt)
                last_error = ClientError(
                    0, "unavailable", "no replica answered: " + "; ".join(failures[-n:])
                )
            elif answer[0].status in RETRY_STATUSES:
                response = answer[0]
                _close(response)
                last_error = _error_from(response, self.token)
                hinted = _retry_after(response.headers, self.retry.retry_after_max_s)
                wait = self.backoff(attempt) if hinted is None else hinted

            if answer is not None:
                answered = True
            limit = self.retry.attempts
            if template.method == "GET" and not answered:
                limit = min(limit, self.retry.unreachable_read_attempts)
            if attempt + 1 >= limit or time.monotonic() + wait > deadline:
                break
            self.sleep(wait)
        assert last_error is not None
        raise last_error

    def _send(self, template: Request, url: str) -> tuple[Response, str]:
        """One attempt at one address, following the redirects a follower answers with,
        but only to the cluster's own members: the token goes nowhere else."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self.transport.handle_request(dataclasses.replace(template, url=url))
            location = response.headers.get("Location")
            if response.status in (307, 308) and location:
                nxt = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(nxt).scheme in ("http", "https"):
                    _close(response)
                    if not self._is_member(nxt, url, template):
                        raise ClientError(
                            0, "redirect_refused",
                            f"{url} redirected to {_origin_text(nxt)}, which is not a member "
                            "of the cluster; not following it")
                    url = nxt
                    continue
            return response, url
        raise TransportError(f"too many redirects, last to {url}")

    def _is_member(self, target: str, via: str, template: Request) -> bool:
        """Whether target is one of the addresses given or a member that the replica at
        `via` (itself a member) lists in /v1/status."""
        origin = _origin(target)
        if origin is None:
            return False
        if origin in {_origin(a) for a in self.addrs}:
            return True
        if self._members is None or origin not in self._members:
            # Not known yet, or joined since the members were last asked.
            self._members = set()
            self._refresh_members(template, via, others=False)
        return origin in self._members

    def _member_apis(self, via: str, template: Request,
                     timeout_s: float | None = None) -> list[str] | None:
        """The API URLs of the members the replica at `via` lists in /v1/status, the
        leader first; None when it does not answer, or does not count itself a member (a
        removed replica's list is stale)."""
        headers = {k: v for k, v in template.headers.items()
                   if k in ("Authorization", "Accept")}
        base = urllib.parse.urlunsplit(urllib.parse.urlsplit(via)[:2] + ("", "", ""))
        try:
            response = self.transport.handle_request(Request(
                "GET", base + "/v1/status", headers, None, timeout_s or self.timeout_s))
            status = _decode(response.body) if response.status == 200 else {}
        except (TransportError, ValueError):
            return None
        if not isinstance(status, dict) or status.get("member") is False:
            return None
        members = status.get("members")
        leader = status.get("leader_api")
        apis: list[str] = []
        for m in members if isinstance(members, list) else []:
            api = m.get("api") if isinstance(m, dict) else None
            if isinstance(api, str) and _origin(api) is not None:
                api = api.strip().rstrip("/")
                if api == leader:
                    apis.insert(0, api)
                elif api not in apis:
                    apis.append(api)
        return apis or None

    def _refresh_members(self, template: Request, via: str | None,
                         others: bool = True) -> None:
        """Use the members that `via` (else, with `others`, the first replica to answer)
        lists: new ones are tried, removed ones no longer. Nothing changes when nobody
        answers."""
        self._members_at = self.clock()
        rest = [a for a in self.addrs if a != via] if others else []
        for addr in ([via] if via else []) + rest:
            apis = self._member_apis(addr, template, min(self.timeout_s, MEMBERS_TIMEOUT_S))
            if apis is None:
                continue
            if apis != self.addrs:
                self.addrs = apis
                self._preferred = 0  # the leader when known
            self._members = {o for a in apis if (o := _origin(a)) is not None}
            return


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _index_of(addrs: list[str], url: str) -> int:
    """The position of url's origin among addrs (0 when absent)."""
    origin = _origin(url)
    return next((k for k, a in enumerate(addrs) if _origin(a) == origin), 0)


def _origin_text(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _close(response: Response) -> None:
    if response.stream is not None:
        response.stream.close()


def _query_string(query: Mapping[str, object] | None) -> str:
    if not query:
        return ""
    items = [(k, str(v)) for k, v in query.items() if v is not None and v != ""]
    return "?" + urllib.parse.urlencode(items) if items else ""


def _retry_after(headers: Mapping[str, str], cap: float) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, min(seconds, cap))


def _decode(body: bytes) -> Json:
    if not body.strip():
        return {}
    return json.loads(body)


def _result_from(answer: tuple[Response, str], token: str | None) -> Json:
    response = answer[0]
    if 200 <= response.status < 300:
        try:
            return _decode(response.body)
        except ValueError:
            raise ClientError(
                response.status, "bad_response", "server answered with invalid JSON"
            ) from None
    raise _error_from(response, token)


def _error_from(response: Response, token: str | None) -> ClientError:
    status = response.status
    try:
        payload = _decode(response.body)
    except ValueError:
        payload = None
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or f"http_{status}")
        message = str(err.get("message") or err.get("code") or f"HTTP {status}")
        fld = err.get("field")
        if err.get("outcome") == "unknown" and "unknown" not in message.lower():
            message += " (outcome unknown)"
    else:
        code = f"http_{status}"
        text = response.body.decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {text[:200]}" if text else "")
        fld = None
    if status == 401 and not token:
        message += " (no token given: set HACONTROL_TOKEN or use --token/--token-file)"
    return ClientError(status, code, message, str(fld) if fld else None)


def quote(segment: str) -> str:
    """Escape one path segment so names cannot alter the route."""
    return urllib.parse.quote(segment, safe="")
