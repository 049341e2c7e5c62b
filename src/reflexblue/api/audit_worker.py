"""The server's background audit writer: token rejections, rate-limited, and the daily retention purge.

Request handlers call :meth:`AuditWorker.token_rejected` on the event loop. It only counts and
queues, so it never blocks on the database and never raises. A daemon thread writes the queued
rows, and deletes events older than ``REFLEXBLUE_AUDIT_RETENTION_DAYS`` when it starts and then
once a day. Each server process runs its own worker, so the limits below apply per process.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reflexblue.logs import event
from reflexblue.storage.audit import purge_and_audit, retention_cutoff
from reflexblue.storage.database import Database
from reflexblue.storage.repository import audit

log = logging.getLogger(__name__)

#: Audit rows written per rejection reason and second, per process; further rejections are counted.
TOKEN_REJECTIONS_PER_SECOND = 5
#: Rows waiting for the writer thread; a rejection that finds the queue full is counted as suppressed.
QUEUE_SIZE = 1_000
#: Seconds between two retention purges of one process.
RETENTION_INTERVAL = 86_400.0
RETENTION_ACTOR = "system:retention"
MAX_PATH_LENGTH = 200
_IDLE_WAIT = 1.0
_BATCH_SIZE = 200
_STOP = object()


@dataclass(frozen=True, slots=True)
class SuppressedRejections:
    """Token rejections of one reason that got no audit row of their own."""

    reason: str
    count: int
    first_at: dt.datetime
    last_at: dt.datetime


@dataclass(slots=True)
class _ReasonWindow:
    second: int = -1
    written: int = 0
    suppressed: int = 0
    first_suppressed_at: dt.datetime | None = None
    last_suppressed_at: dt.datetime | None = None


@dataclass
class RejectionLimiter:
    """Admit at most ``per_second`` token rejections per reason and second; count the others.

    Thread-safe: the event loop calls :meth:`admit` and the writer thread calls :meth:`take_suppressed`.
    """

    per_second: int = TOKEN_REJECTIONS_PER_SECOND
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, _ReasonWindow] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, reason: str) -> bool:
        """Return whether this rejection gets an audit row; a rejection without one is counted as suppressed."""
        second = int(self.clock())
        with self._lock:
            window = self._windows.setdefault(reason, _ReasonWindow())
            if window.second != second:
                window.second = second
                window.written = 0
            if window.written < self.per_second:
                window.written += 1
                return True
            self._count(window)
            return False

    def count_dropped(self, reason: str) -> None:
        """Count an admitted rejection whose row could not be queued."""
        with self._lock:
            self._count(self._windows.setdefault(reason, _ReasonWindow()))

    @staticmethod
    def _count(window: _ReasonWindow) -> None:
        now = dt.datetime.now(dt.UTC)
        window.suppressed += 1
        window.last_suppressed_at = now
        if window.first_suppressed_at is None:
            window.first_suppressed_at = now

    def take_suppressed(self, *, include_current: bool = False) -> list[SuppressedRejections]:
        """Return and reset the suppressed counts whose second has ended (all of them with ``include_current``)."""
        second = int(self.clock())
        result = []
        with self._lock:
            for reason, window in self._windows.items():
                if not window.suppressed or (window.second == second and not include_current):
                    continue
                assert window.first_suppressed_at is not None and window.last_suppressed_at is not None
                result.append(SuppressedRejections(reason, window.suppressed, window.first_suppressed_at,
                                                   window.last_suppressed_at))
                window.suppressed = 0
                window.first_suppressed_at = window.last_suppressed_at = None
        return result


def _suppressed_row(summary: SuppressedRejections) -> dict[str, Any]:
    return {
        "event": "token.rejected.suppressed",
        "actor": "server",
        "at": summary.last_at,
        "detail": {
            "reason": summary.reason,
            "count": summary.count,
            "first_at": summary.first_at.isoformat(),
            "last_at": summary.last_at.isoformat(),
        },
    }


class AuditWorker:
    """Writes the server's own audit rows from a daemon thread; see the module documentation."""

    def __init__(
        self,
        database: Database,
        retention_days: int,
        *,
        limiter: RejectionLimiter | None = None,
        queue_size: int = QUEUE_SIZE,
        retention_interval: float = RETENTION_INTERVAL,
    ) -> None:
        self.database = database
        self.retention_days = retention_days
        self.limiter = limiter or RejectionLimiter()
        self.retention_interval = retention_interval
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._next_purge = 0.0

    def start(self) -> None:
        """Start the writer thread; its first task is the retention purge."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="reflexblue-audit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and the remaining suppressed counts, then stop the thread."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("audit writer queue still full after %.1f s at shutdown; queued rows may be lost", timeout)
        thread.join(timeout)
        self._thread = None

    def token_rejected(self, reason: str, path: str, client_address: str) -> None:
        """Queue a ``token.rejected`` row, unless this reason already had its rows this second. Non-blocking."""
        if not self.limiter.admit(reason):
            return
        row = {
            "event": "token.rejected",
            "actor": f"address:{client_address}",
            "at": dt.datetime.now(dt.UTC),
            "detail": {"reason": reason, "path": path[:MAX_PATH_LENGTH], "client_address": client_address},
        }
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.limiter.count_dropped(reason)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            rows: list[dict[str, Any]] = []
            try:
                item = self._queue.get(timeout=_IDLE_WAIT)
            except queue.Empty:
                item = None
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                rows.append(item)
                if len(rows) >= _BATCH_SIZE:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            rows.extend(_suppressed_row(summary) for summary in self.limiter.take_suppressed(include_current=stopping))
            try:
                if rows:
                    self.write(rows)
                if time.monotonic() >= self._next_purge and not stopping:
                    self._next_purge = time.monotonic() + self.retention_interval
                    self.purge_expired()
            except Exception:
                # The thread must outlive any database error; the next batch tries again.
                log.exception("audit writer failed; %d audit rows were not written", len(rows))

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` (keyword arguments of :func:`reflexblue.storage.repository.audit`) in one transaction."""
        with self.database.write() as session:
            for row in rows:
                audit(session, **row)

    def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Delete the events older than the retention period; return how many were deleted."""
        cutoff = retention_cutoff(self.retention_days, now)
        if cutoff is None:
            return 0
        with self.database.write() as session:
            deleted = purge_and_audit(session, cutoff, actor=RETENTION_ACTOR)
        if deleted:
            event("audit.purged", logging.INFO, deleted=deleted, cutoff=cutoff.isoformat(),
                  retention_days=self.retention_days)
        return deleted
