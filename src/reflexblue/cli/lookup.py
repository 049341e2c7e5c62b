"""Look up named entities for a command; a missing one raises CommandError naming the command that lists them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from reflexblue.cli.context import CommandError
from reflexblue.storage import repository
from reflexblue.storage.models import Administration, Role, User


def administration(session: Session, code: str) -> Administration:
    found = repository.find_administration(session, code)
    if found is None:
        raise CommandError(f"administration {code!r} not found: run 'reflexblue administrations list'")
    return found


def user(session: Session, username: str) -> User:
    found = repository.find_user(session, username)
    if found is None:
        raise CommandError(f"user {username!r} not found: run 'reflexblue users list'")
    return found


def role(session: Session, administration_code: str, name: str) -> Role:
    found = repository.find_role(session, administration(session, administration_code), name)
    if found is None:
        raise CommandError(
            f"role {name!r} not found in administration {administration_code!r}: "
            f"run 'reflexblue roles list --administration {administration_code}'"
        )
    return found
