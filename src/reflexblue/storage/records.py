"""Resource records: one generic table serves all fourteen resources, scoped by administration.

Every query filters on the administration's id as well as the record id, so an id from another
administration behaves exactly like an id that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reflexblue.domain.errors import ConflictError, ValidationError
from reflexblue.storage.models import Record, utcnow
from reflexblue.storage.repository import new_id

_RECORD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidCursor(ValidationError):
    def __init__(self) -> None:
        super().__init__("invalid cursor: pass the next_cursor value of the previous page unchanged")


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Record]
    next_cursor: str | None


def encode_cursor(record: Record) -> str:
    raw = json.dumps([record.modified_at.isoformat(), record.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    if len(cursor) > 200:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        modified_at_text, record_id = json.loads(raw)
        modified_at = dt.datetime.fromisoformat(modified_at_text)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor() from None
    if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id) or modified_at.tzinfo is None:
        raise InvalidCursor()
    try:
        return modified_at.astimezone(dt.UTC), record_id
    except OverflowError:
        raise InvalidCursor() from None


def list_records(
    session: Session,
    administration_id: str,
    resource: str,
    *,
    limit: int,
    cursor: str | None,
    modified_since: dt.datetime | None,
) -> Page:
    """Return one page of records, oldest modification first, so a client can sync incrementally."""
    statement = select(Record).where(Record.administration_id == administration_id, Record.resource == resource)
    if modified_since is not None:
        statement = statement.where(Record.modified_at >= modified_since)
    if cursor:
        after_modified, after_id = decode_cursor(cursor)
        statement = statement.where(
            or_(Record.modified_at > after_modified, and_(Record.modified_at == after_modified, Record.id > after_id))
        )
    rows = list(session.scalars(statement.order_by(Record.modified_at, Record.id).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return Page(rows[:limit], next_cursor)


def get_record(session: Session, administration_id: str, resource: str, record_id: str) -> Record | None:
    """Return the record, or None when the id does not exist in this administration's resource."""
    if not _RECORD_ID.fullmatch(record_id):
        return None  # not an id this server issues (record ids are UUIDs), so it cannot exist
    return session.scalars(
        select(Record).where(
            Record.id == record_id, Record.administration_id == administration_id, Record.resource == resource
        )
    ).one_or_none()


def _duplicate(resource: str, code: str) -> ConflictError:
    return ConflictError(
        f"a record with this code already exists in {resource} of this administration: choose another code, "
        "or update the existing record"
    )


def _code_taken(session: Session, administration_id: str, resource: str, code: str, except_id: str | None) -> bool:
    statement = select(Record.id).where(
        Record.administration_id == administration_id, Record.resource == resource, Record.code == code
    )
    if except_id is not None:
        statement = statement.where(Record.id != except_id)
    return session.scalar(statement) is not None


def create_record(
    session: Session, administration_id: str, resource: str, code: str, data: dict[str, Any]
) -> Record:
    if _code_taken(session, administration_id, resource, code, None):
        raise _duplicate(resource, code)
    now = utcnow()
    record = Record(
        id=new_id(), administration_id=administration_id, resource=resource, code=code,
        data=data, created_at=now, modified_at=now,
    )
    session.add(record)
    try:
        session.flush()
    except IntegrityError:
        raise _duplicate(resource, code) from None
    return record


def update_record(session: Session, record: Record, code: str, data: dict[str, Any]) -> Record:
    """Store new content for an existing record (PUT and PATCH both end here)."""
    if code != record.code and _code_taken(session, record.administration_id, record.resource, code, record.id):
        raise _duplicate(record.resource, code)
    record.code = code
    record.data = data
    record.modified_at = max(utcnow(), record.modified_at + dt.timedelta(microseconds=1))
    try:
        session.flush()
    except IntegrityError:
        raise _duplicate(record.resource, code) from None
    return record


def delete_record(session: Session, record: Record) -> None:
    session.delete(record)
    session.flush()
