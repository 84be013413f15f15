"""The link to a leader that a snapshot's configuration leaves out, kept until the log adds
that leader back (`node.py`'s `_SyncObj__updateClusterConfiguration` decides to keep it).

Installing a snapshot replaces a follower's configuration with the dump's, as of when the
dump was written; a leader that joined after that dump forwards it unchanged, and pysyncobj
would drop the link to it and refuse its connections (only members may connect): the
follower would hear nothing more, and the leader would see it dead at match index 0, until
someone the snapshot lists leads. Raft has a follower take entries from any leader of its
term, and the entries after the snapshot add that leader back, so the link is kept (not
the membership) until then. These helpers run on the tick thread, over our node's own
attributes (`_hc_kept`) and pysyncobj's (read from outside its class, so unmangled here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def register_only(transport: Any) -> Callable[[Any], None]:
    """pysyncobj's TCPTransport.addNode for a node it already links to: no new connection."""

    def add_node(node: Any) -> None:
        if node in transport._nodes and node in transport._connections:
            transport._nodes.add(node)
            transport._nodeAddrToNode[node.address] = node
        else:
            type(transport).addNode(transport, node)

    return add_node


@contextlib.contextmanager
def one_link(node: Any) -> Iterator[None]:
    """While a node is kept, pysyncobj adding it as a member takes over its link:
    registering it again would open a second connection and orphan the live one (never
    timed out)."""
    kept = node._hc_kept
    if kept is None:
        yield
        return
    transport = node._SyncObj__transport
    transport.addNode = register_only(transport)
    try:
        yield
    finally:
        del transport.addNode
        if kept in node._SyncObj__otherNodes:
            node._hc_kept = None


def release_kept(node: Any, leader_state: int) -> None:
    """Drop the kept link once another replica leads (or this one, `leader_state` being
    pysyncobj's leader state); forget it once it is a member again."""
    kept = node._hc_kept
    leader = node._SyncObj__raftLeader
    if kept in node._SyncObj__otherNodes:
        node._hc_kept = None
    elif node._SyncObj__raftState == leader_state or (leader is not None and leader != kept):
        node._hc_kept = None
        node._SyncObj__transport.dropNode(kept)
