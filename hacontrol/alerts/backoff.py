"""When to try a failed delivery again: pure, with the randomness passed in.

Exponential from `BASE_S`, capped at `MAX_S`; jitter removes up to half of the delay (as
`agent/backoff.py` does for restarts), so receivers that come back are not hit by every
retry at once, and the delay never exceeds the cap.
"""

from __future__ import annotations

BASE_S = 1.0
MAX_S = 120.0
JITTER = 0.5
_MAX_EXPONENT = 1000


def base_delay(attempts: int) -> float:
    """The delay after `attempts` failed attempts (1 for the first failure), before jitter."""
    exponent = min(max(attempts - 1, 0), _MAX_EXPONENT)
    return min(BASE_S * 2.0**exponent, MAX_S)


def retry_delay(attempts: int, rand: float) -> float:
    """Jittered delay; `rand` in [0, 1] (0 gives the full base delay)."""
    rand = min(max(rand, 0.0), 1.0)
    return base_delay(attempts) * (1.0 - JITTER * rand)


def due(next_at: float, now: float) -> bool:
    return next_at <= now
