"""Structured logging: one event per meaningful action, as JSON lines or readable text.

The library configures no handlers; the CLI calls :func:`configure_logging` once.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from typing import Any

EVENT_LOGGER = "reflexblue.events"
_events = logging.getLogger(EVENT_LOGGER)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log the security or operations event ``name`` with key/value ``fields`` (never secrets)."""
    _events.log(level, name, extra={"event_fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "event_fields", None)
        if fields is not None:
            payload["event"] = record.getMessage()
            payload.update(fields)
        else:
            payload["message"] = record.getMessage()
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "event_fields", None)
        text = record.getMessage()
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{self.formatTime(record)} {record.levelname.lower():7} {record.name}: {text}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class RepeatedEventLog:
    """A rate limit for one log event: at most one per ``interval`` seconds, with the repeats in between counted.

    Each logged event carries ``suppressed``: how many were left out since the previous one.
    Thread-safe.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._logged_at = -math.inf
        self._suppressed = 0
        self._lock = threading.Lock()

    def event(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._logged_at < self._interval:
                self._suppressed += 1
                return
            suppressed = self._suppressed
            self._suppressed = 0
            self._logged_at = now
        event(name, level, suppressed=suppressed, **fields)
