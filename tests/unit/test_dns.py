"""The DNS responder: answers built from a registry lookup, and a real UDP round trip."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import dns.asyncquery
import dns.exception
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


MANY = [(f"10.0.{i // 256}.{i % 256}", 20000 + i) for i in range(60)]


def many(ns: str, name: str) -> Sequence[tuple[str, int]] | None:
    return MANY if (ns, name) == ("default", "big") else lookup(ns, name)


def test_too_big_for_udp_sets_tc_and_tcp_answers_in_full() -> None:
    """60 endpoints do not fit a 512-byte datagram: UDP says TC with no records, TCP gives
    every one (and dnspython's resolver-style `udp_with_fallback` gets there by itself)."""
    async def go() -> None:
        server = await serve_dns("127.0.0.1", 0, many)
        try:
            port = server.get_extra_info("sockname")[1]
            q = dns.message.make_query("big.service.hacontrol.", "SRV")
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5,
                                         ignore_trailing=True)
            assert r.flags & dns.flags.TC and r.answer == []
            full = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=5)
            assert not full.flags & dns.flags.TC
            assert sorted(x.port for x in full.answer[0]) == [p for _, p in MANY]
            assert len(full.additional) == len(MANY)
            back, used_tcp = await dns.asyncquery.udp_with_fallback(
                q, "127.0.0.1", port=port, timeout=5)
            assert used_tcp and len(back.answer[0]) == len(MANY)
            # With EDNS and a big enough buffer, UDP carries it all.
            edns = dns.message.make_query("big.service.hacontrol.", "SRV", use_edns=0,
                                          payload=8192)
            r = await dns.asyncquery.udp(edns, "127.0.0.1", port=port, timeout=5)
            assert not r.flags & dns.flags.TC and len(r.answer[0]) == len(MANY)
        finally:
            server.close()
    asyncio.run(go())


def test_tcp_carries_several_queries_and_answers_refusals_too() -> None:
    async def go() -> None:
        server = await serve_dns("127.0.0.1", 0, lookup, ("default",))
        try:
            port = server.get_extra_info("sockname")[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            got = []
            for name in ("websvc.service.hacontrol.", "api.team.service.hacontrol.",
                         "example.org."):
                wire = dns.message.make_query(name, "SRV").to_wire()
                writer.write(len(wire).to_bytes(2, "big") + wire)
                size = int.from_bytes(await reader.readexactly(2), "big")
                got.append(dns.message.from_wire(await reader.readexactly(size)))
            assert [m.rcode() for m in got] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN,
                                                dns.rcode.REFUSED]
            assert len(got[0].answer[0]) == 2
            # A frame that does not parse ends the connection, not the responder.
            writer.write(b"\x00\x03abc")
            assert await reader.read() == b""
            writer.close()
            r = await dns.asyncquery.tcp(dns.message.make_query(
                "websvc.service.hacontrol.", "A"), "127.0.0.1", port=port, timeout=5)
            assert sorted(x.address for x in r.answer[0]) == ["10.0.0.2", "127.0.0.1"]
        finally:
            server.close()
    asyncio.run(go())


def test_tcp_connections_beyond_the_cap_are_closed_at_once() -> None:
    """Idle connections cannot pile up: past MAX_TCP_CONNECTIONS the next one is closed,
    and once they go, queries are answered again."""
    from hacontrol.api import dns as responder

    async def go() -> None:
        server = await serve_dns("127.0.0.1", 0, lookup)
        try:
            port = server.get_extra_info("sockname")[1]
            held = [await asyncio.open_connection("127.0.0.1", port)
                    for _ in range(responder.MAX_TCP_CONNECTIONS)]
            await asyncio.sleep(0)  # (the listener accepts them)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            for _, w in held:
                w.close()
            q = dns.message.make_query("websvc.service.hacontrol.", "SRV")

            async def answered() -> bool:
                try:
                    r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=2)
                except (EOFError, ConnectionError, dns.exception.Timeout):
                    return False
                return len(r.answer) == 1
            for _ in range(100):
                if await answered():
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("never answered again")
        finally:
            server.close()
    asyncio.run(go())


def test_hex_targets_only_for_ipv4() -> None:
    assert hex_target("192.168.1.10") == "c0a8010a.addr.hacontrol."
    assert hex_target("::1") is None and hex_target("host") is None
    assert dns.rdatatype.SRV  # the types used above exist in this dnspython
