"""Apply a validated provisioning file to the database in one transaction.

Every change goes through :mod:`reflexblue.storage.repository`, so each one is audited and bumps
the access epoch that running servers poll. Any error rolls the whole file back. Applying the
same file again changes nothing: a ``password`` is stored only when it does not already verify
against the stored hash, because storing it rotates the credential stamp and ends the user's
tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from reflexblue.bootstrap import prepare
from reflexblue.domain.errors import ReflexBlueError
from reflexblue.provisioning.reader import (
    AdministrationSpec,
    ProvisioningError,
    ProvisioningSpec,
    UserSpec,
    read_file,
)
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import repository
from reflexblue.storage.database import Database
from reflexblue.storage.models import Role, User

_SUMMARY_LABELS = {
    "plan_changed": "plan changes (External seats)",
    "administrations_created": "administrations created",
    "administrations_renamed": "administrations renamed",
    "roles_created": "roles created",
    "role_permissions_changed": "existing roles with changed permissions",
    "users_created": "users created",
    "passwords_changed": "passwords changed",
    "users_activated": "users activated",
    "users_deactivated": "users deactivated",
    "seats_linked": "External seats linked",
    "seats_unlinked": "External seats unlinked",
    "user_roles_changed": "users with changed roles",
}


@dataclass(slots=True)
class ApplySummary:
    """Counts of what applying a file changed; all zero when the database already matched it."""

    plan_changed: int = 0
    administrations_created: int = 0
    administrations_renamed: int = 0
    roles_created: int = 0
    role_permissions_changed: int = 0
    users_created: int = 0
    passwords_changed: int = 0
    users_activated: int = 0
    users_deactivated: int = 0
    seats_linked: int = 0
    seats_unlinked: int = 0
    user_roles_changed: int = 0

    @property
    def changed(self) -> bool:
        return any(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> list[str]:
        """Return one human-readable line per non-zero count, such as ``users created: 2``."""
        return [f"{_SUMMARY_LABELS[name]}: {count}" for name, count in asdict(self).items() if count]


class _DryRunRollback(Exception):
    """Raised inside the transaction of a dry run so that ``Database.write`` rolls it back."""

    def __init__(self, summary: ApplySummary) -> None:
        super().__init__("dry run")
        self.summary = summary


def provision_file(
    settings: Settings, path: str | Path, *, actor: str | None = None, dry_run: bool = False
) -> ApplySummary:
    """Read the file at ``path``, prepare the database and apply the file (or only check it, with ``dry_run``).

    The file is validated before the database is opened, so a broken file creates no database.
    """
    spec = read_file(path)
    database = prepare(settings)
    try:
        return apply_spec(database, spec, settings, actor=actor or f"provision:{spec.source}", dry_run=dry_run)
    finally:
        database.dispose()


def apply_spec(
    database: Database, spec: ProvisioningSpec, settings: Settings, *, actor: str, dry_run: bool = False
) -> ApplySummary:
    """Apply ``spec`` in one write transaction; with ``dry_run`` roll it back after all checks passed."""
    passwords = Passwords(settings)
    try:
        with database.write() as session:
            summary = apply_in_session(session, spec, passwords, actor=actor)
            if dry_run:
                raise _DryRunRollback(summary)
    except _DryRunRollback as rollback:
        return rollback.summary
    return summary


def apply_in_session(session: Session, spec: ProvisioningSpec, passwords: Passwords, *, actor: str) -> ApplySummary:
    """Apply ``spec`` inside the caller's transaction, which must roll back if this raises."""
    summary = ApplySummary()
    _apply_administrations(session, spec, summary, actor)
    users = _apply_users(session, spec, passwords, summary, actor)
    _apply_seats(session, spec, users, summary, actor)
    _apply_user_roles(session, spec, users, summary, actor)
    return summary


@contextlib.contextmanager
def _located(spec: ProvisioningSpec, location: str) -> Iterator[None]:
    """Prefix a repository error with the file and entry it came from."""
    try:
        yield
    except ProvisioningError:
        raise
    except ReflexBlueError as error:
        raise ProvisioningError(f"{spec.source}: {location}: {error}") from error


def _fail(spec: ProvisioningSpec, location: str, problem: str) -> ProvisioningError:
    prefix = f"{spec.source}: {location}: " if location else f"{spec.source}: "
    return ProvisioningError(prefix + problem)


def _apply_administrations(session: Session, spec: ProvisioningSpec, summary: ApplySummary, actor: str) -> None:
    for administration_spec in spec.administrations:
        with _located(spec, administration_spec.location):
            _apply_administration(session, spec, administration_spec, summary, actor)


def _apply_administration(
    session: Session, spec: ProvisioningSpec, entry: AdministrationSpec, summary: ApplySummary, actor: str
) -> None:
    administration = repository.find_administration(session, entry.code)
    if administration is None:
        if entry.name is None:
            raise _fail(spec, entry.location, 'missing field "name", which is required to create the administration')
        administration = repository.upsert_administration(session, entry.code, entry.name, actor=actor)
        summary.administrations_created += 1
    elif entry.name is not None and entry.name != administration.name:
        repository.upsert_administration(session, entry.code, entry.name, actor=actor)
        summary.administrations_renamed += 1

    for role_spec in entry.roles:
        with _located(spec, role_spec.location):
            role = repository.find_role(session, administration, role_spec.name)
            created = role is None
            if role is None:
                role = repository.create_role(session, entry.code, role_spec.name, actor=actor)
                summary.roles_created += 1
            if role_spec.permissions is not None:
                changed = repository.set_role_permissions(session, role, list(role_spec.permissions), actor=actor)
                if changed and not created:
                    summary.role_permissions_changed += 1


def _apply_users(
    session: Session, spec: ProvisioningSpec, passwords: Passwords, summary: ApplySummary, actor: str
) -> list[tuple[UserSpec, User]]:
    """Create or update every listed user except seats and roles; return (entry, user) pairs."""
    result: list[tuple[UserSpec, User]] = []
    for entry in spec.users:
        with _located(spec, entry.location):
            user = repository.find_user(session, entry.username)
            if user is None:
                user = _create_user(session, spec, entry, passwords, actor)
                summary.users_created += 1
            else:
                if _update_password(session, entry, user, passwords, actor):
                    summary.passwords_changed += 1
                if entry.active is not None and entry.active != user.active:
                    repository.set_active(session, user, entry.active, actor=actor)
                    if entry.active:
                        summary.users_activated += 1
                    else:
                        summary.users_deactivated += 1
        result.append((entry, user))
    return result


def _create_user(
    session: Session, spec: ProvisioningSpec, entry: UserSpec, passwords: Passwords, actor: str
) -> User:
    if entry.password is not None:
        password_hash = passwords.hash(entry.password)
    elif entry.password_hash is not None:
        password_hash = entry.password_hash
    else:
        raise _fail(spec, entry.location, 'the user does not exist yet, so give "password" or "password_hash"')
    active = True if entry.active is None else entry.active
    # The seat is linked later, after the unlinks of this file have freed seats.
    user = repository.create_user(session, entry.username, password_hash, actor=actor, active=active)
    if entry.password is None:
        user.provisioned_hash_digest = repository.hash_digest(password_hash)
    return user


def _update_password(session: Session, entry: UserSpec, user: User, passwords: Passwords, actor: str) -> bool:
    """Store the entry's password or hash unless the user already has it; return whether it was stored."""
    if entry.password is not None:
        if passwords.verify(user.password_hash, entry.password).ok:
            return False
        repository.set_password_hash(session, user, passwords.hash(entry.password), actor=actor)
        return True
    if entry.password_hash is not None and entry.password_hash != user.password_hash:
        if user.provisioned_hash_digest == repository.hash_digest(entry.password_hash):
            return False  # the same file hash, re-hashed at login under newer argon2 parameters
        repository.set_password_hash(session, user, entry.password_hash, actor=actor, provisioned=True)
        return True
    return False


def _apply_seats(
    session: Session, spec: ProvisioningSpec, users: list[tuple[UserSpec, User]], summary: ApplySummary, actor: str
) -> None:
    """Unlink seats, set the plan, then link seats, so a file that swaps seats within the plan works."""
    environment = repository.get_environment(session, for_update=True)
    planned_seats = environment.external_seats if spec.external_seats is None else spec.external_seats
    to_unlink = [(entry, user) for entry, user in users if entry.external_seat is False and user.external_seat]
    to_link = [(entry, user) for entry, user in users if entry.external_seat is True and not user.external_seat]
    used = repository.seats_used(session)
    needed = used - len(to_unlink) + len(to_link)

    if planned_seats == 0:
        for entry, _user in users:
            if entry.external_seat:
                raise _fail(
                    spec, entry.location,
                    "external_seat is true but the plan has no External seats (it lacks the 'External Seats / API' "
                    "usage): set plan.external_seats in the file, or run 'reflexblue plan set --external-seats N'",
                )
    if needed > planned_seats:
        held_by_unlisted = used - sum(1 for _entry, user in users if user.external_seat)
        raise _fail(
            spec, "plan.external_seats" if spec.external_seats is not None else "",
            f"the file needs {needed} External seats but the plan allows {planned_seats} "
            f"({held_by_unlisted} of them are held by users the file does not list): raise plan.external_seats, "
            "or set external_seat: false for users that need no seat",
        )

    for entry, user in to_unlink:
        with _located(spec, entry.location):
            repository.unlink_seat(session, user, actor=actor)
            summary.seats_unlinked += 1
    if spec.external_seats is not None and spec.external_seats != environment.external_seats:
        with _located(spec, "plan.external_seats"):
            repository.set_external_seats(session, spec.external_seats, actor=actor)
            summary.plan_changed += 1
    for entry, user in to_link:
        with _located(spec, entry.location):
            repository.link_seat(session, user, actor=actor)
            summary.seats_linked += 1


def _apply_user_roles(
    session: Session, spec: ProvisioningSpec, users: list[tuple[UserSpec, User]], summary: ApplySummary, actor: str
) -> None:
    for entry, user in users:
        if entry.roles is None:
            continue
        roles: list[Role] = []
        for reference in entry.roles:
            administration = repository.find_administration(session, reference.administration)
            if administration is None:
                raise _fail(
                    spec, reference.location,
                    f"administration {reference.administration!r} not found: add it under \"administrations\" "
                    "or run 'reflexblue administrations list'",
                )
            role = repository.find_role(session, administration, reference.role)
            if role is None:
                raise _fail(
                    spec, reference.location,
                    f"role {reference.role!r} not found in administration {reference.administration!r}: add it "
                    f"to the roles of administration {reference.administration!r} in the file, or run "
                    f"'reflexblue roles list --administration {reference.administration}'",
                )
            roles.append(role)
        with _located(spec, entry.location):
            if repository.set_user_roles(session, user, roles, actor=actor):
                summary.user_roles_changed += 1
