"""Every replica and agent in its own network namespace, joined by a bridge.

Layout of one run (RID: random per run, so parallel runs and leftovers never clash):

    hcx-RID-br   namespace holding bridge br0; one veth port per member, plus "host"
    hcx-RID-c1   a replica: eth0 = 10.A.B.1/24, raft :7000, api :8000
    hcx-RID-n1   an agent: eth0 = 10.A.B.(replicas + 1)/24
    hcx-RID-c4   a replica added later (`add_replica`): the next free address after those
    hcx-RID      root-namespace veth into the bridge, 10.A.B.254/24: the test client's way in

The bridge sits in a namespace of its own because once dockerd has run, the root
namespace's FORWARD policy may drop bridged traffic. 10.A.B.0/24 is drawn at random among
subnets no route on the host already covers.

Faults are nftables rules in table `inet hacontrol_chaos` inside each member's namespace:
partitions drop by peer address in both directions at both ends; loss drops a random
`numgen` share. Traffic to and from the host address and loopback is always accepted, so
the test client can watch every member whatever the fault. Delay would need `tc netem`,
which some kernels lack; this backend offers none.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import sys

from .base import KILL, LOSS, MEMBERSHIP, PARTITION, PAUSE, POWER, ClusterSpec, Member
from .cleanup import PREFIX, Registry, run_cmd
from .local import BackendUnavailable, ProcessBackend

TABLE = "hacontrol_chaos"
RAFT_PORT = 7000
API_PORT = 8000
AGENT_PORT = 9000
HOST_OCTET = 254


def check_tools() -> None:
    """Raise BackendUnavailable naming whatever this backend needs and the machine lacks."""
    problems = []
    if not sys.platform.startswith("linux"):
        problems.append("network namespaces need Linux")
    elif os.geteuid() != 0:
        problems.append("network namespaces and nftables need root")
    if shutil.which("ip") is None:
        problems.append("`ip` not found (apt-get install -y iproute2)")
    if shutil.which("nft") is None:
        problems.append("`nft` not found (apt-get install -y nftables)")
    if problems:
        raise BackendUnavailable("netns backend unavailable: " + "; ".join(problems))


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for argv in (["ip", "-4", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
        for line in run_cmd(argv, check=False).stdout.splitlines():
            for tok in line.split():
                if tok[0].isdigit() and ("/" in tok or tok.count(".") == 3):
                    try:
                        nets.append(ipaddress.IPv4Network(tok, strict=False))
                    except ValueError:
                        pass
    return nets


def pick_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    rng = rng or random.SystemRandom()
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randrange(64, 250)}.{rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise BackendUnavailable("no free 10.x.y.0/24 subnet found for the chaos network")


def _base_ruleset(host: str) -> str:
    return f"""
table inet {TABLE} {{
    chain partition_in {{}}
    chain partition_out {{}}
    chain loss_in {{}}
    chain loss_out {{}}
    chain input {{
        type filter hook input priority 0; policy accept;
        iif "lo" accept
        ip saddr {host} accept
        jump partition_in
        jump loss_in
    }}
    chain output {{
        type filter hook output priority 0; policy accept;
        oif "lo" accept
        ip daddr {host} accept
        jump partition_out
        jump loss_out
    }}
}}
"""


class NetnsBackend(ProcessBackend):
    """Members in network namespaces; capabilities: kill, pause, partition, loss, power,
    membership changes.

    Power-loss mounts are made in the root mount namespace before a replica starts; the
    mount namespace `ip netns exec` makes for it is a copy, so it sees the mount.
    """

    name = "netns"
    capabilities = frozenset({KILL, PAUSE, PARTITION, LOSS, POWER, MEMBERSHIP})

    def __init__(self, python: str = sys.executable) -> None:
        super().__init__(python)
        self.subnet: ipaddress.IPv4Network | None = None
        self.host_addr = ""
        self.bridge_ns = ""
        self.host_link = ""
        self._ns: dict[str, str] = {}  # member name -> namespace

    def setup(self, spec: ClusterSpec) -> list[Member]:
        check_tools()
        if spec.replicas + spec.agents >= HOST_OCTET:
            raise ValueError("too many members for one /24")
        return super().setup(spec)

    def _prepare(self, spec: ClusterSpec, reg: Registry) -> None:
        rid = reg.run_id
        self.subnet = pick_subnet()
        self.host_addr = str(self.subnet.network_address + HOST_OCTET)
        self.bridge_ns = f"{PREFIX}{rid}-br"
        self.host_link = f"{PREFIX}{rid}"
        br = self.bridge_ns
        self._netns_add(reg, br)
        run_cmd(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        run_cmd(["ip", "-n", br, "link", "set", "br0", "up"])
        reg.add_link(self.host_link)
        run_cmd(["ip", "link", "add", self.host_link, "type", "veth",
                 "peer", "name", "host", "netns", br])
        run_cmd(["ip", "-n", br, "link", "set", "host", "master", "br0", "up"])
        run_cmd(["ip", "addr", "add", f"{self.host_addr}/24", "dev", self.host_link])
        run_cmd(["ip", "link", "set", self.host_link, "up"])
        names = ([f"c{i + 1}" for i in range(spec.replicas)]
                 + [f"n{j + 1}" for j in range(spec.agents)])
        for index, name in enumerate(names):
            self._attach(name, index)

    def _attach(self, name: str, index: int) -> None:
        """The member's namespace, its port on the bridge, its address and its fault table
        (no rule yet: a replica added during a partition sees everyone until placed)."""
        assert self.registry is not None
        if index >= HOST_OCTET - 1:
            raise ValueError("too many members for one /24")
        ns = f"{PREFIX}{self.registry.run_id}-{name}"
        br = self.bridge_ns
        self._netns_add(self.registry, ns)
        self._ns[name] = ns
        run_cmd(["ip", "-n", br, "link", "add", name, "type", "veth",
                 "peer", "name", "eth0", "netns", ns])
        run_cmd(["ip", "-n", br, "link", "set", name, "master", "br0", "up"])
        run_cmd(["ip", "-n", ns, "addr", "add", f"{self._address(index)}/24", "dev", "eth0"])
        run_cmd(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run_cmd(["ip", "-n", ns, "link", "set", "lo", "up"])
        self._nft(name, _base_ruleset(self.host_addr))

    @staticmethod
    def _netns_add(reg: Registry, ns: str) -> None:
        # Registered first: a failure half-way through `add` must still be swept.
        reg.add_namespace(ns)
        run_cmd(["ip", "netns", "add", ns])

    def _address(self, index: int) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + index + 1)

    def _ports(self, host: str) -> tuple[int, int]:
        return RAFT_PORT, API_PORT  # every member has a network stack to itself

    def _agent_port(self, host: str) -> int:
        return AGENT_PORT  # a network stack of its own, as for replicas

    def _wrap(self, member: Member, argv: list[str]) -> list[str]:
        # `ip netns exec` execs the command in place, so the Popen pid is the member's own.
        return ["ip", "netns", "exec", self._ns[member.name], *argv]

    def namespace(self, name: str) -> str:
        return self._ns[name]

    # ----------------------------------------------------------------- faults

    def _nft(self, name: str, script: str) -> None:
        run_cmd(["ip", "netns", "exec", self._ns[name], "nft", "-f", "-"], input_text=script)

    def ruleset(self, name: str) -> str:
        """The member's fault table as nft lists it (for tests and post-mortems)."""
        return run_cmd(["ip", "netns", "exec", self._ns[name], "nft", "list", "table",
                        "inet", TABLE]).stdout

    def partition(self, groups: list[set[str]]) -> None:
        with self._lock:
            members = {m.name: m for m in self.members()}
            unknown = set().union(*groups) - members.keys() if groups else set()
            if unknown:
                raise KeyError(f"partition names unknown members: {sorted(unknown)}")
            for name in members:
                blocked = sorted(
                    members[o].host for o in members
                    if o != name and not any(name in g and o in g for g in groups))
                lines = [f"flush chain inet {TABLE} partition_in",
                         f"flush chain inet {TABLE} partition_out"]
                if blocked:
                    addrs = ", ".join(blocked)
                    lines += [f"add rule inet {TABLE} partition_in ip saddr {{ {addrs} }} drop",
                              f"add rule inet {TABLE} partition_out ip daddr {{ {addrs} }} drop"]
                self._nft(name, "\n".join(lines) + "\n")

    def loss(self, name: str, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be 0..100, not {percent}")
        with self._lock:
            self._proc(name)
            lines = [f"flush chain inet {TABLE} loss_in", f"flush chain inet {TABLE} loss_out"]
            if percent:
                lines += [f"add rule inet {TABLE} {chain} numgen random mod 100 < {percent} drop"
                          for chain in ("loss_in", "loss_out")]
            self._nft(name, "\n".join(lines) + "\n")

    def heal(self) -> None:
        with self._lock:
            script = "".join(f"flush chain inet {TABLE} {c}\n" for c in
                             ("partition_in", "partition_out", "loss_in", "loss_out"))
            for name in self._ns:
                self._nft(name, script)
