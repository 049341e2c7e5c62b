"""SQLAlchemy 2 models. One schema serves SQLite and PostgreSQL; Alembic owns its history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,

    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always returned timezone-aware, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Environment(Base):
    """The single row describing this deployment: its id, the plan, and the access-change counter."""

    __tablename__ = "environment"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(64), nullable=False)
    external_seats: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Bumped by every change that can alter an access decision; processes poll it.
    access_epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


class Administration(Base):
    __tablename__ = "administrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)

    roles: Mapped[list[Role]] = relationship(back_populates="administration", cascade="all, delete-orphan")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(150), nullable=False)
    #: NFKC-normalised, trimmed, case-folded username: the unique comparison key.
    username_key: Mapped[str] = mapped_column(String(600), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    external_seat: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: SHA-256 of the last password_hash applied from a provisioning file, so re-applying the file
    #: after a login re-hashed the password (new argon2 parameters) changes nothing.
    provisioned_hash_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Changes with every password change and "log out everywhere"; tokens carry it.
    credential_stamp: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    modified_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)

    assignments: Mapped[list[RoleAssignment]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("administration_id", "name_key", name="uq_roles_administration_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    administration_id: Mapped[str] = mapped_column(
        ForeignKey("administrations.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(150), nullable=False)
    name_key: Mapped[str] = mapped_column(String(600), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)

    administration: Mapped[Administration] = relationship(back_populates="roles")
    permissions: Mapped[list[RolePermission]] = relationship(cascade="all, delete-orphan")
    assignments: Mapped[list[RoleAssignment]] = relationship(back_populates="role", cascade="all, delete-orphan")


class RolePermission(Base):
    __tablename__ = "role_permissions"

    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    permission_key: Mapped[str] = mapped_column(String(64), primary_key=True)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)

    user: Mapped[User] = relationship(back_populates="assignments")
    role: Mapped[Role] = relationship(back_populates="assignments")


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16), nullable=False)
    #: PKCS#8 PEM of the private key.
    private_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    #: The public key as a JWK (JSON object).
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    #: One of "active" (signs new tokens), "previous" (verifies only), "retired" (rejected).
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    #: When the key stopped signing; tokens it signed expire at most one lifetime later.
    deactivated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, index=True)


class ThrottleCounter(Base):
    """Consecutive login failures of one key ("user:<digest>" or "address:<digest>")."""

    __tablename__ = "throttle_counters"

    key: Mapped[str] = mapped_column(String(700), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Unix time before which attempts are rejected with 429.
    blocked_until: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    last_failure_at: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    #: Password checks reserved and not yet settled; see reflexblue.security.throttle.
    pending: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    #: Unix time of the last reservation, to drop reservations of processes that died.
    pending_at: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")


class Record(Base):
    """A record of one of the fourteen resources; its fields live in ``data``."""

    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("administration_id", "resource", "code", name="uq_records_administration_resource_code"),
        Index("ix_records_listing", "administration_id", "resource", "modified_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    administration_id: Mapped[str] = mapped_column(
        ForeignKey("administrations.id", ondelete="CASCADE"), nullable=False
    )
    resource: Mapped[str] = mapped_column(String(32), nullable=False)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)
    modified_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False)


class AuditEvent(Base):
    """An append-only security event: logins, rejections, and changes to users, roles and seats."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    username: Mapped[str | None] = mapped_column(String(150), nullable=True)
    administration: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)


class AppendOnlyError(RuntimeError):
    """Code tried to change or delete an audit event through the ORM."""


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _reject_audit_event_change(_mapper: Any, _connection: Any, target: AuditEvent) -> None:
    # Only storage.audit.purge_older_than deletes audit rows, with a bulk DELETE that skips this hook.
    raise AppendOnlyError(f"audit event {target.id} cannot be changed or deleted: the audit trail is append-only")


__all__ = [
    "Administration",
    "AppendOnlyError",
    "AuditEvent",
    "Base",
    "Environment",
    "Record",
    "RevokedToken",
    "Role",
    "RoleAssignment",
    "RolePermission",
    "SigningKey",
    "ThrottleCounter",
    "User",
    "UtcDateTime",
    "utcnow",
]
