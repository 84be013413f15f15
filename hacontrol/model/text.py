"""Text that crosses into another format or onto a terminal, made safe for it."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the ESC/CSI/OSC sequences they start. Tab and newline stay:
# they lay text out but cannot rewrite the screen, retitle a window or reach the clipboard.
_TERMINAL_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"            # CSI ... final byte (colours, cursor moves, erase)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST (titles, hyperlinks, clipboard)
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"     # every other control character, ESC included
)


def prometheus_label(value: str) -> str:
    """`value` escaped for a label value in the Prometheus text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def strip_terminal_controls(text: str) -> str:
    """`text` without anything a terminal would act on rather than print."""
    return _TERMINAL_CONTROL.sub("", text)
