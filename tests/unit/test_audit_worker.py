"""The server's audit writer: rate-limited token rejections, retention purge, and the 401 path in the app."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.exc import OperationalError

from reflexblue.api.app import create_app
from reflexblue.api.audit_worker import MAX_PATH_LENGTH, RETENTION_ACTOR, AuditWorker, RejectionLimiter
from reflexblue.settings import Settings
from reflexblue.storage import audit as audit_trail
from reflexblue.storage.database import Database
from reflexblue.storage.repository import audit

WAIT_SECONDS = 10.0


class FakeClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Row:
    """An audit event copied out of its session."""

    event: str
    actor: str
    detail: dict[str, Any]


def events(database: Database, prefix: str) -> list[Row]:
    """Return the events named ``prefix`` or below it, oldest first."""
    with database.read() as session:
        found = audit_trail.list_events(session, event=prefix, limit=10_000)
        return [Row(item.event, item.actor, item.detail) for item in reversed(found)]


def wait_for_events(database: Database, prefix: str, count: int) -> list[Row]:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = events(database, prefix)
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"expected {count} {prefix} events within {WAIT_SECONDS} s, found {len(found)}")


@pytest.fixture
def worker(sqlite_database: Database) -> Iterator[AuditWorker]:
    """A started worker with the default retention; closed after the test."""
    started = AuditWorker(sqlite_database, 365)
    started.start()
    yield started
    started.close()


# ------------------------------------------------------------------------------------------------
# RejectionLimiter


def test_limiter_admits_per_second_limit() -> None:
    limiter = RejectionLimiter(per_second=3, clock=FakeClock())

    admitted = [limiter.admit("bad_signature") for _ in range(5)]

    assert admitted == [True, True, True, False, False]


def test_limiter_counts_reasons_separately() -> None:
    limiter = RejectionLimiter(per_second=1, clock=FakeClock())

    assert limiter.admit("bad_signature")
    assert not limiter.admit("bad_signature")
    assert limiter.admit("expired")


def test_limiter_admits_again_next_second() -> None:
    clock = FakeClock()
    limiter = RejectionLimiter(per_second=1, clock=clock)
    limiter.admit("expired")

    clock.now += 1.0

    assert limiter.admit("expired")


def test_limiter_reports_suppressed_after_second_ends() -> None:
    clock = FakeClock()
    limiter = RejectionLimiter(per_second=1, clock=clock)
    for _ in range(4):
        limiter.admit("expired")

    during = limiter.take_suppressed()
    clock.now += 1.0
    after = limiter.take_suppressed()

    assert during == []
    assert [(summary.reason, summary.count) for summary in after] == [("expired", 3)]
    assert limiter.take_suppressed() == []


def test_limiter_reports_current_second_when_asked() -> None:
    limiter = RejectionLimiter(per_second=1, clock=FakeClock())
    limiter.admit("expired")
    limiter.admit("expired")

    (summary,) = limiter.take_suppressed(include_current=True)

    assert (summary.reason, summary.count) == ("expired", 1)
    assert summary.first_at <= summary.last_at


def test_limiter_counts_dropped_rows() -> None:
    clock = FakeClock()
    limiter = RejectionLimiter(per_second=5, clock=clock)
    limiter.count_dropped("malformed")
    clock.now += 1.0

    (summary,) = limiter.take_suppressed()

    assert (summary.reason, summary.count) == ("malformed", 1)


# ------------------------------------------------------------------------------------------------
# AuditWorker


def test_worker_writes_token_rejection(worker: AuditWorker, sqlite_database: Database) -> None:
    worker.token_rejected("bad_signature", "/api/v2/administrations", "203.0.113.7")

    (row,) = wait_for_events(sqlite_database, "token.rejected", 1)

    assert row.event == "token.rejected"
    assert row.actor == "address:203.0.113.7"
    assert row.detail == {"reason": "bad_signature", "path": "/api/v2/administrations",
                          "client_address": "203.0.113.7"}


def test_worker_truncates_long_path(worker: AuditWorker, sqlite_database: Database) -> None:
    worker.token_rejected("malformed", "/" + "x" * 5000, "203.0.113.7")

    (row,) = wait_for_events(sqlite_database, "token.rejected", 1)

    assert len(row.detail["path"]) == MAX_PATH_LENGTH


def test_worker_flood_is_bounded_and_counted(sqlite_database: Database) -> None:
    limiter = RejectionLimiter(per_second=5, clock=FakeClock())
    worker = AuditWorker(sqlite_database, 365, limiter=limiter)
    worker.start()

    for _ in range(100):
        worker.token_rejected("bad_signature", "/api/security/permissions", "203.0.113.7")
    worker.close()

    written = [row for row in events(sqlite_database, "token.rejected") if row.event == "token.rejected"]
    summaries = events(sqlite_database, "token.rejected.suppressed")
    assert len(written) == 5
    assert [(row.detail["reason"], row.detail["count"]) for row in summaries] == [("bad_signature", 95)]


def test_worker_full_queue_counts_drops(sqlite_database: Database) -> None:
    worker = AuditWorker(sqlite_database, 365, limiter=RejectionLimiter(per_second=100, clock=FakeClock()),
                         queue_size=2)

    started = time.monotonic()
    for _ in range(10):
        worker.token_rejected("expired", "/api/v1/administrations", "203.0.113.7")

    assert time.monotonic() - started < 1.0
    (summary,) = worker.limiter.take_suppressed(include_current=True)
    assert (summary.reason, summary.count) == ("expired", 8)


def test_worker_survives_write_failure(sqlite_database: Database, caplog: pytest.LogCaptureFixture) -> None:
    class FailingOnce(AuditWorker):
        failed = False

        def write(self, rows: list[dict[str, Any]]) -> None:
            if not self.failed:
                self.failed = True
                raise OperationalError("INSERT", {}, Exception("database is locked"))
            super().write(rows)

    worker = FailingOnce(sqlite_database, 365, limiter=RejectionLimiter(per_second=10, clock=time.monotonic))
    worker.start()
    with caplog.at_level(logging.ERROR, logger="reflexblue.api.audit_worker"):
        worker.token_rejected("expired", "/first", "203.0.113.7")
        deadline = time.monotonic() + WAIT_SECONDS
        while not worker.failed and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.token_rejected("expired", "/second", "203.0.113.7")
        (row,) = wait_for_events(sqlite_database, "token.rejected", 1)
    worker.close()

    assert row.detail["path"] == "/second"
    assert "audit writer failed" in caplog.text


def test_worker_purges_at_start(sqlite_database: Database) -> None:
    with sqlite_database.write() as session:
        audit(session, "user.created", "unit-test", at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
    worker = AuditWorker(sqlite_database, 30)

    worker.start()
    (purged,) = wait_for_events(sqlite_database, "audit.purged", 1)
    worker.close()

    assert purged.actor == RETENTION_ACTOR
    assert purged.detail["deleted"] == 1
    assert events(sqlite_database, "user.created") == []


def test_purge_expired_keeps_recent(sqlite_database: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    with sqlite_database.write() as session:
        audit(session, "user.created", "unit-test", at=now - dt.timedelta(days=29))
        audit(session, "user.deleted", "unit-test", at=now - dt.timedelta(days=31))

    deleted = AuditWorker(sqlite_database, 30).purge_expired(now)

    assert deleted == 1
    assert [row.event for row in events(sqlite_database, "user")] == ["user.created"]


def test_purge_expired_zero_retention_keeps_all(sqlite_database: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    with sqlite_database.write() as session:
        audit(session, "user.created", "unit-test", at=now - dt.timedelta(days=10_000))

    deleted = AuditWorker(sqlite_database, 0).purge_expired(now)

    assert deleted == 0
    assert len(events(sqlite_database, "user.created")) == 1


def test_close_without_start_returns() -> None:
    AuditWorker(Database("sqlite://"), 365).close()


# ------------------------------------------------------------------------------------------------
# The app: rejected tokens reach the audit trail, and the 401 never depends on it


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(sqlite_settings)) as test_client:
        yield test_client


def test_forged_token_is_audited(client: TestClient[Any], sqlite_settings: Settings) -> None:
    response = client.get("/api/security/permissions", headers={"Authorization": "Bearer abc.def.ghi"})

    assert response.status_code == 401
    database = client.app.state.runtime.database
    (row,) = wait_for_events(database, "token.rejected", 1)
    assert row.detail["reason"] == "malformed"
    assert row.detail["path"] == "/api/security/permissions"
    assert row.detail["client_address"] == "testclient"


def test_token_rejection_audit_never_stores_token(client: TestClient[Any]) -> None:
    token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ"

    client.get("/api/security/permissions", headers={"Authorization": f"Bearer {token}"})

    (row,) = wait_for_events(client.app.state.runtime.database, "token.rejected", 1)
    assert token not in repr(row.detail)
    assert "c2VjcmV0LXNpZ25hdHVyZQ" not in repr(row.detail)


def test_missing_token_is_not_audited(client: TestClient[Any]) -> None:
    response = client.get("/api/security/permissions")
    client.app.state.runtime.audit_worker.close()

    assert response.status_code == 401
    assert events(client.app.state.runtime.database, "token.rejected") == []


def test_rejection_returns_401_when_audit_fails(client: TestClient[Any]) -> None:
    runtime = client.app.state.runtime
    runtime.audit_worker.close()

    class BrokenWorker(AuditWorker):
        def write(self, rows: list[dict[str, Any]]) -> None:
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    runtime.audit_worker = BrokenWorker(runtime.database, 365)
    runtime.audit_worker.start()

    response = client.get("/api/security/permissions", headers={"Authorization": "Bearer abc.def.ghi"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
