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
from dataclasses import dataclass, replace
from typing import Protocol

import redis

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from reflexblue.redis_client import REDIS_ERRORS, RedisHealth
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
    #: Which key rejected the attempt: "user" or "address"; empty when allowed.
    kind: str = ""


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
                return Verdict(False, min(policy.max_delay, max(1, math.ceil(row.blocked_until - now))))
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


# Both scripts keep the counter of one key in a hash with the fields of the database row. Times
# are the caller's Unix time, as in the database store. Floats are stored with %.17g so that they
# read back exactly.
_ATTEMPT_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local base_delay = tonumber(ARGV[3])
local max_delay = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'failures', 'blocked_until', 'last_failure_at')
local failures = tonumber(state[1]) or 0
local blocked_until = tonumber(state[2]) or 0
local last_failure_at = tonumber(state[3]) or 0
if now - last_failure_at > window and now >= blocked_until then
  failures = 0
end
if now < blocked_until then
  return {0, math.max(1, math.ceil(blocked_until - now))}
end
failures = failures + 1
last_failure_at = now
if failures >= limit then
  blocked_until = now + math.min(base_delay * 2 ^ math.min(failures - limit, 30), max_delay)
end
redis.call('HSET', KEYS[1], 'failures', failures,
           'blocked_until', string.format('%.17g', blocked_until),
           'last_failure_at', string.format('%.17g', last_failure_at))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, 0}
"""

_FORGIVE_SCRIPT = """
local state = redis.call('HMGET', KEYS[1], 'failures')
if not state[1] then
  return 0
end
local failures = math.max(0, tonumber(state[1]) - 1)
redis.call('HSET', KEYS[1], 'failures', failures)
if failures < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'blocked_until', '0')
end
return 1
"""


class RedisThrottleStore:
    """Counters in Redis, with the policy of :class:`DatabaseThrottleStore`, applied atomically by Lua scripts.

    Each attempt and each take-back is one script, so Redis runs the read-decide-write step of
    a key without interleaving. A key expires ``window + max_delay`` seconds after its last
    counted attempt: by then its failures are forgotten and any block has ended, so the expired
    key behaves exactly like the stored one would. Redis errors propagate to the caller.
    """

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}throttle:"
        self._attempt = client.register_script(_ATTEMPT_SCRIPT)
        self._forgive = client.register_script(_FORGIVE_SCRIPT)

    def redis_key(self, key: str) -> str:
        """Return the Redis key that stores the counter of throttle ``key``."""
        return self._prefix + key

    def attempt(self, key: str, policy: Policy, now: float) -> Verdict:
        expiry_ms = math.ceil((policy.window + policy.max_delay) * 1000)
        allowed, retry_after = self._attempt(
            keys=[self.redis_key(key)],
            args=[repr(float(now)), policy.limit, policy.base_delay, policy.max_delay, policy.window, expiry_ms],
        )
        return Verdict(bool(allowed), int(retry_after))

    def forgive(self, key: str, policy: Policy) -> None:
        """Take back one counted attempt that turned out to be a success."""
        self._forgive(keys=[self.redis_key(key)], args=[policy.limit])

    def reset(self, key: str) -> None:
        # One DEL is atomic on its own, so this operation needs no script.
        self._client.delete(self.redis_key(key))


class FallbackThrottleStore:
    """Redis counters while Redis responds, the database's while it does not.

    NOTE: counts made in one store are not seen by the other, so across a Redis outage a key
    can get up to the policy's limit of extra attempts before it is blocked.
    """

    def __init__(self, primary: RedisThrottleStore, fallback: DatabaseThrottleStore, health: RedisHealth) -> None:
        self._primary = primary
        self._fallback = fallback
        self._health = health

    def attempt(self, key: str, policy: Policy, now: float) -> Verdict:
        if self._health.available:
            try:
                verdict = self._primary.attempt(key, policy, now)
            except REDIS_ERRORS as error:
                self._health.failed("throttle attempt", error)
            else:
                self._health.succeeded()
                return verdict
        return self._fallback.attempt(key, policy, now)

    def forgive(self, key: str, policy: Policy) -> None:
        if self._health.available:
            try:
                self._primary.forgive(key, policy)
            except REDIS_ERRORS as error:
                self._health.failed("throttle forgive", error)
            else:
                self._health.succeeded()
                return
        self._fallback.forgive(key, policy)

    def reset(self, key: str) -> None:
        if self._health.available:
            try:
                self._primary.reset(key)
            except REDIS_ERRORS as error:
                self._health.failed("throttle reset", error)
            else:
                self._health.succeeded()
                return
        self._fallback.reset(key)


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
            return replace(by_address, kind="address")
        by_user = self._store.attempt(_storage_key("user", username_key), self._user_policy, current)
        return by_user if by_user.allowed else replace(by_user, kind="user")

    def succeeded(self, username_key: str, address: str) -> None:
        """Clear the username's failures and take back the address's count for this attempt."""
        self._store.reset(_storage_key("user", username_key))
        self._store.forgive(_storage_key("address", address), self._address_policy)
