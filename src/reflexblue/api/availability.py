"""Database outages on the request path: shared refreshes and pings, and a bounded use of cached access.

Authenticated requests refresh the access caches at most every ``REFLEXBLUE_ACCESS_REFRESH_INTERVAL``
seconds (see :mod:`reflexblue.security.principal`). Requests that find a refresh due while one is
running wait for that one instead of starting their own, so a hanging database occupies one worker
thread, not one per request. When the refresh fails because the database is unavailable, requests
keep using the cached access data while it is at most :data:`ACCESS_STALENESS_LIMIT` seconds old.
After that the error is raised, and the API returns 503. A user whose snapshot is not cached
always needs the database, so it gets 503 during an outage and never access.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection

from reflexblue.api.runtime import Runtime
from reflexblue.logs import event
from reflexblue.storage.database import DatabaseTimeout, is_unavailable

#: Seconds that cached access data may still be used after the last successful check against the
#: database. Access changes must apply within one second on every instance, so it is 1.0.
ACCESS_STALENESS_LIMIT = 1.0
#: Seconds GET /readyz waits for the database before it reports the server as not ready.
READINESS_TIMEOUT = 2.0


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    # Marks the exception as retrieved, so asyncio does not log it when no caller awaited the call.
    if not future.cancelled():
        future.exception()


class SingleFlight:
    """A blocking call run in a worker thread, one at a time, whose outcome the callers that arrive meanwhile share."""

    def __init__(self, function: Callable[[], None]) -> None:
        self._function = function
        self._running: asyncio.Future[None] | None = None

    async def run(self) -> None:
        """Start the call unless one is running, then wait for the running call and return or raise its outcome.

        A caller that is cancelled, e.g. by a timeout, stops waiting but does not stop the call.
        """
        running = self._running
        if running is None or running.done() or running.get_loop() is not asyncio.get_running_loop():
            running = asyncio.ensure_future(sync_to_thread(self._function))
            running.add_done_callback(_retrieve_exception)
            self._running = running
        await asyncio.shield(running)


class Availability:
    """The per-process request-path view of the database: access refreshes and readiness pings."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._refresh = SingleFlight(runtime.refresh)
        self._ping = SingleFlight(runtime.database.ping)
        #: time.monotonic() of the first failed refresh of the current outage, None while refreshes succeed.
        self._failing_since: float | None = None

    async def refresh_access(self) -> None:
        """Refresh the access caches when due, and raise the database error once the cache is too old to use."""
        access = self.runtime.access
        if not access.refresh_due:
            return
        try:
            await self._wait_for_refresh()
        except Exception as error:
            if not is_unavailable(error):
                raise
            self._record_failure(error)
            if access.age > ACCESS_STALENESS_LIMIT:
                raise
            return
        self._record_recovery()

    async def _wait_for_refresh(self) -> None:
        """Wait for the shared refresh for at most the database timeout, then raise DatabaseTimeout.

        The timeout also bounds the wait when the database keeps a connection open but stops
        responding, which no driver timeout notices. The refresh itself goes on in its thread, and
        later requests wait for that same refresh.
        """
        timeout = self.runtime.database.timeout
        try:
            await asyncio.wait_for(self._refresh.run(), timeout)
        except TimeoutError:
            raise DatabaseTimeout(f"the access refresh did not finish within {timeout:g} s") from None

    async def ping_database(self) -> None:
        """Run SELECT 1 on the database, and raise TimeoutError after READINESS_TIMEOUT seconds."""
        await asyncio.wait_for(self._ping.run(), READINESS_TIMEOUT)

    def _record_failure(self, error: Exception) -> None:
        if self._failing_since is not None:
            return
        self._failing_since = time.monotonic()
        event("access.refresh_failed", logging.WARNING, error=type(error).__name__,
              detail=f"cached access data is used for at most {ACCESS_STALENESS_LIMIT:g} s after the last "
                     "successful refresh, then requests that need it get 503 until the database answers")

    def _record_recovery(self) -> None:
        if self._failing_since is None:
            return
        event("access.refresh_recovered", logging.INFO,
              failing_seconds=round(time.monotonic() - self._failing_since, 3))
        self._failing_since = None


def availability_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Availability:
    """Return the application's Availability, created on first use for the current runtime."""
    state = connection.app.state
    runtime: Runtime = state.runtime
    current: Availability | None = getattr(state, "availability", None)
    if current is None or current.runtime is not runtime:
        current = Availability(runtime)
        state.availability = current
    return current
