"""Database setup: URL handling, engines, transactions and migrations.

SQLite gets WAL mode, a busy timeout, enforced foreign keys and ``BEGIN IMMEDIATE`` for write
transactions, so concurrent writers queue instead of failing half-way. PostgreSQL runs through
psycopg 3 with a connection pool.

Every wait for the database is bounded by one timeout (``REFLEXBLUE_DATABASE_TIMEOUT``): connecting,
waiting for a pooled connection, each PostgreSQL statement, and SQLite's write lock. A failure
raises an error that :func:`is_unavailable` recognises, and the API turns it into a 503.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from reflexblue.settings import SettingsError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_POOL_SIZE = 10
DEFAULT_TIMEOUT = 5.0
#: libpq and psycopg wait at least this many seconds for a connection, also when connect_timeout is lower.
MIN_CONNECT_TIMEOUT = 2
_MIGRATION_LOCK_ID = 0x52464C58  # "RFLX": the PostgreSQL advisory lock held while migrating


def normalise_url(url: str) -> URL:
    """Parse a database URL and pick the driver: pysqlite for SQLite, psycopg 3 for PostgreSQL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The value is not shown: it may contain a password.
        raise SettingsError(
            "invalid REFLEXBLUE_DATABASE_URL (value not shown, it may contain a password): use sqlite:///file.db, "
            "sqlite:////absolute/path.db or postgresql://user@host:5432/name"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise SettingsError(
        f"unsupported database {backend!r} in REFLEXBLUE_DATABASE_URL: use sqlite or postgresql"
    )


class DatabaseTimeout(PoolTimeoutError):
    """A wait for the database, or for this process's turn to use it, took longer than the timeout."""


def is_unavailable(error: BaseException) -> bool:
    """Return whether ``error`` means the database cannot serve now: unreachable, timed out or disconnected.

    Covers SQLAlchemy's OperationalError (refused or dropped connections, PostgreSQL's
    statement_timeout, SQLite's "database is locked"), InterfaceError, the pool's TimeoutError
    (and DatabaseTimeout) and any DBAPIError that invalidated its connection, as well as psycopg's
    own OperationalError and InterfaceError raised outside SQLAlchemy.
    """
    if isinstance(error, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


def postgresql_connect_args(url: URL, timeout: float, *, statement_timeout: bool = True) -> dict[str, Any]:
    """Return psycopg connection parameters that bound the waits for a PostgreSQL server.

    ``connect_timeout`` and ``statement_timeout`` (sent as ``-c statement_timeout=<ms>`` in the
    ``options`` startup parameter) come from ``timeout``. TCP keepalives and ``tcp_user_timeout``
    let the client notice a server that stopped responding at the network level. A parameter given
    in the URL's query wins, and an ``options`` value from the URL is kept before ours.

    NOTE: none of these notices a server that keeps the connection open but stops responding (a
    stopped process, a stalled disk). A statement on such a connection waits until it responds.
    """
    seconds = max(MIN_CONNECT_TIMEOUT, math.ceil(timeout))
    args: dict[str, Any] = {
        "connect_timeout": seconds,
        "keepalives": 1,
        "keepalives_idle": seconds,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
    }
    args = {name: value for name, value in args.items() if name not in url.query}
    if statement_timeout:
        url_options = url.query.get("options")
        ours = f"-c statement_timeout={int(timeout * 1000)}"
        args["options"] = f"{url_options} {ours}" if isinstance(url_options, str) and url_options.strip() else ours
    return args


class Database:
    """Engines and session factories for one database URL.

    ``pool_size`` connections stay open, and up to as many again are opened under load. ``timeout``
    (seconds) bounds each wait for the database; see the module documentation.
    """

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.pool_size = pool_size
        self.timeout = timeout
        if self.is_sqlite:
            self.engine = self._sqlite_engine(immediate=False)
            self.write_engine = self._sqlite_engine(immediate=True)
        else:
            # pool_pre_ping replaces connections that died while idle, e.g. when the server restarted.
            self.engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=timeout,
                connect_args=postgresql_connect_args(self.url, timeout),
            )
            self.write_engine = self.engine
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        # Serialises this process's SQLite writers, so they queue on a lock instead of on busy retries.
        self._sqlite_write_lock = threading.Lock()

    def _sqlite_engine(self, *, immediate: bool) -> Engine:
        database = self.url.database
        if database and database != ":memory:":
            directory = Path(database).expanduser().resolve().parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise SettingsError(
                    f"cannot use the SQLite database {database!r}: {error.strerror} at {str(directory)!r}; "
                    "choose a writable directory in REFLEXBLUE_DATABASE_URL"
                ) from None
        pooling: dict[str, Any] = {}
        if database and database != ":memory:":
            pooling = {"pool_size": self.pool_size, "max_overflow": self.pool_size, "pool_timeout": self.timeout}
        engine = create_engine(
            self.url, connect_args={"check_same_thread": False, "timeout": self.timeout}, **pooling,
        )
        busy_timeout_ms = int(self.timeout * 1000)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):  # type: ignore[no-untyped-def]
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """Open a read-only unit of work."""
        with self._read() as session:
            yield session
            session.rollback()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """Open a write transaction that commits on success and rolls back on any error.

        On SQLite a write waits up to the timeout for this process's write lock and then up to the
        timeout again for SQLite's lock, so it fails after at most twice the timeout.
        """
        with self._sqlite_writer_turn(), self._write() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def _sqlite_writer_turn(self) -> Iterator[None]:
        if not self.is_sqlite:
            yield
            return
        if not self._sqlite_write_lock.acquire(timeout=self.timeout):
            raise DatabaseTimeout(
                f"timed out after {self.timeout:g} s waiting for this process's SQLite write lock, "
                "which another write holds"
            )
        try:
            yield
        finally:
            self._sqlite_write_lock.release()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()

    def describe(self) -> str:
        """Return the URL with any password hidden, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Apply every pending Alembic migration, one process at a time.

        On PostgreSQL the migration and its advisory lock use connections without statement_timeout,
        because a migration, or the wait for another process's migration, may take longer.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["reflexblue_url"] = self.url
        engine = self._migration_engine()
        try:
            with self._migration_lock(engine):
                with engine.connect() as connection:
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    connection.commit()
        finally:
            if engine is not self.write_engine:
                engine.dispose()

    def _migration_engine(self) -> Engine:
        if self.is_sqlite:
            return self.write_engine
        return create_engine(
            self.url, poolclass=NullPool,
            connect_args=postgresql_connect_args(self.url, self.timeout, statement_timeout=False),
        )

    @contextlib.contextmanager
    def _migration_lock(self, engine: Engine) -> Iterator[None]:
        if self.is_sqlite:
            database = self.url.database
            if not database or database == ":memory:":
                yield
                return
            lock_path = Path(database).expanduser().resolve().with_suffix(".migrate.lock")
            try:
                handle = open(lock_path, "a+")  # noqa: SIM115 - closed by the with block below
            except OSError as error:
                raise SettingsError(
                    f"cannot use the SQLite database {database!r}: {error.strerror} at {str(lock_path)!r}; "
                    "choose a writable directory in REFLEXBLUE_DATABASE_URL"
                ) from None
            with handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                connection.commit()
