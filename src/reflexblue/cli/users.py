"""``reflexblue users``: API users, their passwords, active flags and External seats.

Passwords are never command-line arguments, because those show up in ``ps`` and in shell
history. They come from a hidden prompt or, with ``--password-stdin``, from standard input.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import click
from sqlalchemy import select
from sqlalchemy.orm import Session

from reflexblue.cli import lookup
from reflexblue.cli.context import CliState, pass_state
from reflexblue.cli.output import json_option, print_json, print_table, say
from reflexblue.domain.errors import ConflictError, ValidationError
from reflexblue.domain.usernames import validate_username
from reflexblue.security.passwords import MIN_PASSWORD_LENGTH, Passwords, check_password_policy
from reflexblue.storage import repository
from reflexblue.storage.models import Administration, Role, RoleAssignment, User

password_source_option = click.option(
    "--password-stdin/--password-prompt",
    "password_from_stdin",
    default=False,
    help="Read the password from standard input (one trailing newline is removed), or ask for it at a hidden "
         "prompt with confirmation (the default).",
)


def read_new_password(from_stdin: bool, username: str) -> str:
    """Read a new password for ``username`` from stdin or a hidden prompt and check it against the policy."""
    if from_stdin:
        text = sys.stdin.read()
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        return check_password_policy(text, username=username)

    def check(value: str) -> str:
        try:
            return check_password_policy(value, username=username)
        except ValidationError as error:
            raise click.UsageError(str(error)) from None

    password: str = click.prompt(
        f"Password (at least {MIN_PASSWORD_LENGTH} characters)",
        hide_input=True,
        confirmation_prompt="Repeat the password",
        value_proc=check,
        err=True,
    )
    return password


def _seat_text(user: User) -> str:
    return "linked to an External seat" if user.external_seat else "not linked to an External seat"


def _roles_by_user(session: Session) -> dict[str, list[str]]:
    """Return user id -> ``administration: role`` labels, in one query."""
    rows = session.execute(
        select(RoleAssignment.user_id, Administration.code, Role.name)
        .join(Role, Role.id == RoleAssignment.role_id)
        .join(Administration, Administration.id == Role.administration_id)
        .order_by(Administration.code, Role.name_key)
    ).all()
    labels: dict[str, list[str]] = defaultdict(list)
    for user_id, code, name in rows:
        labels[user_id].append(f"{code}: {name}")
    return labels


@click.group()
def users() -> None:
    """Manage API users: passwords, active flag, External seats and tokens."""


@users.command("list")
@json_option
@pass_state
def users_list(state: CliState, as_json: bool) -> None:
    """List every user with active flag, External seat and roles."""
    with state.database().read() as session:
        roles = _roles_by_user(session)
        rows = [
            {
                "username": user.username,
                "active": user.active,
                "external_seat": user.external_seat,
                "roles": roles.get(user.id, []),
                "created_at": user.created_at,
            }
            for user in repository.list_users(session)
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("No users yet: create one with 'reflexblue users create USERNAME'.")
        return
    print_table("Users", ["Username", "Active", "External seat", "Roles", "Created"],
                [[row["username"], row["active"], row["external_seat"], row["roles"], row["created_at"]]
                 for row in rows])


@users.command("create")
@click.argument("username")
@password_source_option
@click.option("--inactive", is_flag=True, help="Create the user inactive, so it cannot log in yet.")
@click.option("--external-seat", is_flag=True, help="Link the user to one of the plan's External seats.")
@pass_state
def users_create(
    state: CliState, username: str, password_from_stdin: bool, inactive: bool, external_seat: bool
) -> None:
    """Create user USERNAME; the password is read from a hidden prompt or standard input."""
    # Check the name before asking for a password, so a typo costs no typing.
    try:
        validate_username(username)
    except ValueError as error:
        raise ValidationError(f"invalid username {username!r}: {error}") from None
    database = state.database()
    with database.read() as session:
        if repository.find_user(session, username) is not None:
            raise ConflictError(
                f"user {username!r} already exists (usernames are compared case-insensitively): "
                f"use 'reflexblue users set-password {username}' to change its password"
            )
    password_hash = Passwords(state.settings()).hash(read_new_password(password_from_stdin, username))
    with database.write() as session:
        user = repository.create_user(
            session, username, password_hash, actor=state.actor, active=not inactive, external_seat=external_seat
        )
        summary = f"{'inactive' if inactive else 'active'}, {_seat_text(user)}"
        display = user.username
    say(f"Created user {display!r} ({summary}).")
    if not external_seat:
        say(f"The user cannot log in without an External seat: run 'reflexblue users link-seat {display}'.")


@users.command("set-password")
@click.argument("username")
@password_source_option
@pass_state
def users_set_password(state: CliState, username: str, password_from_stdin: bool) -> None:
    """Set a new password for USERNAME; tokens issued before the change stop working."""
    database = state.database()
    with database.read() as session:
        display = lookup.user(session, username).username
    password_hash = Passwords(state.settings()).hash(read_new_password(password_from_stdin, display))
    with database.write() as session:
        user = lookup.user(session, username)
        repository.set_password_hash(session, user, password_hash, actor=state.actor)
        display = user.username
    say(f"Changed the password of {display!r}; tokens issued before now are no longer accepted.")


@users.command("activate")
@click.argument("username")
@pass_state
def users_activate(state: CliState, username: str) -> None:
    """Let USERNAME log in and use its tokens again."""
    _set_active(state, username, True)


@users.command("deactivate")
@click.argument("username")
@pass_state
def users_deactivate(state: CliState, username: str) -> None:
    """Stop USERNAME from logging in; its tokens get 401 from now on."""
    _set_active(state, username, False)


def _set_active(state: CliState, username: str, active: bool) -> None:
    word = "active" if active else "inactive"
    with state.database().write() as session:
        user = lookup.user(session, username)
        changed = user.active != active
        repository.set_active(session, user, active, actor=state.actor)
        display = user.username
    say(f"User {display!r} is now {word}." if changed else f"User {display!r} was already {word}; nothing changed.")


@users.command("link-seat")
@click.argument("username")
@pass_state
def users_link_seat(state: CliState, username: str) -> None:
    """Link USERNAME to one of the plan's External seats, which login and every API call require."""
    with state.database().write() as session:
        user = lookup.user(session, username)
        changed = not user.external_seat
        repository.link_seat(session, user, actor=state.actor)
        used = repository.seats_used(session)
        limit = repository.get_environment(session).external_seats
        display = user.username
    if changed:
        say(f"Linked {display!r} to an External seat ({used} of {limit} seats in use).")
    else:
        say(f"User {display!r} was already linked to an External seat; nothing changed.")


@users.command("unlink-seat")
@click.argument("username")
@pass_state
def users_unlink_seat(state: CliState, username: str) -> None:
    """Free the External seat of USERNAME; its API calls get 403 from now on."""
    with state.database().write() as session:
        user = lookup.user(session, username)
        changed = user.external_seat
        repository.unlink_seat(session, user, actor=state.actor)
        used = repository.seats_used(session)
        limit = repository.get_environment(session).external_seats
        display = user.username
    if changed:
        say(f"Unlinked {display!r} from its External seat ({used} of {limit} seats in use).")
    else:
        say(f"User {display!r} was not linked to an External seat; nothing changed.")


@users.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@pass_state
def users_delete(state: CliState, username: str, yes: bool) -> None:
    """Delete USERNAME with its role assignments; its tokens get 401 from now on."""
    database = state.database()
    with database.read() as session:
        display = lookup.user(session, username).username
    if not yes:
        click.confirm(f"Delete user {display!r}?", abort=True, err=True)
    with database.write() as session:
        repository.delete_user(session, lookup.user(session, username), actor=state.actor)
    say(f"Deleted user {display!r}.")


@users.command("revoke-tokens")
@click.argument("username")
@pass_state
def users_revoke_tokens(state: CliState, username: str) -> None:
    """Log USERNAME out everywhere: every token issued so far gets 401; a new login works."""
    with state.database().write() as session:
        user = lookup.user(session, username)
        repository.revoke_tokens(session, user, actor=state.actor)
        display = user.username
    say(f"Revoked every token of {display!r}; it must log in again.")


@users.command("show")
@click.argument("username")
@json_option
@pass_state
def users_show(state: CliState, username: str, as_json: bool) -> None:
    """Show USERNAME: active flag, External seat, and roles with permissions per administration."""
    with state.database().read() as session:
        user = lookup.user(session, username)
        roles = [
            {
                "administration": role.administration.code,
                "role": role.name,
                "permissions": repository.role_permissions(session, role),
            }
            for role in repository.user_roles(session, user)
        ]
        data = {
            "username": user.username,
            "active": user.active,
            "external_seat": user.external_seat,
            "created_at": user.created_at,
            "modified_at": user.modified_at,
            "roles": roles,
        }
    if as_json:
        print_json(data)
        return
    print_table(f"User {data['username']}", ["Active", "External seat", "Created", "Modified"],
                [[data["active"], data["external_seat"], data["created_at"], data["modified_at"]]])
    if not roles:
        say(f"{data['username']} has no roles in any administration: "
            f"run 'reflexblue roles assign {data['username']} ADMINISTRATION ROLE'.")
        return
    print_table("Roles", ["Administration", "Role", "Permissions"],
                [[role["administration"], role["role"], role["permissions"]] for role in roles])
