"""Colour for human output: only on a terminal, never with NO_COLOR (https://no-color.org)
or TERM=dumb, and never in --json output.

Colour is added last, to text already made terminal-safe: it wraps whole words of a fixed
vocabulary of states in our own escape codes, so nothing a server sent can add or bend one,
and since the words keep their width, table columns stay aligned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import IO

GREEN, YELLOW, RED, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[0m"
STATE_COLOURS: dict[str, str] = {
    **dict.fromkeys(("running", "healthy", "ready", "leader", "complete", "successful",
                     "passing"), GREEN),
    **dict.fromkeys(("pending", "starting", "draining", "paused", "restarting", "stopping",
                     "degraded", "unknown", "candidate", "disconnected"), YELLOW),
    **dict.fromkeys(("failed", "lost", "down", "unhealthy", "oom", "killed", "dead",
                     "critical", "error"), RED),
}
# A state word stands alone: not part of a name ("x-failed"), a path, or a key ("failed=0"
# in a count, which would turn red while saying nothing failed).
_WORDS = re.compile(r"(?<![\w/.-])(" + "|".join(sorted(STATE_COLOURS, key=len, reverse=True))
                    + r")(?![\w/.=-])")


def enabled(out: IO[str], env: Mapping[str, str] | None = None) -> bool:
    """Whether `out` gets colour: a terminal, and the user did not opt out."""
    env = os.environ if env is None else env
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str) -> str:
    """`text` with the state words coloured (text must already be terminal-safe)."""
    return _WORDS.sub(lambda m: f"{STATE_COLOURS[m.group(1)]}{m.group(1)}{RESET}", text)


_DIFF_MARKS = {"+": GREEN, "-": RED, "~": YELLOW}


def plan(text: str) -> str:
    """A rendered `job plan` (terminal-safe) coloured as `nomad job plan` colours one: each
    diff line by its mark (+ green, - red, ~ yellow), a quota refusal red, a warning
    yellow, and state words elsewhere as `paint` does."""
    lines = []
    for line in text.split("\n"):
        body = line.lstrip(" ")
        mark = _DIFF_MARKS.get(body[:1]) if body[1:2] == " " else None
        if mark is not None:
            lines.append(f"{mark}{line}{RESET}")
        elif body.startswith("Quota: exceeded"):
            lines.append(f"{RED}{line}{RESET}")
        elif body.startswith("WARNING:"):
            lines.append(f"{YELLOW}{line}{RESET}")
        else:
            lines.append(paint(line))
    return "\n".join(lines)


def word(state: str) -> str:
    """One state word in its colour (unchanged when it has none); the caller has checked
    `enabled` and that the word is terminal-safe."""
    c = STATE_COLOURS.get(state)
    return f"{c}{state}{RESET}" if c else state
