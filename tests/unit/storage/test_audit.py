"""Reading and purging the audit trail on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import datetime as dt
import pathlib

import pytest
from sqlalchemy import func, select

import reflexblue
from reflexblue.domain.errors import ValidationError
from reflexblue.storage import audit as audit_trail
from reflexblue.storage.database import Database
from reflexblue.storage.models import AppendOnlyError, AuditEvent
from reflexblue.storage.repository import audit

ACTOR = "unit-test"
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def add_event(database: Database, event: str, *, days_ago: float = 0, username: str | None = None,
              administration: str | None = None) -> None:
    with database.write() as session:
        audit(session, event, ACTOR, username=username, administration=administration,
              at=NOW - dt.timedelta(days=days_ago))


def listed(database: Database, **filters: object) -> list[str]:
    """Return the event names that list_events returns for ``filters``, in its order."""
    with database.read() as session:
        return [item.event for item in audit_trail.list_events(session, **filters)]  # type: ignore[arg-type]


def count_events(database: Database) -> int:
    with database.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


@pytest.fixture
def database(any_database: Database) -> Database:
    """The migrated database of each backend with no audit events yet (preparing it writes key.created)."""
    with any_database.write() as session:
        audit_trail.purge_older_than(session, dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    return any_database


# ------------------------------------------------------------------------------------------------
# list_events


def test_list_returns_newest_first(database: Database) -> None:
    add_event(database, "user.created", days_ago=2)
    add_event(database, "user.deleted", days_ago=1)
    add_event(database, "role.created", days_ago=3)

    assert listed(database) == ["user.deleted", "user.created", "role.created"]


def test_list_orders_same_time_by_insertion(database: Database) -> None:
    add_event(database, "first")
    add_event(database, "second")

    assert listed(database) == ["second", "first"]


def test_list_limit_keeps_newest(database: Database) -> None:
    for days in range(5):
        add_event(database, f"event.{days}", days_ago=days)

    assert listed(database, limit=2) == ["event.0", "event.1"]


@pytest.mark.parametrize("limit", [0, -1, audit_trail.MAX_LIMIT + 1, True, "10"])
def test_list_rejects_invalid_limit(database: Database, limit: object) -> None:
    with pytest.raises(ValidationError, match="invalid limit"), database.read() as session:
        audit_trail.list_events(session, limit=limit)  # type: ignore[arg-type]


def test_list_filters_username_any_case(database: Database) -> None:
    add_event(database, "user.created", username="Shop-API")
    add_event(database, "user.created", username="other")

    assert listed(database, username="shop-api") == ["user.created"]
    assert listed(database, username="SHOP-api ") == ["user.created"]


def test_list_username_filter_skips_rows_without_user(database: Database) -> None:
    add_event(database, "login.failed")

    assert listed(database, username="shop-api") == []


def test_list_filters_administration(database: Database) -> None:
    add_event(database, "role.created", administration="acme")
    add_event(database, "role.deleted", administration="beta")

    assert listed(database, administration="acme") == ["role.created"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("login.", ["login.succeeded", "login.failed"]),
        ("login", ["login.succeeded", "login.failed"]),
        ("login.failed", ["login.failed"]),
        ("token.rejected", ["token.rejected.suppressed", "token.rejected"]),
        ("log*", ["logins.other", "login.succeeded", "login.failed"]),
        ("logins", ["logins.other"]),
        ("log", []),
    ],
)
def test_list_filters_event_prefix(database: Database, pattern: str, expected: list[str]) -> None:
    for days, name in enumerate(["logins.other", "login.succeeded", "login.failed", "token.rejected.suppressed",
                                 "token.rejected"]):
        add_event(database, name, days_ago=days)

    assert sorted(listed(database, event=pattern)) == sorted(expected)


def test_list_event_prefix_escapes_wildcards(database: Database) -> None:
    add_event(database, "user.created")
    add_event(database, "user_created")

    assert listed(database, event="user_*") == ["user_created"]
    assert listed(database, event="%") == []


@pytest.mark.parametrize("pattern", ["", " ", "*", "."])
def test_list_rejects_empty_event_filter(database: Database, pattern: str) -> None:
    with pytest.raises(ValidationError, match="invalid event filter"), database.read() as session:
        audit_trail.list_events(session, event=pattern)


def test_list_since_is_inclusive(database: Database) -> None:
    add_event(database, "old", days_ago=10)
    add_event(database, "edge", days_ago=5)
    add_event(database, "new", days_ago=1)

    assert listed(database, since=NOW - dt.timedelta(days=5)) == ["new", "edge"]


def test_list_until_is_inclusive(database: Database) -> None:
    add_event(database, "old", days_ago=10)
    add_event(database, "edge", days_ago=5)
    add_event(database, "new", days_ago=1)

    assert listed(database, until=NOW - dt.timedelta(days=5)) == ["edge", "old"]


def test_list_compares_times_across_offsets(database: Database) -> None:
    add_event(database, "at-noon-utc")
    two_hours_east = dt.timezone(dt.timedelta(hours=2))

    assert listed(database, since=NOW.astimezone(two_hours_east)) == ["at-noon-utc"]
    assert listed(database, since=(NOW + dt.timedelta(seconds=1)).astimezone(two_hours_east)) == []


def test_list_rejects_naive_time(database: Database) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"), database.read() as session:
        audit_trail.list_events(session, since=dt.datetime(2025, 1, 1))


def test_list_combines_filters(database: Database) -> None:
    add_event(database, "role.assigned", username="shop-api", administration="acme", days_ago=1)
    add_event(database, "role.assigned", username="shop-api", administration="beta", days_ago=1)
    add_event(database, "role.assigned", username="shop-api", administration="acme", days_ago=20)
    add_event(database, "user.created", username="shop-api", administration="acme", days_ago=1)

    found = listed(database, username="shop-api", administration="acme", event="role.",
                   since=NOW - dt.timedelta(days=7))

    assert found == ["role.assigned"]


# ------------------------------------------------------------------------------------------------
# Purge and retention


def test_purge_deletes_only_older_events(database: Database) -> None:
    add_event(database, "old", days_ago=100)
    add_event(database, "recent", days_ago=10)

    with database.write() as session:
        deleted = audit_trail.purge_older_than(session, NOW - dt.timedelta(days=90))

    assert deleted == 1
    assert listed(database) == ["recent"]


def test_purge_keeps_event_at_cutoff(database: Database) -> None:
    add_event(database, "edge", days_ago=90)

    with database.write() as session:
        deleted = audit_trail.purge_older_than(session, NOW - dt.timedelta(days=90))

    assert deleted == 0
    assert listed(database) == ["edge"]


def test_purge_rejects_naive_cutoff(database: Database) -> None:
    with pytest.raises(ValidationError, match="timezone-aware"), database.write() as session:
        audit_trail.purge_older_than(session, dt.datetime(2025, 1, 1))


def test_purge_and_audit_records_purge(database: Database) -> None:
    add_event(database, "old", days_ago=100)
    add_event(database, "older", days_ago=200)
    cutoff = NOW - dt.timedelta(days=90)

    with database.write() as session:
        deleted = audit_trail.purge_and_audit(session, cutoff, actor="cli:operator")

    with database.read() as session:
        (purged,) = audit_trail.list_events(session)
        assert deleted == 2
        assert purged.event == "audit.purged"
        assert purged.actor == "cli:operator"
        assert purged.detail == {"cutoff": cutoff.isoformat(), "deleted": 2}


def test_purge_and_audit_skips_empty_purge(database: Database) -> None:
    add_event(database, "recent", days_ago=1)

    with database.write() as session:
        deleted = audit_trail.purge_and_audit(session, NOW - dt.timedelta(days=90), actor="cli:operator")

    assert deleted == 0
    assert listed(database) == ["recent"]


def test_retention_cutoff_subtracts_days() -> None:
    assert audit_trail.retention_cutoff(30, NOW) == NOW - dt.timedelta(days=30)


def test_retention_zero_keeps_forever() -> None:
    assert audit_trail.retention_cutoff(0, NOW) is None


# ------------------------------------------------------------------------------------------------
# Append-only


def test_orm_update_of_event_raises(database: Database) -> None:
    add_event(database, "user.created", username="shop-api")

    with pytest.raises(AppendOnlyError, match="append-only"), database.write() as session:
        event = session.scalars(select(AuditEvent)).one()
        event.username = "someone-else"
        session.flush()

    assert listed(database, username="shop-api") == ["user.created"]


def test_orm_delete_of_event_raises(database: Database) -> None:
    add_event(database, "user.created")

    with pytest.raises(AppendOnlyError, match="append-only"), database.write() as session:
        session.delete(session.scalars(select(AuditEvent)).one())
        session.flush()

    assert count_events(database) == 1


def test_no_module_updates_audit_events() -> None:
    """Only storage/audit.py may issue a DELETE on audit_events, and no module an UPDATE."""
    package = pathlib.Path(reflexblue.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        relative = path.relative_to(package).as_posix()
        updates = "update(AuditEvent" in text
        deletes = "delete(AuditEvent" in text and relative != "storage/audit.py"
        if updates or deletes:
            offenders.append(relative)

    assert offenders == []

