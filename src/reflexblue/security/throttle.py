"""Login throttling: consecutive failures per username and per client address, with back-off.

Each attempt is counted *before* the password is checked, in one atomic step, so parallel
attempts cannot get more guesses than the limit allows. The first ``limit`` attempts of a key
pass; the attempt that reaches the limit also starts a block of ``base_delay`` seconds, and
every further failure doubles it, up to ``max_delay``. A block always ends, so the real user is
never locked out for good; a successful login resets the username's count. A key whose last
failure is older than ``window`` seconds starts again from zero.

Unknown usernames are counted exactly like existing ones, so throttling tells nothing about
which accounts exist.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from reflexblue.storage.database import Database
from reflexblue.storage.models import ThrottleCounter


@dataclass(frozen=True, slots=True)
class Policy:
    limit: int
    base_delay: int
    max_delay: int
    window: int

    def delay(self, failures: int) -> float:
        """Return the block, in seconds, that starts once ``failures`` attempts are counted."""
        if failures < self.limit:
            return 0.0
        return float(min(self.base_delay * 2 ** min(failures - self.limit, 30), self.max_delay))


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0


class ThrottleStore(Protocol):
    def attempt(self, key: str, policy: Policy, now: float) -> Verdict: ...

    def forgive(self, key: str, policy: Policy) -> None: ...

    def reset(self, key: str) -> None: ...


class DatabaseThrottleStore:
    """Counters in the database: shared by every worker and instance, and kept across restarts.

    The counter row is locked while it is read and written (``FOR UPDATE`` on PostgreSQL, the
    write lock on SQLite), which makes the count-then-decide step atomic.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    def attempt(self, key: str, policy: Policy, now: float) -> Verdict:
        with self._database.write() as session:
            row = _locked_row(session, key)
            if now - row.last_failure_at > policy.window and now >= row.blocked_until:
                row.failures = 0
            if now < row.blocked_until:
                return Verdict(False, max(1, math.ceil(row.blocked_until - now)))
            row.failures += 1
            row.last_failure_at = now
            delay = policy.delay(row.failures)
            if delay:
                row.blocked_until = now + delay
            return Verdict(True)

    def forgive(self, key: str, policy: Policy) -> None:
        """Take back one counted attempt that turned out to be a success."""
        with self._database.write() as session:
            row = _locked_row(session, key)
            row.failures = max(0, row.failures - 1)
            if row.failures < policy.limit:
                row.blocked_until = 0.0

    def reset(self, key: str) -> None:
        with self._database.write() as session:
            session.execute(delete(ThrottleCounter).where(ThrottleCounter.key == key))


def _locked_row(session: Session, key: str) -> ThrottleCounter:
    """Return the counter row of ``key``, created if missing, locked until the transaction ends."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(ThrottleCounter)
        .values(key=key, failures=0, blocked_until=0.0, last_failure_at=0.0)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return session.scalars(select(ThrottleCounter).where(ThrottleCounter.key == key).with_for_update()).one()


def _storage_key(kind: str, value: str) -> str:
    """Return the stored key: a digest, so the table holds neither usernames nor addresses in clear."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


class LoginThrottle:
    """Applies the username and address policies to one login attempt."""

    def __init__(self, store: ThrottleStore, user_policy: Policy, address_policy: Policy) -> None:
        self._store = store
        self._user_policy = user_policy
        self._address_policy = address_policy

    def attempt(self, username_key: str, address: str, now: float | None = None) -> Verdict:
        """Count one attempt for both keys; rejected when either is blocked."""
        current = time.time() if now is None else now
        by_address = self._store.attempt(_storage_key("address", address), self._address_policy, current)
        if not by_address.allowed:
            return by_address
        return self._store.attempt(_storage_key("user", username_key), self._user_policy, current)

    def succeeded(self, username_key: str, address: str) -> None:
        """Clear the username's failures and take back the address's count for this attempt."""
        self._store.reset(_storage_key("user", username_key))
        self._store.forgive(_storage_key("address", address), self._address_policy)
