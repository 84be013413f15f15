"""The agent's random numbers, for jitter only (restart and retry delays).

From os.urandom rather than the random module: the module and its seeding cost the agent
0.2-0.3 MB it would keep for its whole life, for a number it needs a few times a minute.
"""

from __future__ import annotations

import os

_BITS = 53  # a float's mantissa: every value below is exactly representable


def uniform() -> float:
    """A number in [0, 1), uniformly distributed."""
    return (int.from_bytes(os.urandom(7), "big") >> (56 - _BITS)) / (1 << _BITS)
