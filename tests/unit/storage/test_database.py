"""Database URLs, SQLite connection settings and transaction boundaries."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from reflexblue.settings import SettingsError
from reflexblue.storage import repository as repo
from reflexblue.storage.database import (
    MIN_CONNECT_TIMEOUT,
    Database,
    DatabaseTimeout,
    is_unavailable,
    normalise_url,
    postgresql_connect_args,
)


@pytest.mark.parametrize(
    ("url", "driver", "database"),
    [
        ("sqlite:///relative.db", "sqlite+pysqlite", "relative.db"),
        ("sqlite:////absolute/path.db", "sqlite+pysqlite", "/absolute/path.db"),
        ("postgresql://user@host:5432/name", "postgresql+psycopg", "name"),
        ("postgresql+psycopg://user@host:5432/name", "postgresql+psycopg", "name"),
        ("postgresql+psycopg2://user@host:5432/name", "postgresql+psycopg", "name"),
        ("postgres://user@host:5432/name", "postgresql+psycopg", "name"),
    ],
)
def test_normalise_url_picks_driver(url: str, driver: str, database: str) -> None:
    parsed = normalise_url(url)

    assert parsed.drivername == driver
    assert parsed.database == database


def test_normalise_url_keeps_host_and_user() -> None:
    parsed = normalise_url("postgresql://reporter@db.internal:6543/reflexblue")

    assert (parsed.username, parsed.host, parsed.port) == ("reporter", "db.internal", 6543)


@pytest.mark.parametrize("url", ["mysql://user@host/name", "oracle://user@host/name"])
def test_normalise_url_rejects_other_backends(url: str) -> None:
    with pytest.raises(SettingsError, match="REFLEXBLUE_DATABASE_URL"):
        normalise_url(url)


@pytest.mark.parametrize("url", ["not a url", "", "://missing-scheme"])
def test_normalise_url_rejects_unparsable(url: str) -> None:
    with pytest.raises(SettingsError, match="REFLEXBLUE_DATABASE_URL"):
        normalise_url(url)


def test_describe_hides_password() -> None:
    database = Database("postgresql://user:s3cr3t-pass@127.0.0.1:5432/name")

    description = database.describe()

    assert "s3cr3t-pass" not in description
    assert "user" in description
    database.dispose()


def test_sqlite_creates_parent_folder(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/nested/folder/t.db")
    database.ping()

    assert (tmp_path / "nested" / "folder").is_dir()
    database.dispose()


@pytest.mark.parametrize(("pragma", "expected"), [("journal_mode", "wal"), ("foreign_keys", 1)])
def test_sqlite_connection_pragmas(sqlite_database: Database, pragma: str, expected: object) -> None:
    with sqlite_database.engine.connect() as connection:
        assert connection.execute(text(f"PRAGMA {pragma}")).scalar() == expected


def test_write_commits_on_success(any_database: Database) -> None:
    with any_database.write() as session:
        repo.upsert_administration(session, "acme", "Acme", actor="unit-test")

    with any_database.read() as session:
        assert repo.find_administration(session, "acme") is not None


def test_write_rolls_back_on_error(any_database: Database) -> None:
    with pytest.raises(RuntimeError, match="stop here"), any_database.write() as session:
        repo.upsert_administration(session, "acme", "Acme", actor="unit-test")
        raise RuntimeError("stop here")

    with any_database.read() as session:
        assert repo.find_administration(session, "acme") is None


def test_read_discards_changes(any_database: Database) -> None:
    with any_database.read() as session:
        repo.upsert_administration(session, "acme", "Acme", actor="unit-test")

    with any_database.read() as session:
        assert repo.find_administration(session, "acme") is None


def test_ping_reaches_database(any_database: Database) -> None:
    any_database.ping()


def test_postgresql_connect_args_bound_every_wait() -> None:
    args = postgresql_connect_args(normalise_url("postgresql://user@host/name"), 2.5)

    assert args["connect_timeout"] == 3
    assert args["options"] == "-c statement_timeout=2500"
    assert args["tcp_user_timeout"] == 2500
    assert args["keepalives"] == 1


def test_postgresql_connect_timeout_at_least_two_seconds() -> None:
    args = postgresql_connect_args(normalise_url("postgresql://user@host/name"), 1)

    assert args["connect_timeout"] == MIN_CONNECT_TIMEOUT


def test_postgresql_connect_args_keep_url_parameters() -> None:
    url = normalise_url("postgresql://user@host/name?connect_timeout=30&options=-c%20work_mem%3D8MB")

    args = postgresql_connect_args(url, 5)

    assert "connect_timeout" not in args  # the URL's value applies
    assert args["options"] == "-c work_mem=8MB -c statement_timeout=5000"


def test_postgresql_connect_args_without_statement_timeout() -> None:
    args = postgresql_connect_args(normalise_url("postgresql://user@host/name"), 5, statement_timeout=False)

    assert "options" not in args


@pytest.mark.postgres
def test_postgresql_statement_timeout_applies(postgres_url: str) -> None:
    database = Database(postgres_url, timeout=2)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "2s"
            with pytest.raises(OperationalError) as caught:
                connection.execute(text("SELECT pg_sleep(3)"))
        assert is_unavailable(caught.value)
    finally:
        database.dispose()


@pytest.mark.postgres
def test_postgresql_migration_has_no_statement_timeout(postgres_url: str) -> None:
    database = Database(postgres_url, timeout=2)
    engine = database._migration_engine()
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        engine.dispose()
        database.dispose()


def test_postgresql_unreachable_is_unavailable() -> None:
    port = _closed_port()
    database = Database(f"postgresql://user@127.0.0.1:{port}/name", timeout=1)
    try:
        with pytest.raises(OperationalError) as caught:
            database.ping()
    finally:
        database.dispose()

    assert is_unavailable(caught.value)


def test_sqlite_busy_timeout_follows_timeout(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/t.db", timeout=1.5)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 1500
    finally:
        database.dispose()


def test_sqlite_locked_write_is_unavailable(sqlite_database: Database) -> None:
    locked = Database(sqlite_database.url.render_as_string(hide_password=False), timeout=1)
    holder = sqlite3.connect(str(sqlite_database.url.database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError) as caught, locked.write() as session:
            repo.upsert_administration(session, "acme", "Acme", actor="unit-test")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        locked.dispose()

    assert is_unavailable(caught.value)
    assert time.monotonic() - started < 3


def test_sqlite_write_lock_wait_times_out(sqlite_database: Database) -> None:
    locked = Database(sqlite_database.url.render_as_string(hide_password=False), timeout=1)
    entered = threading.Event()
    release = threading.Event()

    def hold_write_lock() -> None:
        with locked.write():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    try:
        assert entered.wait(10)
        with pytest.raises(DatabaseTimeout) as caught, locked.write():
            pass
    finally:
        release.set()
        holder.join(10)
        locked.dispose()

    assert is_unavailable(caught.value)
    assert "SQLite write lock" in str(caught.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OperationalError("SELECT 1", {}, Exception("connection refused")), True),
        (InterfaceError("SELECT 1", {}, Exception("connection closed")), True),
        (PoolTimeoutError("QueuePool limit reached"), True),
        (DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True), True),
        (psycopg.OperationalError("server closed the connection"), True),
        (DBAPIError("SELECT 1", {}, Exception("bad"), connection_invalidated=False), False),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (RuntimeError("bug"), False),
    ],
)
def test_is_unavailable_classifies_errors(error: BaseException, expected: bool) -> None:
    assert is_unavailable(error) is expected


def _closed_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
