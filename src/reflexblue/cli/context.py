"""State shared by every command, and the one boundary that turns expected errors into messages."""

from __future__ import annotations

import getpass
import os
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from reflexblue.bootstrap import prepare
from reflexblue.domain.errors import ReflexBlueError
from reflexblue.notifications import install_publisher
from reflexblue.redis_client import RedisHealth
from reflexblue.settings import PREFIX, Settings
from reflexblue.storage.database import Database, normalise_url


class CommandError(click.ClickException):
    """An expected failure: shown as one ``error: ...`` line on stderr, exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class ErrorBoundaryGroup(click.Group):
    """The root command group; it turns domain, settings and connection errors into CommandError."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReflexBlueError as error:
            raise CommandError(str(error)) from None
        except OperationalError as error:
            state = ctx.find_object(CliState)
            where = state.describe_database() if state is not None else "the database"
            reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else "connection failed"
            raise CommandError(
                f"database {where} is unreachable or failed: {reason}: check REFLEXBLUE_DATABASE_URL "
                "or --database-url, and that the database server runs"
            ) from None


def warn_redis_unavailable(name: str, _level: int, **fields: object) -> None:
    """Print a warning when a change could not be announced through Redis; the servers' poll still applies it."""
    if name == "redis.unavailable":
        click.echo(
            f"warning: could not notify running servers through Redis at {fields.get('redis')} "
            f"({fields.get('error')}: {fields.get('detail')}); they apply the change within "
            "REFLEXBLUE_ACCESS_REFRESH_INTERVAL seconds (0.5 by default) by polling the database",
            err=True,
        )


def current_actor() -> str:
    """Return the audit actor of CLI changes, ``cli:<login name>``."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):
        login = "unknown"
    return f"cli:{login}"


class CliState:
    """Settings and database of one CLI invocation, created on first use."""

    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        #: REFLEXBLUE_* values given as command-line options; they win over the environment.
        self.overrides: dict[str, str] = dict(overrides or {})
        self.actor = current_actor()
        self._settings: Settings | None = None
        self._database: Database | None = None

    def override(self, name: str, value: object) -> None:
        """Set the setting ``name`` (without prefix, e.g. ``database_url``) from a command-line option."""
        if value is None:
            return
        text = str(value).lower() if isinstance(value, bool) else str(value)
        self.overrides[PREFIX + name.upper()] = text
        self._settings = None

    def settings(self) -> Settings:
        if self._settings is None:
            settings = Settings.from_env({**os.environ, **self.overrides})
            # With Redis configured, every commit that changes access is announced to running servers.
            health = RedisHealth(settings.redis_url, report=warn_redis_unavailable) if settings.redis_url else None
            install_publisher(settings.redis_url, settings.redis_prefix, health)
            self._settings = settings
        return self._settings

    def database(self) -> Database:
        """Return the prepared database, with migrations applied; administration commands never create keys."""
        if self._database is None:
            self._database = prepare(self.settings(), actor=self.actor)
            click.get_current_context().call_on_close(self._database.dispose)
        return self._database

    def describe_database(self) -> str:
        url = self.overrides.get(PREFIX + "DATABASE_URL") or os.environ.get(PREFIX + "DATABASE_URL")
        if self._database is not None:
            return self._database.describe()
        try:
            return normalise_url(url or Settings().database_url).render_as_string(hide_password=True)
        except ReflexBlueError:
            return "(invalid URL)"

    def export_environment(self) -> None:
        """Copy the command-line overrides into os.environ, so server worker processes see them."""
        os.environ.update(self.overrides)


pass_state = click.make_pass_decorator(CliState, ensure=True)
