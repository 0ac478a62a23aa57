"""Log lines for machines: `--log-format json` writes one JSON object per event.

A log shipper should not have to parse free text, and a message containing a
newline must not become two events; `json.dumps` escapes it. The fields are the
ones every event has (ts, level, logger, message, role), plus the traceback when
there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, message, role."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        event = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                 "role": self.role}
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)
