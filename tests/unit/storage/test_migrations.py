"""Alembic migrations on SQLite and PostgreSQL: complete, repeatable and equal to the models."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from reflexblue.storage import repository as repo
from reflexblue.storage.database import MIGRATIONS, Database
from reflexblue.storage.models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest) -> Database:
    """An empty, unmigrated database of each backend in turn."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    database = Database(url)
    request.addfinalizer(database.dispose)
    return database


def table_names(database: Database) -> set[str]:
    with database.engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def current_revision(database: Database) -> str | None:
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def schema_differences(database: Database) -> list[object]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_empty_database_has_no_tables(empty_database: Database) -> None:
    assert table_names(empty_database) == set()


def test_migrate_creates_all_model_tables(empty_database: Database) -> None:
    empty_database.migrate()

    assert set(Base.metadata.tables) <= table_names(empty_database)


def test_migrate_creates_only_known_tables(empty_database: Database) -> None:
    empty_database.migrate()

    assert table_names(empty_database) == set(Base.metadata.tables) | {"alembic_version"}


def test_migrate_reaches_head(empty_database: Database) -> None:
    empty_database.migrate()

    assert current_revision(empty_database) == head_revision()


def test_migrated_schema_matches_models(empty_database: Database) -> None:
    empty_database.migrate()

    assert schema_differences(empty_database) == []


def test_migrate_twice_is_noop(empty_database: Database) -> None:
    empty_database.migrate()
    tables = table_names(empty_database)

    empty_database.migrate()

    assert table_names(empty_database) == tables
    assert current_revision(empty_database) == head_revision()
    assert schema_differences(empty_database) == []


def test_migrate_twice_keeps_data(empty_database: Database) -> None:
    empty_database.migrate()
    with empty_database.write() as session:
        repo.upsert_administration(session, "acme", "Acme Wholesale", actor="unit-test")

    empty_database.migrate()

    with empty_database.read() as session:
        assert [administration.code for administration in repo.list_administrations(session)] == ["acme"]


def test_migrate_keeps_single_version_row(empty_database: Database) -> None:
    empty_database.migrate()
    empty_database.migrate()

    with empty_database.engine.connect() as connection:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()

    assert rows == [(head_revision(),)]


def test_concurrent_migrations_succeed(empty_database: Database) -> None:
    # Several server processes may start at once on a new database. Each migrates, and they take turns.
    url = empty_database.url.render_as_string(hide_password=False)
    databases = [Database(url) for _ in range(3)]
    barrier = threading.Barrier(len(databases))
    errors: list[BaseException] = []

    def migrate(database: Database) -> None:
        barrier.wait()
        try:
            database.migrate()
        except BaseException as error:  # noqa: BLE001 - collected and checked by the test
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(database,)) for database in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for database in databases:
        database.dispose()

    assert errors == []
    assert current_revision(empty_database) == head_revision()
    assert schema_differences(empty_database) == []


def test_models_match_single_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_environment_row_created_once(empty_database: Database) -> None:
    empty_database.migrate()
    with empty_database.write() as session:
        first = repo.get_environment(session).environment_id
    with empty_database.write() as session:
        second = repo.get_environment(session).environment_id

    with empty_database.read() as session:
        rows = session.execute(select(Base.metadata.tables["environment"])).all()

    assert first == second
    assert len(rows) == 1
