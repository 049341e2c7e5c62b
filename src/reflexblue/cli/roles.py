"""``reflexblue roles`` and ``reflexblue permissions``: roles per administration and the permission catalogue."""

from __future__ import annotations

from collections.abc import Iterable

import click
from sqlalchemy import func, select

from reflexblue.cli import lookup
from reflexblue.cli.context import CliState, pass_state
from reflexblue.cli.output import json_option, print_json, print_table, say
from reflexblue.domain.permissions import CATALOGUE, parse_permission
from reflexblue.storage import repository
from reflexblue.storage.models import RoleAssignment


def _parse_keys(permissions: Iterable[str]) -> list[str]:
    """Resolve keys or triples to catalogue keys; an unknown one raises UnknownPermissionError."""
    keys: list[str] = []
    for text in permissions:
        key = parse_permission(text).key
        if key not in keys:
            keys.append(key)
    return keys


@click.command("permissions")
@json_option
def permissions_command(as_json: bool) -> None:
    """List the permission catalogue: each key with its Module / Application / Permission triple.

    Wherever a permission is accepted as input, the key and the triple both work.
    """
    if as_json:
        print_json([permission.as_dict() for permission in CATALOGUE])
        return
    print_table("Permissions", ["Key", "Module", "Application", "Permission"],
                [[p.key, p.module, p.application, p.name] for p in CATALOGUE])


@click.group()
def roles() -> None:
    """Manage roles: named sets of permissions that grant access within one administration."""


@roles.command("list")
@click.option("--administration", "administration_code", metavar="CODE",
              help="List only the roles of this administration.")
@json_option
@pass_state
def roles_list(state: CliState, administration_code: str | None, as_json: bool) -> None:
    """List roles with their permissions and the number of users holding them."""
    with state.database().read() as session:
        if administration_code is not None:
            lookup.administration(session, administration_code)
        holders = dict(
            session.execute(select(RoleAssignment.role_id, func.count()).group_by(RoleAssignment.role_id)).all()
        )
        rows = [
            {
                "administration": role.administration.code,
                "role": role.name,
                "permissions": repository.role_permissions(session, role),
                "users": int(holders.get(role.id, 0)),
            }
            for role in repository.list_roles(session, administration_code)
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("No roles yet: create one with 'reflexblue roles create ADMINISTRATION NAME --permission KEY'.")
        return
    print_table("Roles", ["Administration", "Role", "Permissions", "Users"],
                [[row["administration"], row["role"], row["permissions"], row["users"]] for row in rows])


@roles.command("create")
@click.argument("administration")
@click.argument("name")
@click.option("--permission", "permissions", multiple=True, metavar="KEY_OR_TRIPLE",
              help="Permission the role grants, as a key ('v2.articles') or a triple "
                   "('Integrations API V2 / External API / Access to articles'); repeat for several.")
@pass_state
def roles_create(state: CliState, administration: str, name: str, permissions: tuple[str, ...]) -> None:
    """Create role NAME in ADMINISTRATION, optionally with permissions."""
    keys = _parse_keys(permissions)
    with state.database().write() as session:
        lookup.administration(session, administration)
        role = repository.create_role(session, administration, name, actor=state.actor)
        repository.set_role_permissions(session, role, keys, actor=state.actor)
        display = role.name
    granted = ", ".join(sorted(keys)) or "no permissions yet"
    say(f"Created role {display!r} in administration {administration!r} ({granted}).")


@roles.command("delete")
@click.argument("administration")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Delete without asking for confirmation.")
@pass_state
def roles_delete(state: CliState, administration: str, name: str, yes: bool) -> None:
    """Delete role NAME of ADMINISTRATION; the users holding it lose what it granted."""
    database = state.database()
    with database.read() as session:
        role = lookup.role(session, administration, name)
        holders = session.scalar(
            select(func.count()).select_from(RoleAssignment).where(RoleAssignment.role_id == role.id)
        )
    if not yes:
        click.confirm(f"Delete role {name!r} of administration {administration!r}, held by {holders} users?",
                      abort=True, err=True)
    with database.write() as session:
        role = lookup.role(session, administration, name)
        display = role.name
        repository.delete_role(session, role, actor=state.actor)
    say(f"Deleted role {display!r} of administration {administration!r}.")


@roles.command("grant")
@click.argument("administration")
@click.argument("role_name", metavar="ROLE")
@click.argument("permissions", nargs=-1, required=True, metavar="PERMISSION...")
@pass_state
def roles_grant(state: CliState, administration: str, role_name: str, permissions: tuple[str, ...]) -> None:
    """Add PERMISSIONs (keys or triples) to ROLE of ADMINISTRATION."""
    _change_permissions(state, administration, role_name, _parse_keys(permissions), add=True)


@roles.command("revoke")
@click.argument("administration")
@click.argument("role_name", metavar="ROLE")
@click.argument("permissions", nargs=-1, required=True, metavar="PERMISSION...")
@pass_state
def roles_revoke(state: CliState, administration: str, role_name: str, permissions: tuple[str, ...]) -> None:
    """Remove PERMISSIONs (keys or triples) from ROLE of ADMINISTRATION."""
    _change_permissions(state, administration, role_name, _parse_keys(permissions), add=False)


def _change_permissions(state: CliState, administration: str, role_name: str, keys: list[str], *, add: bool) -> None:
    with state.database().write() as session:
        role = lookup.role(session, administration, role_name)
        change = repository.grant if add else repository.revoke
        changed = change(session, role, *keys, actor=state.actor)
        updated = repository.role_permissions(session, role)
        display = role.name
    listing = ", ".join(updated) or "no permissions"
    if changed:
        say(f"Role {display!r} of administration {administration!r} now holds: {listing}.")
    else:
        say(f"Role {display!r} of administration {administration!r} already holds: {listing}; nothing changed.")


@roles.command("assign")
@click.argument("username")
@click.argument("administration")
@click.argument("role_name", metavar="ROLE")
@pass_state
def roles_assign(state: CliState, username: str, administration: str, role_name: str) -> None:
    """Give USERNAME the role ROLE of ADMINISTRATION."""
    with state.database().write() as session:
        user = lookup.user(session, username)
        role = lookup.role(session, administration, role_name)
        changed = repository.assign(session, user, role, actor=state.actor)
        names = (user.username, role.name)
    if changed:
        say(f"User {names[0]!r} now has role {names[1]!r} in administration {administration!r}.")
    else:
        say(f"User {names[0]!r} already had role {names[1]!r} in administration {administration!r}; nothing changed.")


@roles.command("unassign")
@click.argument("username")
@click.argument("administration")
@click.argument("role_name", metavar="ROLE")
@pass_state
def roles_unassign(state: CliState, username: str, administration: str, role_name: str) -> None:
    """Take the role ROLE of ADMINISTRATION away from USERNAME."""
    with state.database().write() as session:
        user = lookup.user(session, username)
        role = lookup.role(session, administration, role_name)
        changed = repository.unassign(session, user, role, actor=state.actor)
        names = (user.username, role.name)
    if changed:
        say(f"User {names[0]!r} no longer has role {names[1]!r} in administration {administration!r}.")
    else:
        say(f"User {names[0]!r} did not have role {names[1]!r} in administration {administration!r}; nothing changed.")
