"""Log output for the daemons: the usual text lines, or one JSON object per line
(`--log-format json`) for a log shipper to index.

The JSON formatter is a few lines over the standard library's `logging.Formatter`: it needs
no dependency in the agent (which stays small) and has nothing to configure beyond what
`logging` already knows. Every attribute a caller adds with ``extra=`` becomes a field.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord carries: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a message's newlines are escaped):
    time (UTC, ISO 8601), level, logger, message, the `extra=` fields, and the traceback
    as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        # Imported on the first JSON record: an agent logging text keeps 0.3 MB less.
        from datetime import UTC, datetime

        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra field that JSON cannot encode is logged as its text, never
        # lost with the record.
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text",
                      stream: TextIO | None = None) -> None:
    """The root logger writes to stderr (or `stream`) at `level` in `log_format`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
