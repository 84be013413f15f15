"""A small synchronous client for the hacontrol admin API."""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ADDR = "http://127.0.0.1:8101"

# Statuses after which the same request may be sent again. With an idempotency key
# the server applies a write at most once, so even an "outcome unknown" is safe.
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_REDIRECTS = 3


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


class _NoAnswer(Exception):
    """The request did not produce an HTTP response (refused, reset, timed out)."""


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    stream: Stream | None = None


class Stream:
    """An open response whose body is read as it arrives (logs, event streams)."""

    def __init__(
        self, url: str, conn: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        self.url = url
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self._conn = conn
        self._response = response

    def read_chunk(self, size: int = 65536) -> bytes:
        """Whatever part of the body has arrived (at least one byte); b"" at the end.

        A connection that breaks before the end raises StreamBroken.
        """
        try:
            return self._response.read1(size)
        except (OSError, http.client.HTTPException) as exc:
            raise StreamBroken(_reason(exc)) from None

    def readline(self, limit: int = 16 << 20) -> bytes:
        try:
            return self._response.readline(limit)
        except (OSError, http.client.HTTPException) as exc:
            raise StreamBroken(_reason(exc)) from None

    def read_all(self, limit: int = 1 << 20) -> bytes:
        try:
            return self._response.read(limit)
        except (OSError, http.client.HTTPException):
            return b""

    def close(self) -> None:
        self._response.close()
        self._conn.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamBroken(Exception):
    """A streamed body ended early: the connection was reset, closed or timed out."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib refuses to redirect PUT/DELETE and drops the body of a redirected POST;
    # redirects are followed by hand instead so every method keeps its body and key.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


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
    _preferred: int = 0

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
        self._direct = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))
        self._proxied = urllib.request.build_opener(_NoRedirect)

    # -- convenience verbs -------------------------------------------------

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, query=query)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # -- core ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send one logical request, failing over between replicas and retrying.

        Writes carry one idempotency key across every retry so the server can
        recognise a repeat of a write whose first attempt may have been applied.
        """
        method = method.upper()
        if method != "GET" and idempotency_key is None:
            idempotency_key = str(uuid.uuid4())
        target = path + _query_string(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key

        return _result_from(self._exchange(method, target, data, headers), self.token)

    def stream(
        self,
        path: str,
        query: Mapping[str, Any] | None = None,
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

        def send_once(
            method: str, url: str, data: bytes | None, hdrs: Mapping[str, str]
        ) -> Response:
            return self._open_stream(url, hdrs, read_timeout_s)

        target = path + _query_string(query)
        response = self._exchange("GET", target, None, all_headers, send_once)
        if 200 <= response.status < 300 and response.stream is not None:
            return response.stream
        raise _error_from(response, self.token)

    def rotate(self) -> None:
        """Start the next request at the next address (after a stream from this one broke)."""
        self._preferred = (self._preferred + 1) % len(self.addrs)

    def backoff(self, attempt: int) -> float:
        return self._backoff(attempt)

    def _exchange(
        self,
        method: str,
        target: str,
        data: bytes | None,
        headers: Mapping[str, str],
        send_once: SendOnce | None = None,
    ) -> Response:
        """The final answer to one logical request: a success or an error not worth retrying."""
        deadline = time.monotonic() + self.retry.deadline_s
        failures: list[str] = []
        last_error: ClientError | None = None
        answered = False
        for attempt in range(self.retry.attempts):
            response = None
            n = len(self.addrs)
            for k in range(n):
                i = (self._preferred + k) % n
                try:
                    response = self._send(
                        method, self.addrs[i] + target, data, headers, send_once
                    )
                except _NoAnswer as exc:
                    failures.append(f"{self.addrs[i]}: {exc}")
                    continue
                if response.status in RETRY_STATUSES:
                    # That replica may be cut off from the leader; start elsewhere next time.
                    self._preferred = (i + 1) % n
                else:
                    self._preferred = i
                break

            if response is None:
                wait = self._backoff(attempt)
                last_error = ClientError(
                    0, "unavailable", "no replica answered: " + "; ".join(failures[-n:])
                )
            elif response.status in RETRY_STATUSES:
                last_error = _error_from(response, self.token)
                wait = _retry_after(response.headers, self.retry.retry_after_max_s)
                if wait is None:
                    wait = self._backoff(attempt)
            else:
                return response

            if response is not None:
                answered = True
            limit = self.retry.attempts
            if method == "GET" and not answered:
                limit = min(limit, self.retry.unreachable_read_attempts)
            if attempt + 1 >= limit or time.monotonic() + wait > deadline:
                break
            self.sleep(wait)
        assert last_error is not None
        raise last_error

    def _backoff(self, attempt: int) -> float:
        return min(self.retry.backoff_max_s, self.retry.backoff_s * (2**attempt))

    def _send(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: Mapping[str, str],
        send_once: SendOnce | None = None,
    ) -> Response:
        once = send_once or self._send_once
        for _ in range(MAX_REDIRECTS + 1):
            response = once(method, url, data, headers)
            location = response.headers.get("Location")
            if response.status in (307, 308) and location:
                nxt = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(nxt).scheme in ("http", "https"):
                    if response.stream is not None:
                        response.stream.close()
                    url = nxt
                    continue
            return response
        raise _NoAnswer(f"too many redirects, last to {url}")

    def _send_once(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        req = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
        opener = self._direct if _is_loopback(url) else self._proxied
        try:
            with opener.open(req, timeout=self.timeout_s) as resp:
                return Response(resp.status, _header_map(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                exc.close()
            return Response(exc.code, _header_map(exc.headers), body)
        except urllib.error.URLError as exc:
            raise _NoAnswer(_reason(exc.reason)) from None
        except TimeoutError:
            raise _NoAnswer("timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _NoAnswer(_reason(exc)) from None


    def _open_stream(
        self, url: str, headers: Mapping[str, str], read_timeout_s: float | None
    ) -> Response:
        conn, target = _connection(url, self.timeout_s)
        try:
            conn.connect()
            sock = conn.sock
            conn.request("GET", target, headers=dict(headers))
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise _NoAnswer("timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _NoAnswer(_reason(exc)) from None
        stream = Stream(url, conn, response)
        if not 200 <= response.status < 300:
            body = stream.read_all()
            stream.close()
            return Response(response.status, response.headers, body)
        if sock is not None:
            # The body may stay quiet for long (a log nobody writes to); only the
            # connection and the response headers are bound by the client's timeout.
            sock.settimeout(read_timeout_s)
        return Response(response.status, response.headers, b"", stream)


SendOnce = Callable[[str, str, bytes | None, Mapping[str, str]], Response]


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for url, through the environment's proxy when one applies."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    https = parts.scheme == "https"
    proxy = None
    if not _is_loopback(url) and not urllib.request.proxy_bypass(host):
        proxy = urllib.request.getproxies().get(parts.scheme)
    conn: http.client.HTTPConnection
    if proxy:
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if https:
            conn = http.client.HTTPSConnection(p.hostname or "", p.port or 3128, timeout=timeout)
            conn.set_tunnel(host, port or 443)
        else:
            conn = http.client.HTTPConnection(p.hostname or "", p.port or 3128, timeout=timeout)
            target = url
    elif https:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    return conn, target


def _header_map(headers: Any) -> Mapping[str, str]:
    # HTTPMessage lookups are already case-insensitive, which header names need.
    return headers if headers is not None else http.client.HTTPMessage()


def _reason(reason: Any) -> str:
    if isinstance(reason, BaseException):
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return text
    return str(reason)


def _is_loopback(url: str) -> bool:
    # Proxies configured for the outside world must not intercept a local cluster.
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _query_string(query: Mapping[str, Any] | None) -> str:
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


def _decode(body: bytes) -> Any:
    if not body.strip():
        return {}
    return json.loads(body)


def _result_from(response: Response, token: str | None) -> Any:
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


def split_addrs(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    return [p.strip() for p in parts if p.strip()]
