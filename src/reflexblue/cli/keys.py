"""``reflexblue keys``: list, rotate and retire the token signing keys."""

from __future__ import annotations

import datetime as dt

import click

from reflexblue.cli.context import CliState, CommandError, pass_state
from reflexblue.cli.output import format_age, json_option, print_json, print_table, say
from reflexblue.security import keys as signing_keys
from reflexblue.storage.models import SigningKey


@click.group()
def keys() -> None:
    """Manage token signing keys: the active key signs, previous keys still verify."""


@keys.command("list")
@json_option
@pass_state
def keys_list(state: CliState, as_json: bool) -> None:
    """List signing keys with id (kid), algorithm, state, creation time and age."""
    now = dt.datetime.now(dt.UTC)
    with state.database().read() as session:
        rows = [
            {
                "kid": key.kid,
                "algorithm": key.algorithm,
                "state": key.state,
                "created_at": key.created_at,
                "age": format_age(key.created_at, now),
                "deactivated_at": key.deactivated_at,
            }
            for key in signing_keys.list_keys(session)
        ]
    if as_json:
        print_json(rows)
        return
    print_table("Signing keys", ["Kid", "Algorithm", "State", "Created", "Age", "Stopped signing"],
                [[row["kid"], row["algorithm"], row["state"], row["created_at"], row["age"], row["deactivated_at"]]
                 for row in rows])


@keys.command("rotate")
@pass_state
def keys_rotate(state: CliState) -> None:
    """Start signing with a new key; tokens signed with the previous key stay valid until they expire."""
    settings = state.settings()
    with state.database().write() as session:
        key = signing_keys.create_key(session, settings.token_algorithm, secret=settings.secret_key, actor=state.actor)
        kid = key.kid
    say(f"New active signing key {kid} ({settings.token_algorithm}). Tokens signed with the previous key stay "
        f"valid until they expire; retire it with 'reflexblue keys retire KID' to reject them at once.")


@keys.command("retire")
@click.argument("kid")
@pass_state
def keys_retire(state: CliState, kid: str) -> None:
    """Stop accepting key KID at once, e.g. when it leaked; tokens it signed get 401 from now on."""
    with state.database().write() as session:
        if session.get(SigningKey, kid) is None:
            raise CommandError(f"signing key {kid!r} not found: run 'reflexblue keys list' for the kid values")
        signing_keys.retire_key(session, kid, actor=state.actor)
    say(f"Retired signing key {kid}; tokens it signed are rejected from now on.")
