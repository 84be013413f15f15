"""User-supplied regular expressions, matched in linear time.

A `regexp` constraint is user input evaluated by the leader on its event loop; with a
backtracking engine `^(a+)+$` against a long node name freezes the loop and, through the
interpreter lock, the Raft thread. RE2 (`google-re2`) matches in time linear in the input,
refuses what it cannot match that way (backreferences, lookaround), and bounds the memory a
compiled pattern may take. Patterns are short and inputs are short, so one match is cheap.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import re2

MAX_PATTERN_LEN = 512
# RE2's memory budget for one compiled pattern; enough for any pattern under the length cap
# that is not a deliberate blow-up such as `(((a{100}){100}){100})`.
_MAX_MEM = 1 << 20


class Matcher(Protocol):
    def search(self, text: str) -> object | None: ...


def _options() -> re2.Options:
    import re2  # here: RE2 costs processes that never match a pattern (agents) 2 MB

    opts = re2.Options()
    opts.log_errors = False  # a refused pattern is an answer to the user, not a log line
    opts.max_mem = _MAX_MEM
    return opts


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Matcher:
    """The compiled pattern; raises `ValueError` saying why it is refused."""
    if len(pattern) > MAX_PATTERN_LEN:
        raise ValueError(f"longer than {MAX_PATTERN_LEN} characters")
    import re2

    try:
        compiled: Matcher = re2.compile(pattern, options=_options())
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        raise ValueError(why.decode(errors="replace") if isinstance(why, bytes)
                         else str(why)) from None
    return compiled
