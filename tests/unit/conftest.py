"""Shared fixtures of the unit tests: real SQLite and PostgreSQL databases, migrated and keyed.

PostgreSQL tests run against the server named by ``REFLEXBLUE_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Each test gets a database of its own with a
random name, dropped afterwards. The tests are skipped when the server cannot be reached.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from reflexblue.bootstrap import prepare
from reflexblue.settings import Settings
from reflexblue.storage.database import Database

POSTGRES_SERVER_URL = os.environ.get(
    "REFLEXBLUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The cheapest argon2id parameters the settings accept, so hashing stays fast in tests.
CHEAP_ARGON2 = {"argon2_memory_cost": 8192, "argon2_time_cost": 1}

_postgres_unreachable_reason: str | None = None
_postgres_checked = False


def _maintenance_connection() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_SERVER_URL, autocommit=True, connect_timeout=3)


def _skip_unless_postgres_reachable() -> None:
    """Skip the calling test when the PostgreSQL server cannot be reached (checked once per run)."""
    global _postgres_checked, _postgres_unreachable_reason
    if not _postgres_checked:
        _postgres_checked = True
        try:
            with _maintenance_connection() as connection:
                connection.execute("SELECT 1")
        except psycopg.Error as error:
            shown = make_url(POSTGRES_SERVER_URL).render_as_string(hide_password=True)
            _postgres_unreachable_reason = f"PostgreSQL at {shown} is unreachable: {error}"
    if _postgres_unreachable_reason is not None:
        if "REFLEXBLUE_TEST_POSTGRES_URL" in os.environ:
            pytest.fail(_postgres_unreachable_reason)  # named explicitly, so it must be used
        pytest.skip(_postgres_unreachable_reason)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a new, empty SQLite database file in the test's temporary folder."""
    return f"sqlite:///{tmp_path}/t.db"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database with a random name, dropped after the test."""
    _skip_unless_postgres_reachable()
    name = f"reflexblue_unit_{secrets.token_hex(6)}"
    with _maintenance_connection() as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with _maintenance_connection() as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _cheap_settings(database_url: str, **overrides: object) -> Settings:
    return Settings(database_url=database_url, **{**CHEAP_ARGON2, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def cheap_settings() -> Callable[..., Settings]:
    """Build settings for a database URL with cheap argon2 parameters and the given overrides."""
    return _cheap_settings


@pytest.fixture
def sqlite_settings(sqlite_url: str) -> Settings:
    return _cheap_settings(sqlite_url)


@pytest.fixture
def sqlite_database(sqlite_settings: Settings) -> Iterator[Database]:
    """A migrated SQLite database with the environment row and an active EdDSA signing key."""
    database = prepare(sqlite_settings, signing_key=True)
    yield database
    database.dispose()


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[Database]:
    """A migrated PostgreSQL database with the environment row and an active EdDSA signing key."""
    database = prepare(_cheap_settings(postgres_url), signing_key=True)
    yield database
    database.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_database(request: pytest.FixtureRequest) -> Database:
    """The migrated database of each backend in turn: SQLite, then PostgreSQL (skipped when unreachable)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_database")
    return request.getfixturevalue("postgres_database")


# ------------------------------------------------------------------------------------------------
# Redis

REDIS_URL = os.environ.get("REFLEXBLUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the Redis at ``REFLEXBLUE_TEST_REDIS_URL``; its keys are deleted afterwards.

    Skipped when Redis cannot be reached, unless REFLEXBLUE_TEST_REDIS_URL names it explicitly.
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        reason = f"Redis at {REDIS_URL} is unreachable: {error}"
        if "REFLEXBLUE_TEST_REDIS_URL" in os.environ:
            pytest.fail(reason)
        pytest.skip(reason)
    prefix = f"reflexblue-test-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
