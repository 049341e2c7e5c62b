"""Resource records: creation, scoping by administration, pagination and cursors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import select

from reflexblue.domain.errors import ConflictError, ValidationError
from reflexblue.storage import records
from reflexblue.storage import repository as repo
from reflexblue.storage.database import Database
from reflexblue.storage.models import Record

ACTOR = "unit-test"


@pytest.fixture
def database(any_database: Database) -> Database:
    """SQLite, then PostgreSQL, each with two administrations: acme and beta."""
    with any_database.write() as session:
        repo.upsert_administration(session, "acme", "Acme Wholesale", actor=ACTOR)
        repo.upsert_administration(session, "beta", "Beta Retail", actor=ACTOR)
    return any_database


@pytest.fixture
def acme_id(database: Database) -> str:
    with database.read() as session:
        return repo.get_administration(session, "acme").id


@pytest.fixture
def beta_id(database: Database) -> str:
    with database.read() as session:
        return repo.get_administration(session, "beta").id


def create(database: Database, administration_id: str, code: str, resource: str = "articles") -> str:
    with database.write() as session:
        return records.create_record(session, administration_id, resource, code, {"description": code}).id


def list_codes(database: Database, administration_id: str, resource: str = "articles", **options: object) -> list[str]:
    with database.read() as session:
        page = records.list_records(
            session, administration_id, resource,
            limit=int(options.get("limit", 1000)),  # type: ignore[arg-type]
            cursor=options.get("cursor"),  # type: ignore[arg-type]
            modified_since=options.get("modified_since"),  # type: ignore[arg-type]
        )
        return [row.code for row in page.items]


def all_pages(database: Database, administration_id: str, limit: int) -> list[list[str]]:
    """Follow next_cursor from the first page to the last and return the codes of each page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        with database.read() as session:
            page = records.list_records(session, administration_id, "articles", limit=limit, cursor=cursor,
                                        modified_since=None)
            pages.append([row.code for row in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages


# ------------------------------------------------------------------------------------------------
# Create and read


def test_create_returns_stored_record(database: Database, acme_id: str) -> None:
    with database.write() as session:
        record = records.create_record(session, acme_id, "articles", "A1", {"description": "Pen"})
        record_id = record.id

    with database.read() as session:
        stored = records.get_record(session, acme_id, "articles", record_id)
        assert stored is not None
        assert (stored.code, stored.data) == ("A1", {"description": "Pen"})
        assert stored.created_at == stored.modified_at
        assert stored.created_at.tzinfo is not None


def test_record_ids_are_random_uuids(database: Database, acme_id: str) -> None:
    ids = [create(database, acme_id, f"A{index}") for index in range(5)]

    assert len(set(ids)) == 5
    assert all(uuid.UUID(record_id).version == 4 for record_id in ids)


def test_duplicate_code_conflicts(database: Database, acme_id: str) -> None:
    create(database, acme_id, "A1")

    with pytest.raises(ConflictError, match="already exists in articles"):
        create(database, acme_id, "A1")


def test_same_code_in_other_resource(database: Database, acme_id: str) -> None:
    create(database, acme_id, "X1", resource="articles")
    create(database, acme_id, "X1", resource="orders")

    assert list_codes(database, acme_id, "orders") == ["X1"]


def test_same_code_in_other_administration(database: Database, acme_id: str, beta_id: str) -> None:
    create(database, acme_id, "A1")
    create(database, beta_id, "A1")

    assert list_codes(database, beta_id) == ["A1"]


def test_codes_are_case_sensitive(database: Database, acme_id: str) -> None:
    create(database, acme_id, "a1")
    create(database, acme_id, "A1")

    assert sorted(list_codes(database, acme_id)) == ["A1", "a1"]


def test_update_to_taken_code_conflicts(database: Database, acme_id: str) -> None:
    create(database, acme_id, "A1")
    record_id = create(database, acme_id, "A2")

    with pytest.raises(ConflictError), database.write() as session:
        record = records.get_record(session, acme_id, "articles", record_id)
        records.update_record(session, record, "A1", {"description": "x"})


def test_update_keeps_own_code(database: Database, acme_id: str) -> None:
    record_id = create(database, acme_id, "A1")

    with database.write() as session:
        record = records.get_record(session, acme_id, "articles", record_id)
        records.update_record(session, record, "A1", {"description": "changed"})

    with database.read() as session:
        assert records.get_record(session, acme_id, "articles", record_id).data == {"description": "changed"}


def test_update_advances_modified_at(database: Database, acme_id: str) -> None:
    record_id = create(database, acme_id, "A1")

    with database.write() as session:
        record = records.get_record(session, acme_id, "articles", record_id)
        before = record.modified_at
        records.update_record(session, record, "A1", {"description": "changed"})
        after = record.modified_at
        created = record.created_at

    assert after > before
    assert created == before


def test_delete_removes_record(database: Database, acme_id: str) -> None:
    record_id = create(database, acme_id, "A1")

    with database.write() as session:
        records.delete_record(session, records.get_record(session, acme_id, "articles", record_id))

    with database.read() as session:
        assert records.get_record(session, acme_id, "articles", record_id) is None


def test_delete_administration_deletes_records(database: Database, acme_id: str) -> None:
    create(database, acme_id, "A1")

    with database.write() as session:
        repo.delete_administration(session, "acme", actor=ACTOR)

    with database.read() as session:
        assert session.scalars(select(Record)).all() == []


# ------------------------------------------------------------------------------------------------
# Scoping


def test_record_invisible_from_other_administration(database: Database, acme_id: str, beta_id: str) -> None:
    record_id = create(database, acme_id, "A1")

    with database.read() as session:
        assert records.get_record(session, beta_id, "articles", record_id) is None


def test_record_invisible_from_other_resource(database: Database, acme_id: str) -> None:
    record_id = create(database, acme_id, "A1")

    with database.read() as session:
        assert records.get_record(session, acme_id, "orders", record_id) is None


def test_list_scoped_to_administration(database: Database, acme_id: str, beta_id: str) -> None:
    create(database, acme_id, "A1")
    create(database, beta_id, "B1")

    assert list_codes(database, acme_id) == ["A1"]
    assert list_codes(database, beta_id) == ["B1"]


def test_list_scoped_to_resource(database: Database, acme_id: str) -> None:
    create(database, acme_id, "A1", resource="articles")
    create(database, acme_id, "O1", resource="orders")

    assert list_codes(database, acme_id, "articles") == ["A1"]


# ------------------------------------------------------------------------------------------------
# Pagination


def test_pages_cover_all_records_once(database: Database, acme_id: str) -> None:
    codes = [f"A{index}" for index in range(7)]
    for code in codes:
        create(database, acme_id, code)

    pages = all_pages(database, acme_id, limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [code for page in pages for code in page] == codes


def test_exact_page_has_no_next_cursor(database: Database, acme_id: str) -> None:
    for index in range(3):
        create(database, acme_id, f"A{index}")

    with database.read() as session:
        page = records.list_records(session, acme_id, "articles", limit=3, cursor=None, modified_since=None)

    assert len(page.items) == 3
    assert page.next_cursor is None


def test_empty_list_has_no_next_cursor(database: Database, acme_id: str) -> None:
    with database.read() as session:
        page = records.list_records(session, acme_id, "articles", limit=10, cursor=None, modified_since=None)

    assert page.items == []
    assert page.next_cursor is None


def test_pages_break_ties_by_id(database: Database, acme_id: str) -> None:
    for index in range(6):
        create(database, acme_id, f"A{index}")
    same_time = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with database.write() as session:
        for record in session.scalars(select(Record)):
            record.modified_at = same_time

    pages = all_pages(database, acme_id, limit=2)

    assert sorted(code for page in pages for code in page) == [f"A{index}" for index in range(6)]
    assert [len(page) for page in pages] == [2, 2, 2]


def test_updated_record_moves_to_end(database: Database, acme_id: str) -> None:
    first_id = create(database, acme_id, "A1")
    create(database, acme_id, "A2")

    with database.write() as session:
        record = records.get_record(session, acme_id, "articles", first_id)
        records.update_record(session, record, "A1", {"description": "changed"})

    assert list_codes(database, acme_id) == ["A2", "A1"]


def test_modified_since_filters_older(database: Database, acme_id: str) -> None:
    create(database, acme_id, "OLD")
    with database.write() as session:
        for record in session.scalars(select(Record)):
            record.modified_at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    create(database, acme_id, "NEW")

    since = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)

    assert list_codes(database, acme_id, modified_since=since) == ["NEW"]


def test_modified_since_includes_equal_time(database: Database, acme_id: str) -> None:
    create(database, acme_id, "A1")
    moment = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
    with database.write() as session:
        for record in session.scalars(select(Record)):
            record.modified_at = moment

    assert list_codes(database, acme_id, modified_since=moment) == ["A1"]


def test_modified_since_accepts_other_offset(database: Database, acme_id: str) -> None:
    create(database, acme_id, "A1")
    with database.write() as session:
        for record in session.scalars(select(Record)):
            record.modified_at = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
    # 13:30 at +02:00 is 11:30 UTC, before the record's 12:00 UTC.
    since = dt.datetime(2025, 1, 1, 13, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))

    assert list_codes(database, acme_id, modified_since=since) == ["A1"]


def test_modified_since_with_cursor(database: Database, acme_id: str) -> None:
    for index in range(5):
        create(database, acme_id, f"A{index}")
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

    with database.read() as session:
        first = records.list_records(session, acme_id, "articles", limit=2, cursor=None, modified_since=since)
        second = records.list_records(session, acme_id, "articles", limit=2, cursor=first.next_cursor,
                                      modified_since=since)
        codes = [row.code for row in second.items]

    assert codes == ["A2", "A3"]


def test_cursor_is_opaque_text(database: Database, acme_id: str) -> None:
    for index in range(3):
        create(database, acme_id, f"A{index}")

    with database.read() as session:
        page = records.list_records(session, acme_id, "articles", limit=1, cursor=None, modified_since=None)
        last_id = page.items[0].id

    assert page.next_cursor is not None
    assert "=" not in page.next_cursor
    assert records.decode_cursor(page.next_cursor)[1] == last_id


def encode_raw(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!",
        "%%%",
        "A" * 201,
        encode_raw({"modified_at": "2026-01-01T00:00:00+00:00"}),
        encode_raw(["2026-01-01T00:00:00+00:00"]),
        encode_raw(["2026-01-01T00:00:00", "id"]),
        encode_raw(["not a date", "id"]),
        encode_raw(["2026-01-01T00:00:00+00:00", 5]),
        encode_raw([20260101, "id"]),
        encode_raw("just a string"),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_invalid_cursor_rejected(database: Database, acme_id: str, cursor: str) -> None:
    with pytest.raises(records.InvalidCursor) as caught, database.read() as session:
        records.list_records(session, acme_id, "articles", limit=10, cursor=cursor, modified_since=None)

    assert "invalid cursor" in str(caught.value)


def test_invalid_cursor_is_validation_error() -> None:
    assert issubclass(records.InvalidCursor, ValidationError)
