"""What every replica keeps proposing in the background for the access-control state: the
controllers' credential (once), and the removal of expired tokens (while it leads)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from hacontrol.controller.errors import CommandFailed, NotApplied, OutcomeUnknown, Unsupported
from hacontrol.model.errors import Rejection
from hacontrol.state import commands as C
from hacontrol.state.handlers.acl import PRUNE_MAX, expired_tokens
from hacontrol.state.machine import StateMachine

from .leader_state import Leadership
from .loop import Proposer

log = logging.getLogger("hacontrol.upkeep")

# How often the leader looks for expired tokens. They are refused from their expiry on
# whatever this is; pruning only keeps the state from growing with them.
PRUNE_INTERVAL_S = 5.0
# Between proposals of the controllers' credential that the log could not take yet.
CREDENTIAL_RETRY_S = 0.5
# What a proposal may fail with and still be worth repeating as it was: the log could not
# take it now, or (Unsupported) a voter does not know the command type yet, mid-upgrade:
# the version gate (controller/versions.py) refused it before it reached the log.
NOT_YET = (NotApplied, OutcomeUnknown, CommandFailed, Unsupported)


async def propose_until(done: Callable[[], bool], propose: Callable[[], Awaitable[object]],
                        what: str, retry_s: float) -> Rejection | None:
    """Propose until `done()` holds (None then), or until the state refuses the command
    (that `Rejection`, for the caller to judge). Never gives up otherwise: a replica left
    without what it proposes (a bootstrapped token, the controllers' credential) would
    never become ready. `propose` must be idempotent (same key, or a command that does
    nothing once `done`)."""
    while not done():
        try:
            await propose()
        except Rejection as exc:
            return exc
        except NOT_YET as exc:
            log.debug("%s not applied yet: %s", what, exc)
            await asyncio.sleep(retry_s)
        except Exception:
            log.exception("proposing %s failed; retrying", what)
            await asyncio.sleep(1.0)
        else:
            if not done():
                # Applied, yet not done (a write answered before its entry applied here):
                # proposing again at once spun the event loop without a pause.
                await asyncio.sleep(retry_s)
    return None


async def keep_controller_credential(ctl: Proposer, credential: str) -> None:
    """Have the state keep `credential` (derived from this replica's cluster secret) as the
    controllers' credential, unless it keeps one already. The first applied stays, so a
    later change of the cluster secret leaves what agents pinned unchanged. A cluster made
    before the state kept it proposes the value its agents pinned: the same derivation.
    In a cluster with replicas older than the command, this waits for their upgrade."""
    refused = await propose_until(
        lambda: ctl.read_local(lambda m: m.controller_credential) is not None,
        lambda: ctl.propose(C.CONTROLLER_CREDENTIAL, {"credential": credential}),
        "the controllers' credential", CREDENTIAL_RETRY_S)
    if refused is not None:
        log.error("the state refused the controllers' credential: %s", refused)


def _first_expired(now: float) -> Callable[[StateMachine], list[str]]:
    return lambda m: expired_tokens(m.acl_tokens.values(), now, 1)


async def prune_expired_tokens(ctl: Proposer, leadership: Leadership,
                               interval_s: float = PRUNE_INTERVAL_S) -> None:
    """While this replica leads, propose `acl_token_prune` whenever a token has expired.
    The command removes what expired by its own stamped time, at most PRUNE_MAX at once:
    the next round (at once while more are left) takes the rest."""
    more = False
    while True:
        if not more:
            await asyncio.sleep(interval_s)
        more = False
        if leadership.current() is None:
            continue
        now = time.time()
        try:
            if not ctl.read_local(_first_expired(now)):
                continue
            res = await ctl.propose(C.ACL_TOKEN_PRUNE, {"limit": PRUNE_MAX})
            more = len(res.get("pruned") or ()) >= PRUNE_MAX
        except (Rejection, *NOT_YET) as exc:
            log.debug("token prune not applied: %s", exc)
        except Exception:
            log.exception("token prune failed")
