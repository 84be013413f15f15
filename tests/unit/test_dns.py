"""The DNS responder: answers built from a registry lookup, and a real UDP round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from hacontrol.api.dns import answer, hex_target, serve_dns

SERVICES: dict[tuple[str, str], list[tuple[str, int]]] = {
    ("default", "websvc"): [("127.0.0.1", 21001), ("10.0.0.2", 21002)],
    ("team", "api"): [("api.example.org", 8080)],
    ("default", "idle"): [],
}


def lookup(ns: str, name: str) -> Sequence[tuple[str, int]] | None:
    return SERVICES.get((ns, name))


def ask(name: str, rdtype: str, namespaces: tuple[str, ...] = ("default",)
        ) -> dns.message.Message:
    wire = answer(dns.message.make_query(name, rdtype).to_wire(), lookup, namespaces)
    assert wire is not None
    return dns.message.from_wire(wire)


def test_srv_names_each_endpoint_and_a_gives_the_addresses() -> None:
    r = ask("websvc.service.hacontrol.", "SRV")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    (srv,) = r.answer
    assert sorted((x.port, x.target.to_text()) for x in srv) == [
        (21001, "7f000001.addr.hacontrol."), (21002, "0a000002.addr.hacontrol.")]
    assert srv.ttl == 0
    extra = {rr.name.to_text(): rr[0].address for rr in r.additional}
    assert extra == {"7f000001.addr.hacontrol.": "127.0.0.1",
                     "0a000002.addr.hacontrol.": "10.0.0.2"}
    (a,) = ask("WebSvc.Service.Hacontrol.", "A").answer  # names are case-insensitive
    assert sorted(x.address for x in a) == ["10.0.0.2", "127.0.0.1"]
    (back,) = ask("7f000001.addr.hacontrol.", "A").answer
    assert back[0].address == "127.0.0.1"


def test_namespaces_must_be_allowed_and_unknown_names_do_not_exist() -> None:
    assert ask("api.team.service.hacontrol.", "SRV").rcode() == dns.rcode.NXDOMAIN
    (srv,) = ask("api.team.service.hacontrol.", "SRV", ("default", "team")).answer
    assert srv[0].target.to_text() == "api.example.org."
    assert ask("nothing.service.hacontrol.", "A").rcode() == dns.rcode.NXDOMAIN
    idle = ask("idle.service.hacontrol.", "SRV")
    assert idle.rcode() == dns.rcode.NOERROR and idle.answer == []
    assert ask("example.org.", "A").rcode() == dns.rcode.REFUSED
    assert answer(b"\x00garbage", lookup) is None


def test_a_udp_round_trip() -> None:
    async def go() -> None:
        transport = await serve_dns("127.0.0.1", 0, lookup)
        try:
            port = transport.get_extra_info("sockname")[1]
            q = dns.message.make_query("websvc.service.hacontrol.", "SRV")
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)
            assert len(r.answer[0]) == 2
        finally:
            transport.close()
    asyncio.run(go())


def test_hex_targets_only_for_ipv4() -> None:
    assert hex_target("192.168.1.10") == "c0a8010a.addr.hacontrol."
    assert hex_target("::1") is None and hex_target("host") is None
    assert dns.rdatatype.SRV  # the types used above exist in this dnspython
