"""What every replica keeps proposing in the background for the access-control state: the
controllers' credential (once), and the removal of expired tokens (while it leads)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

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


async def keep_controller_credential(ctl: Proposer, credential: str) -> None:
    """Have the state keep `credential` (derived from this replica's cluster secret) as the
    controllers' credential, unless it keeps one already. The first applied stays, so a
    later change of the cluster secret leaves what agents pinned unchanged. A cluster made
    before the state kept it proposes the value its agents pinned: the same derivation."""
    while ctl.read_local(lambda m: m.controller_credential) is None:
        try:
            await ctl.propose(C.CONTROLLER_CREDENTIAL, {"credential": credential})
        except Rejection as exc:
            log.error("the state refused the controllers' credential: %s", exc)
            return
        except (NotApplied, OutcomeUnknown, CommandFailed, Unsupported) as exc:
            # Unsupported: at start, before this replica has heard its peers report
            # their versions, every peer counts as the oldest; it clears within a poll.
            log.debug("controllers' credential not applied yet: %s", exc)
            await asyncio.sleep(0.5)
        except Exception:
            log.exception("proposing the controllers' credential failed; retrying")
            await asyncio.sleep(1.0)


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
        except (Rejection, NotApplied, OutcomeUnknown, CommandFailed, Unsupported) as exc:
            log.debug("token prune not applied: %s", exc)
        except Exception:
            log.exception("token prune failed")
