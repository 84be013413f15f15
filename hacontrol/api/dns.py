"""A small DNS responder for the service registry (off unless `hacontrol server --dns`).

Names, in the `hacontrol.` zone:

- `NAME.service.hacontrol` (namespace `default`) and `NAME.NS.service.hacontrol`: `SRV`
  records (`0 0 PORT TARGET`, one per endpoint) and `A` records (each endpoint's IPv4
  address once); a service no job declares is NXDOMAIN.
- `HEX.addr.hacontrol` (as Consul's: the IPv4 address in 8 hex digits), the target of an
  SRV record whose address is an IPv4 literal; its `A` record rides along in the SRV
  answer's additional section. An endpoint whose address is a host name has that name as
  its target.

DNS carries no token, so only the namespaces given (`--dns-namespace`, default `default`)
are answered for; others are NXDOMAIN, as if they did not exist. TTLs are 0: the registry
changes as allocations come and go, and a cached answer would outlive them. Answers read
this replica's registry as applied so far (a stale read, as Consul's DNS answers by
default). Parsing and building the messages is dnspython's; `answer` is a pure function
of the query and the registry, and `serve_dns` only moves the bytes.

UDP and TCP on the same address (RFC 7766: a responder must offer both): an answer too big
for the client's datagram (512 bytes, or its EDNS payload size) goes over UDP with its
records cut and the TC flag set, and a client asks again over TCP, which answers in full.
A TCP connection may carry several queries (each framed by its 2-byte length); it is
closed after `TCP_IDLE_S` without one, and at most `MAX_TCP_CONNECTIONS` are open at once
(more are closed at once: the responder must not be a way to hold the replica's sockets).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from hacontrol.state.machine import StateMachine

from .backend import Store

log = logging.getLogger("hacontrol.dns")

ZONE = dns.name.from_text("hacontrol.")
TTL = 0
UDP_PLAIN_MAX = 512  # without EDNS (RFC 1035)
TCP_MAX = 65535  # a TCP message's 2-byte length
TCP_IDLE_S = 10.0
MAX_TCP_CONNECTIONS = 64
MAX_SRV = 64  # more endpoints than this are cut (clients pick among those given)

# (address, port) of each endpoint of (namespace, name), or None: no such service.
Lookup = Callable[[str, str], Sequence[tuple[str, int]] | None]


def hex_target(address: str) -> str | None:
    """`7f000001.addr.hacontrol.` for an IPv4 literal, else None."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version != 4:
        return None
    return f"{int(ip):08x}.addr.hacontrol."


def _service_of(labels: tuple[str, ...], namespaces: frozenset[str]) -> tuple[str, str] | None:
    """(namespace, name) for `name[.ns].service` (labels under the zone), or None."""
    if len(labels) == 2 and labels[1] == "service" and "default" in namespaces:
        return "default", labels[0]
    if len(labels) == 3 and labels[2] == "service" and labels[1] in namespaces:
        return labels[1], labels[0]
    return None


def _addr_of(labels: tuple[str, ...]) -> str | None:
    if len(labels) == 2 and labels[1] == "addr" and len(labels[0]) == 8:
        try:
            return str(ipaddress.IPv4Address(int(labels[0], 16)))
        except ValueError:
            return None
    return None


def answer(wire: bytes, lookup: Lookup, namespaces: Iterable[str] = ("default",),
           tcp: bool = False) -> bytes | None:
    """The response to one query (over UDP, or TCP with `tcp`); None when it does not parse
    (dropped, as resolvers do)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    if query.opcode() != 0 or len(query.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if query.opcode() != 0 else dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if not qname.is_subdomain(ZONE) or question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)  # not ours: this is no recursive resolver
        return response.to_wire()
    response.flags |= dns.flags.AA
    labels = tuple(label.decode("ascii", "replace").lower()
                   for label in qname.relativize(ZONE).labels)
    service = _service_of(labels, frozenset(namespaces))
    addr = _addr_of(labels)
    if service is not None:
        found = lookup(*service)
        if found is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            _service_records(response, qname, qtype, found[:MAX_SRV])
    elif addr is not None:
        if qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            response.answer.append(dns.rrset.from_text(qname, TTL, "IN", "A", addr))
    else:
        response.set_rcode(dns.rcode.NXDOMAIN)
    limit = TCP_MAX if tcp else max(query.payload if query.edns >= 0 else UDP_PLAIN_MAX,
                                    UDP_PLAIN_MAX)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # Too many endpoints for one datagram: say so (TC), and the client asks over TCP,
        # where MAX_SRV endpoints always fit.
        response.answer.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()


def _service_records(response: dns.message.Message, qname: dns.name.Name, qtype: int,
                     found: Sequence[tuple[str, int]]) -> None:
    ipv4 = sorted({a for a, _ in found if hex_target(a) is not None})
    if qtype in (dns.rdatatype.SRV, dns.rdatatype.ANY) and found:
        srv = []
        extra = []
        for address, port in found:
            target = hex_target(address)
            if target is not None:
                extra.append(dns.rrset.from_text(target, TTL, "IN", "A", address))
            else:
                target = address.rstrip(".") + "."
            srv.append(f"0 0 {port} {target}")
        response.answer.append(dns.rrset.from_text(qname, TTL, "IN", "SRV", *srv))
        response.additional.extend(extra)
    if qtype in (dns.rdatatype.A, dns.rdatatype.ANY) and ipv4:
        response.answer.append(dns.rrset.from_text(qname, TTL, "IN", "A", *ipv4))


def registry_lookup(store: Store) -> Lookup:
    """A `Lookup` over this replica's registry as applied so far."""
    def lookup(namespace: str, name: str) -> list[tuple[str, int]] | None:
        def read(m: StateMachine) -> list[tuple[str, int]] | None:
            found = m.store.registry.endpoints.get((namespace, name))
            return None if found is None else [(e.address, e.port) for e in found]
        return store.read_local(read)
    return lookup


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, lookup: Lookup, namespaces: frozenset[str]) -> None:
        self.lookup = lookup
        self.namespaces = namespaces
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (the selector's class is not registered as a
        # subclass of asyncio.DatagramTransport, so no isinstance check).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            out = answer(data, self.lookup, self.namespaces)
        except Exception:  # one bad query must not end the responder
            log.exception("DNS query from %s failed", addr[0])
            return
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class _TcpResponder:
    """One task per connection: length-framed queries in, answers out, until EOF, idle or
    a frame that does not parse."""

    def __init__(self, lookup: Lookup, namespaces: frozenset[str]) -> None:
        self.lookup = lookup
        self.namespaces = namespaces
        self.open = 0

    async def __call__(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            if self.open <= MAX_TCP_CONNECTIONS:
                await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or fell silent
        except Exception:  # one bad query must not end the responder
            log.exception("DNS over TCP from %s failed", writer.get_extra_info("peername"))
        finally:
            self.open -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                return  # a clean EOF between queries
            size = int.from_bytes(head, "big")
            wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
            out = answer(wire, self.lookup, self.namespaces, tcp=True)
            if out is None:
                return
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()


class DnsServer:
    """The UDP endpoint and the TCP listener of one address."""

    def __init__(self, udp: asyncio.DatagramTransport, tcp: asyncio.Server) -> None:
        self.udp = udp
        self.tcp = tcp

    def get_extra_info(self, name: str) -> Any:
        """The UDP endpoint's (`sockname`: the TCP listener's address too)."""
        return self.udp.get_extra_info(name)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


async def serve_dns(host: str, port: int, lookup: Lookup,
                    namespaces: Iterable[str] = ("default",)) -> DnsServer:
    """Answer on UDP and TCP `host:port` until the returned server is closed (port 0: one
    free port, the same for both)."""
    loop = asyncio.get_running_loop()
    allowed = frozenset(namespaces)
    # Port 0: the free UDP port the kernel picks may be taken for TCP; try another.
    for attempt in range(1 if port else 20):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Responder(lookup, allowed), local_addr=(host, port))
        bound = int(transport.get_extra_info("sockname")[1])
        try:
            tcp = await asyncio.start_server(_TcpResponder(lookup, allowed), host, bound)
            break
        except OSError:
            transport.close()
            if port or attempt == 19:
                raise
    log.info("DNS for *.service.hacontrol on udp and tcp %s:%d (namespaces %s)", host, bound,
             ", ".join(sorted(allowed)))
    return DnsServer(transport, tcp)
