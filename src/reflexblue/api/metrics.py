"""Prometheus metrics: security event counters, request durations and the plan's External seats.

The counters are incremented where the matching events are logged (``login.*``,
``token.rejected``, ``permission.denied``). With several workers, ``reflexblue serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before the workers start. prometheus-client
then keeps each worker's values in files there, and a scrape sums the files of every worker.
That variable is read once, when prometheus-client is first imported, so it must be set before.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from litestar import Response, get
from litestar.concurrency import sync_to_thread
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import select
from wsgiref.simple_server import WSGIServer

from reflexblue.domain.access import ApiVersion
from reflexblue.settings import Settings
from reflexblue.storage.database import Database
from reflexblue.storage.models import Environment
from reflexblue.storage.repository import seats_used

log = logging.getLogger(__name__)

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
LOGIN_OUTCOMES = ("succeeded", "invalid_credentials", "user_inactive", "no_external_seat", "throttled")
#: Seconds a scrape reuses the seat counts of the previous one, so frequent scrapes cost one query a second.
SEATS_CACHE_SECONDS = 1.0
#: Request methods kept as label values; any other method is counted as "other", so labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Route label of requests that matched no route (404, 405), which would otherwise expose raw paths.
UNMATCHED_ROUTE = "unmatched"

LOGINS = Counter("reflexblue_logins", "Login attempts by outcome.", ["outcome"])
TOKEN_REJECTIONS = Counter("reflexblue_token_rejections", "Bearer tokens rejected with 401, by reason.", ["reason"])
PERMISSION_DENIALS = Counter(
    "reflexblue_permission_denials",
    "Requests rejected with 403 for a missing permission or External seat, by API version (none outside v1 and v2).",
    ["api_version"],
)
THROTTLED_ATTEMPTS = Counter(
    "reflexblue_throttled_attempts", "Login attempts rejected with 429, by the key that was blocked.", ["kind"]
)
REQUEST_DURATION = Histogram(
    "reflexblue_http_request_duration_seconds",
    "Time from the start of a request to the end of its response, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

for _outcome in LOGIN_OUTCOMES:
    LOGINS.labels(_outcome)
for _kind in ("user", "address"):
    THROTTLED_ATTEMPTS.labels(_kind)


def count_login(outcome: str) -> None:
    LOGINS.labels(outcome).inc()


def count_throttled(kind: str) -> None:
    LOGINS.labels("throttled").inc()
    THROTTLED_ATTEMPTS.labels(kind or "user").inc()


def count_token_rejection(reason: str) -> None:
    TOKEN_REJECTIONS.labels(reason).inc()


def count_permission_denial(version: ApiVersion | None) -> None:
    PERMISSION_DENIALS.labels(version.value if version is not None else "none").inc()


# ---------------------------------------------------------------------------------------------
# External seats, read from the database at scrape time


def read_seats(database: Database) -> tuple[int, int]:
    """Return (seats in use, seats of the plan); blocking."""
    with database.read() as session:
        plan = session.scalar(select(Environment.external_seats).where(Environment.id == 1))
        return seats_used(session), int(plan or 0)


class SeatCollector(Collector):
    """Collects ``reflexblue_external_seats{state="used"|"available"}`` from the attached database."""

    def __init__(self) -> None:
        self._read: Callable[[], tuple[int, int]] | None = None
        self._cached: tuple[float, tuple[int, int]] | None = None
        self._lock = threading.Lock()

    def attach(self, database: Database | None) -> None:
        """Read seats from ``database`` from now on; None stops reporting them."""
        with self._lock:
            self._read = (lambda: read_seats(database)) if database is not None else None
            self._cached = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        seats = self._seats()
        if seats is None:
            return
        used, plan = seats
        family = GaugeMetricFamily("reflexblue_external_seats", "External seats of the plan, used and available.",
                                   labels=["state"])
        family.add_metric(["used"], used)
        family.add_metric(["available"], max(plan - used, 0))
        yield family

    def _seats(self) -> tuple[int, int] | None:
        with self._lock:
            if self._read is None:
                return None
            if self._cached is not None and time.monotonic() - self._cached[0] < SEATS_CACHE_SECONDS:
                return self._cached[1]
            try:
                seats = self._read()
            except Exception:  # noqa: BLE001 - a failed query leaves the gauge out; the other metrics still go out
                log.warning("reading External seats for /metrics failed", exc_info=True)
                return None
            self._cached = (time.monotonic(), seats)
            return seats


SEATS = SeatCollector()
_registry: CollectorRegistry | None = None


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIRECTORY_VARIABLE))


def scrape_registry() -> CollectorRegistry:
    """Return the registry that a scrape reads: this process's metrics, or every worker's in multiprocess mode."""
    global _registry
    if _registry is None:
        if multiprocess_mode():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        registry.register(SEATS)
        _registry = registry
    return _registry


def start_listener(port: int) -> WSGIServer:
    """Serve the metrics on 127.0.0.1:``port`` from a daemon thread; stop it with ``shutdown()``."""
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=scrape_registry())
    return server


@get("/metrics", include_in_schema=False, cache_control=None)
async def metrics_endpoint() -> Response[bytes]:
    """Prometheus text exposition of every metric; no token, so keep it away from the public network."""
    body = await sync_to_thread(generate_latest, scrape_registry())
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------------------------------
# Request durations


class RequestMetrics:
    """ASGI wrapper that observes the duration of every HTTP request, labelled by route template.

    It wraps the application's router, so requests that match no route are observed too, with
    the route label ``unmatched``.
    """

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        # Labelled histograms by (method, route, status), so a request skips the label validation of labels().
        self._histograms: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            method = scope.get("method", "")
            labels = (method if method in _METHODS else "other", scope.get("path_template") or UNMATCHED_ROUTE,
                      str(status))
            histogram = self._histograms.get(labels)
            if histogram is None:
                histogram = self._histograms[labels] = REQUEST_DURATION.labels(*labels)
            histogram.observe(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# Start and stop with the application


def start_metrics(settings: Settings, database: Database) -> WSGIServer | None:
    """Attach the seat gauge to ``database`` and, with a metrics port, start the separate listener.

    In multiprocess mode the listener is left to ``reflexblue serve``, which runs it once for all
    workers. Returns the listener, or None.
    """
    if not settings.metrics:
        return None
    SEATS.attach(database)
    if not settings.metrics_port or multiprocess_mode():
        return None
    try:
        listener = start_listener(settings.metrics_port)
    except OSError as error:
        raise RuntimeError(
            f"cannot serve metrics on 127.0.0.1:{settings.metrics_port} (REFLEXBLUE_METRICS_PORT): {error}: "
            "choose a free port, or 0 to serve /metrics on the main port"
        ) from error
    log.info("serving metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)
    return listener


def stop_metrics(listener: WSGIServer | None) -> None:
    SEATS.attach(None)
    if listener is not None:
        listener.shutdown()
        listener.server_close()
