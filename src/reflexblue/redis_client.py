"""The optional Redis connection: client construction, and outage tracking shared by its users.

Redis is an accelerator, never a source of truth. The throttle falls back to the database while
Redis is unreachable, and access changes still arrive by polling the database. So every caller
catches Redis errors, reports them to :class:`RedisHealth` and carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis

from reflexblue.logs import event

#: Seconds to wait for a connection or a reply, so a login never waits longer on a stalled Redis.
REDIS_TIMEOUT_SECONDS = 0.5
#: Seconds during which Redis is not tried again after a failure.
RETRY_PAUSE_SECONDS = 5.0
#: At most one ``redis.unavailable`` event per this many seconds; later outages are counted instead.
OUTAGE_LOG_INTERVAL_SECONDS = 60.0

#: The exceptions that mean Redis failed or could not be reached; callers fall back on these.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def connect(url: str) -> redis.Redis:
    """Return a client for ``url`` with short timeouts; it connects lazily, on first use."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


def describe_redis_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))
    except ValueError:
        return "(invalid Redis URL)"


class RedisHealth:
    """Tracks whether Redis responded lately, with one log event per outage and one per recovery.

    After a failure, :attr:`available` stays false for ``RETRY_PAUSE_SECONDS``, so callers skip
    Redis instead of waiting for a timeout on every request. ``report`` receives the events; the
    server logs them, and the CLI prints a warning instead.
    """

    def __init__(self, url: str, report: Callable[..., None] = event) -> None:
        self._url = describe_redis_url(url)
        self._report = report
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._down_since: float | None = None
        self._outage_logged = False
        self._last_outage_event = -OUTAGE_LOG_INTERVAL_SECONDS
        self._outages_not_logged = 0

    @property
    def available(self) -> bool:
        """Whether callers should try Redis now (false for a pause after each failure)."""
        return time.monotonic() >= self._paused_until

    @property
    def down(self) -> bool:
        """Whether the last Redis operation failed."""
        return self._down_since is not None

    def failed(self, operation: str, error: BaseException) -> None:
        """Record a failed Redis ``operation``; the first failure of an outage is reported."""
        now = time.monotonic()
        with self._lock:
            self._paused_until = now + RETRY_PAUSE_SECONDS
            if self._down_since is not None:
                return
            self._down_since = now
            if now - self._last_outage_event < OUTAGE_LOG_INTERVAL_SECONDS:
                self._outage_logged = False
                self._outages_not_logged += 1
                return
            self._outage_logged = True
            self._last_outage_event = now
            earlier, self._outages_not_logged = self._outages_not_logged, 0
        self._report("redis.unavailable", logging.WARNING, redis=self._url, operation=operation,
                     error=type(error).__name__, detail=str(error)[:200], outages_not_logged=earlier,
                     fallback="throttle counters in the database, access changes by polling")

    def succeeded(self) -> None:
        """Record a Redis operation that worked; the end of a reported outage is reported too."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            seconds = time.monotonic() - self._down_since
            self._down_since = None
            self._paused_until = 0.0
            logged = self._outage_logged
        if logged:
            self._report("redis.recovered", logging.INFO, redis=self._url, unavailable_seconds=round(seconds, 1))
