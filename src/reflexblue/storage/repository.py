"""Repositories: every read and write of the domain's entities, with the rules that need the database.

Functions take an open :class:`~sqlalchemy.orm.Session`; the caller owns the transaction, so a
provisioning file or a CLI command applies all of its changes or none. Every change that can
alter an access decision bumps the environment's ``access_epoch``, which running servers poll.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reflexblue.domain.errors import (
    ConflictError,
    NotFoundError,
    SeatLimitError,
    UnknownPermissionError,
    ValidationError,
)
from reflexblue.domain.permissions import BY_KEY
from reflexblue.domain.resources import CODE_PATTERN
from reflexblue.domain.usernames import normalise_username, validate_username
from reflexblue.storage.models import (
    Administration,
    AuditEvent,
    Environment,
    Role,
    RoleAssignment,
    RolePermission,
    User,
    utcnow,
)

MAX_EXTERNAL_SEATS = 1_000_000
_ADMINISTRATION_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_CODE = re.compile(CODE_PATTERN)


def _flush_unique(session: Session, message: str) -> None:
    """Flush, turning a unique-constraint violation from a concurrent change into ConflictError."""
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(message) from None


def new_id() -> str:
    """Return a random, unguessable identifier (UUID version 4, 122 random bits)."""
    return str(uuid.uuid4())


def new_credential_stamp() -> str:
    return secrets.token_hex(8)


# ---------------------------------------------------------------------------------------------
# Environment and plan


def get_environment(session: Session, *, for_update: bool = False) -> Environment:
    statement = select(Environment).where(Environment.id == 1)
    if for_update:
        statement = statement.with_for_update()
    environment = session.scalars(statement).one_or_none()
    if environment is None:
        environment = Environment(id=1, environment_id=secrets.token_hex(8), external_seats=0, access_epoch=0)
        session.add(environment)
        session.flush()
    return environment


#: Key in ``Session.info`` set when the transaction bumped the access epoch; read after commit by
#: ``reflexblue.notifications`` to tell other processes at once.
ACCESS_CHANGED = "reflexblue.access_changed"


def bump_access_epoch(session: Session) -> None:
    get_environment(session)
    session.execute(update(Environment).where(Environment.id == 1).values(access_epoch=Environment.access_epoch + 1))
    session.info[ACCESS_CHANGED] = True


def read_access_epoch(session: Session) -> int:
    value = session.scalar(select(Environment.access_epoch).where(Environment.id == 1))
    return int(value or 0)


def seats_used(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User).where(User.external_seat.is_(True))) or 0)


def set_external_seats(session: Session, seats: int, *, actor: str) -> None:
    """Set the plan's number of External seats; it cannot drop below the seats in use."""
    if not isinstance(seats, int) or isinstance(seats, bool) or not 0 <= seats <= MAX_EXTERNAL_SEATS:
        raise ValidationError(
            f"invalid external_seats {seats!r}: use a whole number from 0 to {MAX_EXTERNAL_SEATS}"
        )
    environment = get_environment(session, for_update=True)
    used = seats_used(session)
    if seats < used:
        raise ValidationError(
            f"cannot set external_seats to {seats}: {used} users are linked to External seats; "
            "unlink users first (`reflexblue users unlink-seat NAME`)"
        )
    if environment.external_seats != seats:
        audit(session, "plan.changed", actor, detail={"external_seats": seats, "previous": environment.external_seats})
        environment.external_seats = seats
        bump_access_epoch(session)


# ---------------------------------------------------------------------------------------------
# Administrations


def validate_administration_code(code: str) -> str:
    if not isinstance(code, str) or not _ADMINISTRATION_CODE.match(code):
        raise ValidationError(
            f"invalid administration code {code!r}: use 1-64 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return code


def get_administration(session: Session, code: str) -> Administration:
    administration = session.scalars(select(Administration).where(Administration.code == code)).one_or_none()
    if administration is None:
        raise NotFoundError("administration", code)
    return administration


def find_administration(session: Session, code: str) -> Administration | None:
    return session.scalars(select(Administration).where(Administration.code == code)).one_or_none()


def list_administrations(session: Session) -> list[Administration]:
    return list(session.scalars(select(Administration).order_by(Administration.code)))


def upsert_administration(session: Session, code: str, name: str, *, actor: str) -> Administration:
    """Create the administration, or rename it when it exists."""
    validate_administration_code(code)
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise ValidationError(f"invalid name for administration {code!r}: give 1-255 characters")
    administration = find_administration(session, code)
    if administration is None:
        administration = Administration(id=new_id(), code=code, name=name)
        session.add(administration)
        _flush_unique(session, f"administration {code!r} was created at the same time by another change: retry")
        audit(session, "administration.created", actor, administration=code, detail={"name": name})
        bump_access_epoch(session)
    elif administration.name != name:
        administration.name = name
        audit(session, "administration.renamed", actor, administration=code, detail={"name": name})
        bump_access_epoch(session)
    return administration


def delete_administration(session: Session, code: str, *, actor: str) -> None:
    administration = get_administration(session, code)
    session.delete(administration)
    session.flush()
    audit(session, "administration.deleted", actor, administration=code)
    bump_access_epoch(session)


# ---------------------------------------------------------------------------------------------
# Users


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username_key == normalise_username(username))).one_or_none()


def find_user_by_key(session: Session, username_key: str) -> User | None:
    """Find a user by an already normalised username."""
    return session.scalars(select(User).where(User.username_key == username_key)).one_or_none()


def get_user(session: Session, username: str) -> User:
    user = find_user(session, username)
    if user is None:
        raise NotFoundError("user", username)
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username_key)))


def create_user(
    session: Session,
    username: str,
    password_hash: str,
    *,
    actor: str,
    active: bool = True,
    external_seat: bool = False,
) -> User:
    try:
        display = validate_username(username)
    except ValueError as error:
        raise ValidationError(f"invalid username {username!r}: {error}") from None
    if find_user(session, display) is not None:
        raise ConflictError(f"user {display!r} already exists (usernames are compared case-insensitively)")
    now = utcnow()
    user = User(
        id=new_id(),
        username=display,
        username_key=normalise_username(display),
        password_hash=password_hash,
        active=active,
        external_seat=False,
        credential_stamp=new_credential_stamp(),
        created_at=now,
        modified_at=now,
    )
    session.add(user)
    _flush_unique(session, f"user {display!r} already exists (usernames are compared case-insensitively)")
    audit(session, "user.created", actor, username=display, detail={"active": active})
    if external_seat:
        link_seat(session, user, actor=actor)
    bump_access_epoch(session)
    return user


def set_password_hash(
    session: Session, user: User, password_hash: str, *, actor: str, provisioned: bool = False
) -> None:
    """Store a new password hash; tokens issued before the change stop working.

    ``provisioned`` marks a hash taken verbatim from a provisioning file (see ``provisioned_hash_digest``).
    """
    user.password_hash = password_hash
    user.provisioned_hash_digest = hash_digest(password_hash) if provisioned else None
    user.credential_stamp = new_credential_stamp()
    user.modified_at = utcnow()
    audit(session, "user.password_changed", actor, username=user.username)
    bump_access_epoch(session)


def hash_digest(password_hash: str) -> str:
    """Return the SHA-256 hex digest of a password hash string, to recognise a provisioned hash later."""
    return hashlib.sha256(password_hash.encode()).hexdigest()


def rehash_password(session: Session, user_id: str, old_hash: str, new_hash: str) -> None:
    """Replace a hash with one made under current parameters, without touching the credential stamp."""
    session.execute(
        update(User).where(User.id == user_id, User.password_hash == old_hash).values(password_hash=new_hash)
    )


def revoke_tokens(session: Session, user: User, *, actor: str) -> None:
    """Invalidate every token issued to the user so far ("log out everywhere")."""
    user.credential_stamp = new_credential_stamp()
    user.modified_at = utcnow()
    audit(session, "user.tokens_revoked", actor, username=user.username)
    bump_access_epoch(session)


def set_active(session: Session, user: User, active: bool, *, actor: str) -> None:
    if user.active != active:
        user.active = active
        user.modified_at = utcnow()
        audit(session, "user.activated" if active else "user.deactivated", actor, username=user.username)
        bump_access_epoch(session)


def link_seat(session: Session, user: User, *, actor: str) -> None:
    """Link the user to an External seat, within the plan's cap even under concurrent changes.

    The environment row is locked first (``FOR UPDATE`` on PostgreSQL, the write lock on SQLite),
    so two transactions cannot both see the last free seat.
    """
    if user.external_seat:
        return
    environment = get_environment(session, for_update=True)
    used = seats_used(session)
    if used >= environment.external_seats:
        raise SeatLimitError(used, environment.external_seats)
    user.external_seat = True
    user.modified_at = utcnow()
    session.flush()
    audit(session, "seat.linked", actor, username=user.username)
    bump_access_epoch(session)


def unlink_seat(session: Session, user: User, *, actor: str) -> None:
    if not user.external_seat:
        return
    user.external_seat = False
    user.modified_at = utcnow()
    session.flush()
    audit(session, "seat.unlinked", actor, username=user.username)
    bump_access_epoch(session)


def delete_user(session: Session, user: User, *, actor: str) -> None:
    username = user.username
    session.delete(user)
    session.flush()
    audit(session, "user.deleted", actor, username=username)
    bump_access_epoch(session)


# ---------------------------------------------------------------------------------------------
# Roles and permissions


def _role_key(name: str) -> str:
    return normalise_username(name)


def find_role(session: Session, administration: Administration, name: str) -> Role | None:
    return session.scalars(
        select(Role).where(Role.administration_id == administration.id, Role.name_key == _role_key(name))
    ).one_or_none()


def get_role(session: Session, administration_code: str, name: str) -> Role:
    administration = get_administration(session, administration_code)
    role = find_role(session, administration, name)
    if role is None:
        raise NotFoundError("role", name, f"in administration {administration_code!r}")
    return role


def list_roles(session: Session, administration_code: str | None = None) -> list[Role]:
    statement = select(Role).join(Administration).order_by(Administration.code, Role.name_key)
    if administration_code is not None:
        statement = statement.where(Administration.code == administration_code)
    return list(session.scalars(statement))


def role_permissions(session: Session, role: Role) -> list[str]:
    return sorted(session.scalars(select(RolePermission.permission_key).where(RolePermission.role_id == role.id)))


def create_role(session: Session, administration_code: str, name: str, *, actor: str) -> Role:
    administration = get_administration(session, administration_code)
    name = (name or "").strip()
    if not name or len(name) > 150:
        raise ValidationError(f"invalid role name {name!r}: give 1-150 characters")
    if find_role(session, administration, name) is not None:
        raise ConflictError(f"role {name!r} already exists in administration {administration_code!r}")
    role = Role(id=new_id(), administration_id=administration.id, name=name, name_key=_role_key(name))
    session.add(role)
    _flush_unique(session, f"role {name!r} already exists in administration {administration_code!r}")
    audit(session, "role.created", actor, administration=administration_code, detail={"role": name})
    bump_access_epoch(session)
    return role


def delete_role(session: Session, role: Role, *, actor: str) -> None:
    code = role.administration.code
    name = role.name
    session.delete(role)
    session.flush()
    audit(session, "role.deleted", actor, administration=code, detail={"role": name})
    bump_access_epoch(session)


def set_role_permissions(session: Session, role: Role, keys: list[str], *, actor: str) -> bool:
    """Make the role hold exactly ``keys``; returns whether anything changed."""
    for key in keys:
        if key not in BY_KEY:
            raise UnknownPermissionError(key)
    current = set(role_permissions(session, role))
    wanted = set(keys)
    if current == wanted:
        return False
    removed = current - wanted
    if removed:
        session.execute(
            delete(RolePermission).where(RolePermission.role_id == role.id, RolePermission.permission_key.in_(removed))
        )
    for key in sorted(wanted - current):
        session.add(RolePermission(role_id=role.id, permission_key=key))
    session.flush()
    code = role.administration.code
    for key in sorted(wanted - current):
        audit(session, "role.permission_granted", actor, administration=code, detail={"role": role.name, "permission": key})
    for key in sorted(removed):
        audit(session, "role.permission_revoked", actor, administration=code, detail={"role": role.name, "permission": key})
    bump_access_epoch(session)
    return True


def grant(session: Session, role: Role, *keys: str, actor: str) -> bool:
    """Add ``keys`` to the role's permissions; returns whether anything changed."""
    current = role_permissions(session, role)
    return set_role_permissions(session, role, sorted({*current, *keys}), actor=actor)


def revoke(session: Session, role: Role, *keys: str, actor: str) -> bool:
    """Remove ``keys`` from the role's permissions; returns whether anything changed."""
    current = role_permissions(session, role)
    return set_role_permissions(session, role, [key for key in current if key not in keys], actor=actor)


def user_roles(session: Session, user: User) -> list[Role]:
    return list(
        session.scalars(
            select(Role)
            .join(RoleAssignment, RoleAssignment.role_id == Role.id)
            .join(Administration)
            .where(RoleAssignment.user_id == user.id)
            .order_by(Administration.code, Role.name_key)
        )
    )


def assign(session: Session, user: User, role: Role, *, actor: str) -> bool:
    exists = session.get(RoleAssignment, (user.id, role.id))
    if exists is not None:
        return False
    session.add(RoleAssignment(user_id=user.id, role_id=role.id))
    session.flush()
    audit(session, "role.assigned", actor, username=user.username, administration=role.administration.code,
          detail={"role": role.name})
    bump_access_epoch(session)
    return True


def unassign(session: Session, user: User, role: Role, *, actor: str) -> bool:
    result = session.execute(
        delete(RoleAssignment).where(RoleAssignment.user_id == user.id, RoleAssignment.role_id == role.id)
    )
    if not result.rowcount:
        return False
    audit(session, "role.unassigned", actor, username=user.username, administration=role.administration.code,
          detail={"role": role.name})
    bump_access_epoch(session)
    return True


def set_user_roles(session: Session, user: User, roles: list[Role], *, actor: str) -> bool:
    """Make ``roles`` exactly the user's roles; returns whether anything changed."""
    current = {role.id: role for role in user_roles(session, user)}
    wanted = {role.id: role for role in roles}
    changed = False
    for role_id, role in current.items():
        if role_id not in wanted:
            changed |= unassign(session, user, role, actor=actor)
    for role_id, role in wanted.items():
        if role_id not in current:
            changed |= assign(session, user, role, actor=actor)
    return changed


# ---------------------------------------------------------------------------------------------
# Access snapshot


@dataclass(frozen=True, slots=True)
class AccessSnapshot:
    """The data the access decision needs about one user, loaded in one read transaction."""

    user_id: str
    username: str
    active: bool
    external_seat: bool
    credential_stamp: str
    #: administration code -> permission keys held there
    permissions: dict[str, frozenset[str]]


def load_access_snapshot(session: Session, user_id: str) -> AccessSnapshot | None:
    user = session.get(User, user_id)
    if user is None:
        return None
    rows = session.execute(
        select(Administration.code, RolePermission.permission_key)
        .select_from(RoleAssignment)
        .join(Role, Role.id == RoleAssignment.role_id)
        .join(Administration, Administration.id == Role.administration_id)
        .join(RolePermission, RolePermission.role_id == Role.id)
        .where(RoleAssignment.user_id == user_id)
    ).all()
    granted: dict[str, set[str]] = defaultdict(set)
    for code, key in rows:
        granted[code].add(key)
    return AccessSnapshot(
        user_id=user.id,
        username=user.username,
        active=user.active,
        external_seat=user.external_seat,
        credential_stamp=user.credential_stamp,
        permissions={code: frozenset(keys) for code, keys in granted.items()},
    )


# ---------------------------------------------------------------------------------------------
# Audit


def audit(
    session: Session,
    event: str,
    actor: str,
    *,
    username: str | None = None,
    administration: str | None = None,
    detail: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """Append a security event to the audit trail, in the caller's transaction."""
    session.add(
        AuditEvent(
            at=at or utcnow(),
            event=event,
            actor=actor[:200],
            username=username[:150] if username else None,
            administration=administration,
            detail=detail or {},
        )
    )
