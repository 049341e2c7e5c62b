"""Database URLs, SQLite connection settings and transaction boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from reflexblue.settings import SettingsError
from reflexblue.storage import repository as repo
from reflexblue.storage.database import Database, normalise_url


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
