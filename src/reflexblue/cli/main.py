"""Entry point of the ``reflexblue`` command.

Settings come from ``REFLEXBLUE_*`` environment variables; options such as ``--database-url``
override them. Every command that touches the database first applies pending migrations, and
runs its changes in one transaction; only ``serve``, ``demo`` and ``keys rotate`` create keys. Expected errors end
as one ``error: ...`` line on stderr with exit code 1; usage errors exit with 2.
"""

from __future__ import annotations

from pathlib import Path

import click
from alembic.runtime.migration import MigrationContext

from reflexblue.cli.access import access_command
from reflexblue.cli.administrations import administrations, plan
from reflexblue.cli.audit import audit
from reflexblue.cli.context import CliState, ErrorBoundaryGroup, pass_state
from reflexblue.cli.keys import keys
from reflexblue.cli.output import json_option, print_json, say
from reflexblue.cli.roles import permissions_command, roles
from reflexblue.cli.server import demo_command, serve_command
from reflexblue.cli.users import users
from reflexblue.provisioning import provision_file


@click.group(cls=ErrorBoundaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url", metavar="URL",
    help="Database URL, e.g. sqlite:///reflexblue.db, sqlite:////absolute/path.db or "
         "postgresql://user@host:5432/name; overrides REFLEXBLUE_DATABASE_URL.",
)
@click.version_option(package_name="reflexblue", prog_name="reflexblue")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """Run and manage the ReflexBlue External API server.

    Settings are read from REFLEXBLUE_* environment variables (for example REFLEXBLUE_DATABASE_URL
    and REFLEXBLUE_TOKEN_LIFETIME); command-line options override them.
    """
    state = ctx.ensure_object(CliState)
    state.override("database_url", database_url)


@cli.command("migrate")
@pass_state
def migrate_command(state: CliState) -> None:
    """Apply pending database migrations and print the schema revision."""
    database = state.database()
    with database.engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    say(f"Database {database.describe()} is at schema revision {revision}.")


@cli.command("provision")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True,
              help="Check the file against the database and report what would change, then roll back.")
@json_option
@pass_state
def provision_command(state: CliState, file: Path, dry_run: bool, as_json: bool) -> None:
    """Apply the provisioning FILE (JSON or YAML) in one transaction: all of it or nothing.

    For every user the file lists, its roles become exactly the listed ones; for every role it
    lists, its permissions become exactly the listed ones. Entities it does not name stay as they
    are, and so do fields an entry leaves out. Applying the same file twice changes nothing.
    """
    summary = provision_file(state.settings(), file, actor=f"provision:{file.name} ({state.actor})", dry_run=dry_run)
    if as_json:
        print_json({"file": str(file), "dry_run": dry_run, "changed": summary.changed, **summary.as_dict()})
        return
    changes = summary.describe()
    if not changes:
        say(f"{file.name}: no changes, the database already matches the file.")
    elif dry_run:
        say(f"{file.name} is valid; applying it would make these changes (dry run, nothing was changed):")
    else:
        say(f"Applied {file.name}:")
    for line in changes:
        say(f"  {line}")


cli.add_command(serve_command)
cli.add_command(demo_command)
cli.add_command(plan)
cli.add_command(administrations)
cli.add_command(users)
cli.add_command(roles)
cli.add_command(permissions_command)
cli.add_command(access_command)
cli.add_command(keys)
cli.add_command(audit)


def main() -> None:
    cli(prog_name="reflexblue")
