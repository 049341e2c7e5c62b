"""``reflexblue plan`` and ``reflexblue administrations``."""

from __future__ import annotations

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reflexblue.cli import lookup
from reflexblue.cli.context import CliState, pass_state
from reflexblue.cli.output import json_option, print_json, print_table, say
from reflexblue.domain.errors import ConflictError
from reflexblue.storage import repository
from reflexblue.storage.models import Administration, Record, Role


@click.group()
def plan() -> None:
    """Show or change the plan: how many External seats may be linked to users."""


@plan.command("show")
@json_option
@pass_state
def plan_show(state: CliState, as_json: bool) -> None:
    """Show the plan's External seats and how many are in use."""
    with state.database().read() as session:
        environment = repository.get_environment(session)
        seats = environment.external_seats
        used = repository.seats_used(session)
        environment_id = environment.environment_id
    data = {"environment_id": environment_id, "external_seats": seats, "seats_used": used,
            "seats_free": max(0, seats - used)}
    if as_json:
        print_json(data)
        return
    print_table("Plan", ["External seats", "In use", "Free", "Environment id"],
                [[seats, used, data["seats_free"], environment_id]])
    if seats == 0:
        say("The plan has no External seats, so no user can log in to the External API: "
            "run 'reflexblue plan set --external-seats N'.")


@plan.command("set")
@click.option("--external-seats", type=click.IntRange(min=0), required=True, metavar="N",
              help="Number of External seats of the plan (0 or more); 0 means the plan lacks the "
                   "'External Seats / API' usage.")
@pass_state
def plan_set(state: CliState, external_seats: int) -> None:
    """Set the number of External seats; it cannot drop below the seats in use."""
    with state.database().write() as session:
        previous = repository.get_environment(session, for_update=True).external_seats
        repository.set_external_seats(session, external_seats, actor=state.actor)
    if previous == external_seats:
        say(f"The plan already has {external_seats} External seats; nothing changed.")
    else:
        say(f"The plan now has {external_seats} External seats (was {previous}).")


@click.group()
def administrations() -> None:
    """List, create, rename and delete administrations (tenants)."""


@administrations.command("list")
@json_option
@pass_state
def administrations_list(state: CliState, as_json: bool) -> None:
    """List every administration with its number of roles and records."""
    with state.database().read() as session:
        role_counts = dict(
            session.execute(select(Role.administration_id, func.count()).group_by(Role.administration_id)).all()
        )
        record_counts = dict(
            session.execute(select(Record.administration_id, func.count()).group_by(Record.administration_id)).all()
        )
        rows = [
            {
                "code": administration.code,
                "name": administration.name,
                "roles": int(role_counts.get(administration.id, 0)),
                "records": int(record_counts.get(administration.id, 0)),
                "created_at": administration.created_at,
            }
            for administration in repository.list_administrations(session)
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("No administrations yet: create one with 'reflexblue administrations create CODE NAME'.")
        return
    print_table("Administrations", ["Code", "Name", "Roles", "Records", "Created"],
                [[row["code"], row["name"], row["roles"], row["records"], row["created_at"]] for row in rows])


@administrations.command("create")
@click.argument("code")
@click.argument("name")
@pass_state
def administrations_create(state: CliState, code: str, name: str) -> None:
    """Create administration CODE (used in URLs, e.g. 'acme') with display name NAME."""
    with state.database().write() as session:
        repository.validate_administration_code(code)
        existing = repository.find_administration(session, code)
        if existing is not None:
            raise ConflictError(
                f"administration {code!r} already exists (named {existing.name!r}): "
                f"use 'reflexblue administrations rename {code} NAME' to change its name"
            )
        repository.upsert_administration(session, code, name, actor=state.actor)
    say(f"Created administration {code!r} ({name.strip()}).")


@administrations.command("rename")
@click.argument("code")
@click.argument("name")
@pass_state
def administrations_rename(state: CliState, code: str, name: str) -> None:
    """Change the display name of administration CODE to NAME; the code stays."""
    with state.database().write() as session:
        administration = lookup.administration(session, code)
        previous = administration.name
        repository.upsert_administration(session, code, name, actor=state.actor)
    say(f"Renamed administration {code!r} from {previous!r} to {name.strip()!r}.")


@administrations.command("delete")
@click.argument("code")
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@pass_state
def administrations_delete(state: CliState, code: str, yes: bool) -> None:
    """Delete administration CODE with its roles, role assignments and records."""
    database = state.database()
    with database.read() as session:
        roles, records = _count_contents(session, lookup.administration(session, code))
    if not yes:
        # Confirm outside the write transaction, so that waiting for the operator locks nothing.
        click.confirm(f"Delete administration {code!r} with {roles} roles and {records} records?", abort=True, err=True)
    with database.write() as session:
        roles, records = _count_contents(session, lookup.administration(session, code))
        repository.delete_administration(session, code, actor=state.actor)
    say(f"Deleted administration {code!r} with {roles} roles and {records} records.")


def _count_contents(session: Session, administration: Administration) -> tuple[int, int]:
    roles = session.scalar(select(func.count()).select_from(Role).where(Role.administration_id == administration.id))
    records = session.scalar(
        select(func.count()).select_from(Record).where(Record.administration_id == administration.id)
    )
    return int(roles or 0), int(records or 0)
