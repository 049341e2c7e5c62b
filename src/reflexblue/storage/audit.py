"""Reading and purging the audit trail.

The application only appends to ``audit_events`` (through :func:`reflexblue.storage.repository.audit`).
:func:`purge_older_than` is the one function that deletes rows, for the retention period set by
``REFLEXBLUE_AUDIT_RETENTION_DAYS``, and no code updates a row.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from reflexblue.domain.errors import ValidationError
from reflexblue.storage.models import AuditEvent
from reflexblue.storage.repository import audit

DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000


def _require_aware(value: dt.datetime | None, name: str) -> None:
    if value is not None and value.tzinfo is None:
        raise ValidationError(f"invalid {name} {value.isoformat()!r}: give a timezone-aware time, e.g. in UTC")


def list_events(
    session: Session,
    *,
    username: str | None = None,
    administration: str | None = None,
    event: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[AuditEvent]:
    """Return the newest ``limit`` audit events that match every given filter, newest first.

    ``username`` matches regardless of case. ``event`` matches the event name and the names below
    it: ``login`` and ``login.`` match ``login.failed`` and ``login.succeeded``, but not
    ``logins``. A trailing ``*`` matches any continuation (``log*``). ``since`` and ``until``
    are inclusive bounds and must be timezone-aware.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"invalid limit {limit!r}: use a whole number from 1 to {MAX_LIMIT}")
    _require_aware(since, "since")
    _require_aware(until, "until")
    statement = select(AuditEvent)
    if username is not None:
        # NOTE: SQLite's lower() folds only ASCII letters, so on SQLite a username with other
        # letters matches only in the case it was stored in. PostgreSQL folds every letter.
        wanted = unicodedata.normalize("NFKC", username).strip().lower()
        statement = statement.where(func.lower(AuditEvent.username) == wanted)
    if administration is not None:
        statement = statement.where(AuditEvent.administration == administration)
    if event is not None:
        statement = statement.where(_event_filter(event))
    if since is not None:
        statement = statement.where(AuditEvent.at >= since)
    if until is not None:
        statement = statement.where(AuditEvent.at <= until)
    statement = statement.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    return list(session.scalars(statement))


def _event_filter(pattern: str) -> ColumnElement[bool]:
    pattern = pattern.strip()
    if not pattern or pattern in ("*", "."):
        raise ValidationError(f"invalid event filter {pattern!r}: give an event name or prefix, e.g. login.")
    if pattern.endswith("*"):
        return AuditEvent.event.startswith(pattern[:-1], autoescape=True)
    name = pattern.rstrip(".")
    return (AuditEvent.event == name) | AuditEvent.event.startswith(name + ".", autoescape=True)


def purge_older_than(session: Session, cutoff: dt.datetime) -> int:
    """Delete the audit events recorded before ``cutoff`` and return how many were deleted."""
    _require_aware(cutoff, "cutoff")
    result = session.execute(delete(AuditEvent).where(AuditEvent.at < cutoff))
    return int(result.rowcount or 0)


def purge_and_audit(session: Session, cutoff: dt.datetime, *, actor: str) -> int:
    """Purge the events recorded before ``cutoff`` and, when any were deleted, append an ``audit.purged`` event."""
    deleted = purge_older_than(session, cutoff)
    if deleted:
        audit(session, "audit.purged", actor,
              detail={"cutoff": cutoff.astimezone(dt.UTC).isoformat(), "deleted": deleted})
    return deleted


def retention_cutoff(retention_days: int, now: dt.datetime | None = None) -> dt.datetime | None:
    """Return the time before which events fall outside ``retention_days``, or None when 0 keeps them forever."""
    if retention_days <= 0:
        return None
    return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
