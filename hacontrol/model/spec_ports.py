"""Checking a job's named ports and the services offered on them.

Port names become environment variable names (`HACONTROL_PORT_<NAME>`, upper-cased), so
they are lower-case letters, digits and '_', starting with a letter; two names that differ
only in case would collide there, hence lower case only. Service names are DNS labels, so
that `NAME.service.hacontrol` is a name a resolver accepts.
"""

from __future__ import annotations

import re
from typing import Any

from .checks import no_unknown, obj, port
from .errors import invalid
from .spec import PortSpec, ServiceSpec

MAX_PORTS = 16
MAX_SERVICES = 16
PORT_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# A DNS label (RFC 1035 as relaxed by RFC 1123), lower case.
SERVICE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def port_env(name: str) -> str:
    """The environment variable an allocation finds its port `name` in."""
    return "HACONTROL_PORT_" + name.upper()


def parse_ports(raw: Any) -> tuple[PortSpec, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_PORTS:
        raise invalid("ports", f"must be a list of at most {MAX_PORTS} ports")
    out: list[PortSpec] = []
    names: set[str] = set()
    statics: set[int] = set()
    for i, p in enumerate(raw):
        d = obj(p, f"ports[{i}]")
        no_unknown(d, {"name", "static"}, f"ports[{i}].")
        name = d.get("name")
        if not isinstance(name, str) or not PORT_NAME_RE.fullmatch(name):
            raise invalid(f"ports[{i}].name", "required: 1-32 characters of a-z, 0-9 or '_', "
                                              "starting with a letter")
        if name in names:
            raise invalid(f"ports[{i}].name", f"duplicate port name {name!r}")
        names.add(name)
        static = d.get("static")
        if static is not None:
            static = port(static, f"ports[{i}].static")
            if static in statics:
                raise invalid(f"ports[{i}].static", f"port {static} is asked for twice")
            statics.add(static)
        out.append(PortSpec(name, static))
    return tuple(out)


def parse_services(raw: Any) -> tuple[ServiceSpec, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_SERVICES:
        raise invalid("services", f"must be a list of at most {MAX_SERVICES} services")
    out: list[ServiceSpec] = []
    names: set[str] = set()
    for i, s in enumerate(raw):
        d = obj(s, f"services[{i}]")
        no_unknown(d, {"name", "port"}, f"services[{i}].")
        name = d.get("name")
        if not isinstance(name, str) or not SERVICE_NAME_RE.fullmatch(name):
            raise invalid(f"services[{i}].name", "required: a DNS label (1-63 characters of "
                                                 "a-z, 0-9 or '-', not starting or ending "
                                                 "with '-')")
        if name in names:
            raise invalid(f"services[{i}].name", f"duplicate service name {name!r}")
        names.add(name)
        port_name = d.get("port")
        if not isinstance(port_name, str) or not port_name:
            raise invalid(f"services[{i}].port", "required: the name of one of the job's ports")
        out.append(ServiceSpec(name, port_name))
    return tuple(out)


def check_service_ports(ports: tuple[PortSpec, ...] | None,
                        services: tuple[ServiceSpec, ...] | None,
                        health_port: int | str | None = None) -> None:
    """Every service, and a health check that names its port, names one of the job's
    ports."""
    known = {p.name for p in ports or ()}
    for i, s in enumerate(services or ()):
        if s.port not in known:
            raise invalid(f"services[{i}].port", f"no port named {s.port!r} in ports")
    if isinstance(health_port, str) and health_port not in known:
        raise invalid("health.port", f"no port named {health_port!r} in ports (or give a "
                                     "port number)")


def parse_reported_ports(raw: Any, field: str) -> dict[str, int] | None:
    """The ports an agent says an allocation uses, by name (None when it says nothing)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > MAX_PORTS:
        raise invalid(field, f"must map at most {MAX_PORTS} port names to ports")
    out: dict[str, int] = {}
    for k, v in sorted(raw.items(), key=lambda kv: str(kv[0])):
        if not isinstance(k, str) or not PORT_NAME_RE.fullmatch(k):
            raise invalid(f"{field}.{k}", "not a port name")
        out[k] = port(v, f"{field}.{k}")
    return out
