"""Alert rules, their sinks, the state of each alert and its notifications.

A rule says when to alert (`when`, scoped by namespace and job, with a threshold and a
window) and where to send it (`sinks`). The leader evaluates every rule
(`hacontrol/alerts/evaluate.py`); each change of an alert's status (firing, resolved) is
written to the log with one notification, and every delivery attempt of that
notification to each sink too, so a new leader knows what is still to deliver and what
was delivered already.

Webhook secrets are in the state (the leader signs with them); they never leave it
through the API: `Sink.public()` says only whether one is set.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .checks import check_name, has_control, no_unknown, obj
from .errors import invalid


class AlertWhen(enum.StrEnum):
    ALLOCATION_FAILED = "allocation_failed"  # threshold: allocations failed within window_s
    RESTART_FLAPPING = "restart_flapping"  # threshold: restarts of one allocation in window_s
    NODE_DOWN = "node_down"  # threshold: nodes down
    QUOTA_ABOVE = "quota_above"  # threshold: a fraction of a namespace's quota
    NO_LEADER = "no_leader"  # threshold: seconds without a leader
    REPLICA_DOWN = "replica_down"  # threshold: replicas down
    REPLICA_LAGGING = "replica_lagging"  # threshold: log entries behind the leader
    DEPLOYMENT_FAILED = "deployment_failed"  # threshold: jobs whose rollout failed
    HEALTH_BELOW = "health_below"  # threshold: a health score (0-100)


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class SinkType(enum.StrEnum):
    WEBHOOK = "webhook"
    EXEC = "exec"


class AlertStatus(enum.StrEnum):
    OK = "ok"  # never fired
    FIRING = "firing"
    RESOLVED = "resolved"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after MAX_ATTEMPTS


# The threshold each `when` takes when the rule gives none, and its bounds.
DEFAULT_THRESHOLD: dict[AlertWhen, float] = {
    AlertWhen.ALLOCATION_FAILED: 1, AlertWhen.RESTART_FLAPPING: 3, AlertWhen.NODE_DOWN: 1,
    AlertWhen.QUOTA_ABOVE: 0.9, AlertWhen.NO_LEADER: 5, AlertWhen.REPLICA_DOWN: 1,
    AlertWhen.REPLICA_LAGGING: 1000, AlertWhen.DEPLOYMENT_FAILED: 1,
    AlertWhen.HEALTH_BELOW: 70,
}
THRESHOLD_BOUNDS: dict[AlertWhen, tuple[float, float]] = {
    AlertWhen.QUOTA_ABOVE: (0.0, 1.0), AlertWhen.HEALTH_BELOW: (0.0, 100.0),
    AlertWhen.NO_LEADER: (0.0, 86400.0)}
# Rules that apply to a namespace (and job) take `namespace`/`job`; the others are
# cluster-wide and refuse them, so a rule never reads as narrower than it is.
SCOPED = frozenset({AlertWhen.ALLOCATION_FAILED, AlertWhen.RESTART_FLAPPING,
                    AlertWhen.QUOTA_ABOVE, AlertWhen.DEPLOYMENT_FAILED})
DEFAULT_WINDOW_S = 300.0
MAX_WINDOW_S = 86400.0
MAX_SINKS = 8
MAX_ARGV = 64
MAX_ARG_LEN = 4096
MAX_URL_LEN = 2048
MAX_SECRET_LEN = 512
MAX_SEALED_LEN = 2048
SEALED_PREFIX = "sealed1:"
MAX_SINK_TIMEOUT_S = 120.0
DEFAULT_SINK_TIMEOUT_S = 10.0
GLOB_RE = re.compile(r"[a-z0-9*][a-z0-9_.*-]{0,63}")


@dataclass(frozen=True)
class Sink:
    type: SinkType
    url: str | None = None  # webhook
    secret: str | None = None  # webhook: the HMAC key (never shown)
    command: tuple[str, ...] = ()  # exec: argv, run without a shell
    timeout_s: float = DEFAULT_SINK_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        """The state's encoding, secret included."""
        d: dict[str, Any] = {"type": self.type, "timeout_s": self.timeout_s}
        if self.type == SinkType.WEBHOOK:
            d["url"] = self.url
            if self.secret is not None:
                d["secret"] = self.secret
        else:
            d["command"] = list(self.command)
        return d

    def public(self) -> dict[str, Any]:
        """What the API shows: the secret's presence, never its value."""
        d = self.to_dict()
        if self.type == SinkType.WEBHOOK:
            d.pop("secret", None)
            d["secret_set"] = self.secret is not None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sink:
        return cls(SinkType(d["type"]), d.get("url"), d.get("secret"),
                   tuple(d.get("command") or ()), float(d.get("timeout_s",
                                                              DEFAULT_SINK_TIMEOUT_S)))


@dataclass(frozen=True)
class AlertRule:
    name: str
    when: AlertWhen
    severity: Severity = Severity.WARNING
    namespace: str | None = None  # a namespace or a glob ("*", "team-*"); None: every one
    job: str | None = None
    threshold: float = 1.0
    window_s: float = DEFAULT_WINDOW_S
    sinks: tuple[Sink, ...] = ()
    modify_index: int = 0  # set when applied; transitions name it to stay current

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "when": self.when, "severity": self.severity,
                "namespace": self.namespace, "job": self.job, "threshold": self.threshold,
                "window_s": self.window_s, "sinks": [s.to_dict() for s in self.sinks],
                "modify_index": self.modify_index}

    def public(self) -> dict[str, Any]:
        return {**self.to_dict(), "sinks": [s.public() for s in self.sinks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertRule:
        return cls(d["name"], AlertWhen(d["when"]), Severity(d["severity"]), d.get("namespace"),
                   d.get("job"), float(d["threshold"]), float(d["window_s"]),
                   tuple(Sink.from_dict(s) for s in d.get("sinks") or ()),
                   int(d.get("modify_index", 0)))


@dataclass
class Delivery:
    """One notification's delivery to one sink of its rule."""

    sink: int  # index into the rule's sinks when the notification was made
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    next_at: float = 0.0  # wall time of the next attempt
    last_error: str | None = None
    delivered_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sink": self.sink, "status": self.status, "attempts": self.attempts,
                "next_at": self.next_at, "last_error": self.last_error,
                "delivered_at": self.delivered_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Delivery:
        return cls(int(d["sink"]), DeliveryStatus(d["status"]), int(d["attempts"]),
                   float(d["next_at"]), d.get("last_error"), d.get("delivered_at"))


@dataclass
class Notification:
    """One change of an alert's status, to be delivered to every sink of its rule."""

    id: str  # "<alert>-<sequence>": the receivers' deduplication key
    alert: str
    status: AlertStatus
    created_at: float
    body: dict[str, Any]  # the JSON body every sink receives
    sinks: tuple[Sink, ...]  # the rule's sinks when it was made (a later edit does not move it)
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return any(d.status == DeliveryStatus.PENDING for d in self.deliveries)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "alert": self.alert, "status": self.status,
                "created_at": self.created_at, "body": self.body,
                "sinks": [s.to_dict() for s in self.sinks],
                "deliveries": [d.to_dict() for d in self.deliveries]}

    def public(self) -> dict[str, Any]:
        return {**self.to_dict(), "sinks": [s.public() for s in self.sinks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notification:
        return cls(d["id"], d["alert"], AlertStatus(d["status"]), float(d["created_at"]),
                   dict(d["body"]), tuple(Sink.from_dict(s) for s in d.get("sinks") or ()),
                   [Delivery.from_dict(x) for x in d.get("deliveries") or ()])


@dataclass
class AlertState:
    """Where one alert stands, and its recent notifications (oldest first)."""

    name: str
    status: AlertStatus = AlertStatus.OK
    since: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    seq: int = 0  # notifications made so far: the next id is "<name>-<seq + 1>"
    notifications: list[Notification] = field(default_factory=list)
    dropped: int = 0  # notifications forgotten while still pending (NOTIFICATIONS_KEPT)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "since": self.since,
                "details": self.details, "seq": self.seq,
                "notifications": [n.to_dict() for n in self.notifications],
                "dropped": self.dropped}

    def public(self) -> dict[str, Any]:
        return {**self.to_dict(), "notifications": [n.public() for n in self.notifications]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlertState:
        return cls(d["name"], AlertStatus(d["status"]), float(d["since"]),
                   dict(d.get("details") or {}), int(d["seq"]),
                   [Notification.from_dict(n) for n in d.get("notifications") or ()],
                   int(d.get("dropped", 0)))


# ------------------------------------------------------------------ parsing

def _finite(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not lo <= value <= hi:
        raise invalid(where, f"must be a number from {lo:g} to {hi:g}")
    return float(value)


def _glob(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not GLOB_RE.fullmatch(value):
        raise invalid(where, "must be a name, or a glob of a-z, 0-9, '-', '_', '.' and '*'")
    return value


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) \
            and (parts.port is None or parts.port > 0)
    except ValueError:  # "http://[::1", a port out of range
        return False


def parse_sink(raw: Any, where: str) -> Sink:
    d = obj(raw, where)
    kind = d.get("type")
    if kind not in (SinkType.WEBHOOK, SinkType.EXEC):
        raise invalid(f"{where}.type", "must be webhook or exec")
    timeout = _finite(d.get("timeout_s", DEFAULT_SINK_TIMEOUT_S), f"{where}.timeout_s", 0.1,
                      MAX_SINK_TIMEOUT_S)
    if kind == SinkType.WEBHOOK:
        # `secret_set` is what GET shows instead of the secret: accepted (and ignored) so that
        # a rule read back can be applied again.
        no_unknown(d, {"type", "url", "secret", "secret_set", "timeout_s"}, f"{where}.")
        url = d.get("url")
        if not isinstance(url, str) or len(url) > MAX_URL_LEN or has_control(url) \
                or not _http_url(url):
            raise invalid(f"{where}.url", "must be an http:// or https:// URL")
        secret = d.get("secret")
        # A sealed secret (`alerts/sealing.py`: what the API writes to the log) is longer
        # than the secret it seals.
        longest = MAX_SEALED_LEN if isinstance(secret, str) and secret.startswith(
            SEALED_PREFIX) else MAX_SECRET_LEN
        if secret is not None and (not isinstance(secret, str)
                                   or not 1 <= len(secret) <= longest):
            raise invalid(f"{where}.secret", f"must be a string of 1-{MAX_SECRET_LEN} "
                                             "characters")
        return Sink(SinkType.WEBHOOK, str(url), secret, timeout_s=timeout)
    no_unknown(d, {"type", "command", "timeout_s"}, f"{where}.")
    cmd = d.get("command")
    if not isinstance(cmd, list) or not 1 <= len(cmd) <= MAX_ARGV or not all(
            isinstance(a, str) and 0 < len(a) <= MAX_ARG_LEN and "\x00" not in a
            for a in cmd):
        raise invalid(f"{where}.command", f"must be a list of 1-{MAX_ARGV} non-empty strings")
    return Sink(SinkType.EXEC, command=tuple(cmd), timeout_s=timeout)


def parse_rule(name: Any, body: Any) -> AlertRule:
    """A rule from untrusted input (the API's body, a command's arguments); raises
    `Rejection` naming the field."""
    name = check_name(name, "name")
    d = obj(body, "body")
    no_unknown(d, {"name", "when", "severity", "namespace", "job", "threshold", "window_s",
                   "sinks", "modify_index"}, "")
    if d.get("name", name) != name:
        raise invalid("name", "differs from the name in the path")
    try:
        when = AlertWhen(str(d.get("when")))
    except ValueError:
        raise invalid("when", "must be one of " + ", ".join(AlertWhen)) from None
    try:
        severity = Severity(d.get("severity", Severity.WARNING))
    except ValueError:
        raise invalid("severity", "must be warning or critical") from None
    namespace, job = _glob(d.get("namespace"), "namespace"), d.get("job")
    if job is not None:
        job = check_name(job, "job")
    if when not in SCOPED and (namespace is not None or job is not None):
        raise invalid("namespace" if namespace is not None else "job",
                      f"{when} is cluster-wide: leave namespace and job out")
    lo, hi = THRESHOLD_BOUNDS.get(when, (1.0, 1e9))
    threshold = _finite(d.get("threshold", DEFAULT_THRESHOLD[when]), "threshold", lo, hi)
    if when == AlertWhen.QUOTA_ABOVE and threshold == 0:
        raise invalid("threshold", "must be a fraction above 0")
    window = _finite(d.get("window_s", DEFAULT_WINDOW_S), "window_s", 1.0, MAX_WINDOW_S)
    sinks_raw = d.get("sinks", [])
    if not isinstance(sinks_raw, list) or len(sinks_raw) > MAX_SINKS:
        raise invalid("sinks", f"must be a list of at most {MAX_SINKS} sinks")
    sinks = tuple(parse_sink(s, f"sinks[{i}]") for i, s in enumerate(sinks_raw))
    return AlertRule(name, when, severity, namespace, job, threshold, window, sinks)
