"""Login throttling: consecutive failures per username and per client address, with back-off.

Each attempt *reserves* a slot before the password is checked, in one atomic step, and settles
it afterwards as a failure or a success. Slots are limited to the failures a key has left before
it is blocked, so parallel attempts can never check more passwords than the limit allows. An
attempt that finds every slot taken by attempts still in flight waits briefly for them instead
of being rejected, so correct logins sent in parallel are never throttled while fewer than
``limit`` failures are recorded.

The failure that reaches the limit starts a block of ``base_delay`` seconds. After a block ends,
one attempt is allowed, and each further failure doubles the block, up to ``max_delay``. A
block always ends, so the real user is never locked out for good. A successful login resets the
username's failures, but only releases the address's slot without erasing its failures. A
key starts again from zero once ``window`` seconds have passed since its last failure and since
its last block ended, so waiting out the longest block does not reset the back-off.

Unknown usernames are counted exactly like existing ones, so throttling tells nothing about
which accounts exist.
"""

from __future__ import annotations

import hashlib
import math
import random
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

#: Reservations older than this many seconds are dropped: their process died before settling them.
PENDING_TIMEOUT = 30.0
#: How long an attempt waits for in-flight attempts of the same key before it is rejected.
WAIT_FOR_SLOT = 5.0


def wait_delays() -> list[float]:
    """Return the pauses between tries of a busy attempt: short at first, then longer, with jitter.

    They add up to about WAIT_FOR_SLOT seconds; the jitter keeps waiting attempts from retrying in step.
    """
    delays: list[float] = []
    delay = 0.02
    while sum(delays) < WAIT_FOR_SLOT:
        delays.append(delay * random.uniform(0.75, 1.25))
        delay = min(delay * 1.5, 0.25)
    return delays


@dataclass(frozen=True, slots=True)
class Policy:
    limit: int
    base_delay: int
    max_delay: int
    window: int

    def delay(self, failures: int) -> float:
        """Return the block, in seconds, that starts once ``failures`` failures are recorded."""
        if failures < self.limit:
            return 0.0
        return float(min(self.base_delay * 2 ** min(failures - self.limit, 30), self.max_delay))

    def slots(self, failures: int) -> int:
        """Return how many password checks may be in flight at once for a key that is not blocked."""
        return self.limit - failures if failures < self.limit else 1


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    #: Which key rejected the attempt: "user" or "address"; empty when allowed.
    kind: str = ""
    #: Rejected only because attempts in flight hold every slot: worth waiting for them.
    busy: bool = False


class ThrottleStore(Protocol):
    def reserve(self, key: str, policy: Policy, now: float) -> Verdict: ...

    def settle(self, key: str, policy: Policy, now: float, *, failed: bool, reset: bool) -> None: ...

    def reset(self, key: str) -> None: ...


class DatabaseThrottleStore:
    """Counters in the database: shared by every worker and instance, and kept across restarts.

    The counter row is locked while it is read and written (``FOR UPDATE`` on PostgreSQL, the
    write lock on SQLite), which makes the count-then-decide step atomic.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    def reserve(self, key: str, policy: Policy, now: float) -> Verdict:
        """Take a slot for one password check; a rejection shows whether the key is blocked or only busy."""
        with self._database.write() as session:
            row = _locked_row(session, key)
            if now - max(row.last_failure_at, row.blocked_until) > policy.window:
                row.failures = 0
            if now - row.pending_at > PENDING_TIMEOUT:
                row.pending = 0
            if now < row.blocked_until:
                return Verdict(False, min(policy.max_delay, max(1, math.ceil(row.blocked_until - now))))
            if row.pending >= policy.slots(row.failures):
                return Verdict(False, 1, busy=True)
            row.pending += 1
            row.pending_at = now
            return Verdict(True)

    def settle(self, key: str, policy: Policy, now: float, *, failed: bool, reset: bool) -> None:
        """Give back a slot; count a failure (and block from the limit on), or reset after a success."""
        with self._database.write() as session:
            row = _locked_row(session, key)
            row.pending = max(0, row.pending - 1)
            if failed:
                row.failures += 1
                row.last_failure_at = now
                delay = policy.delay(row.failures)
                if delay:
                    row.blocked_until = now + delay
            elif reset:
                row.failures = 0
                row.blocked_until = 0.0

    def reset(self, key: str) -> None:
        with self._database.write() as session:
            session.execute(delete(ThrottleCounter).where(ThrottleCounter.key == key))


# Both scripts keep the counter of one key in a hash with the fields of the database row. Times
# are the caller's Unix time, as in the database store. Floats are stored with %.17g so that they
# read back exactly.
_RESERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local max_delay = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local pending_timeout = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'failures', 'blocked_until', 'last_failure_at', 'pending', 'pending_at')
local failures = tonumber(state[1]) or 0
local blocked_until = tonumber(state[2]) or 0
local last_failure_at = tonumber(state[3]) or 0
local pending = tonumber(state[4]) or 0
local pending_at = tonumber(state[5]) or 0
if now - math.max(last_failure_at, blocked_until) > window then
  failures = 0
end
if now - pending_at > pending_timeout then
  pending = 0
end
if now < blocked_until then
  return {0, math.min(max_delay, math.max(1, math.ceil(blocked_until - now))), 0}
end
local slots = 1
if failures < limit then
  slots = limit - failures
end
if pending >= slots then
  return {0, 1, 1}
end
redis.call('HSET', KEYS[1], 'failures', failures, 'pending', pending + 1,
           'pending_at', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, 0, 0}
"""

_SETTLE_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local base_delay = tonumber(ARGV[3])
local max_delay = tonumber(ARGV[4])
local failed = ARGV[5] == '1'
local reset = ARGV[6] == '1'
local state = redis.call('HMGET', KEYS[1], 'failures', 'pending')
local failures = tonumber(state[1]) or 0
local pending = math.max(0, (tonumber(state[2]) or 0) - 1)
redis.call('HSET', KEYS[1], 'pending', pending)
if failed then
  failures = failures + 1
  redis.call('HSET', KEYS[1], 'failures', failures, 'last_failure_at', string.format('%.17g', now))
  if failures >= limit then
    local blocked_until = now + math.min(base_delay * 2 ^ math.min(failures - limit, 30), max_delay)
    redis.call('HSET', KEYS[1], 'blocked_until', string.format('%.17g', blocked_until))
  end
elseif reset then
  redis.call('HSET', KEYS[1], 'failures', 0, 'blocked_until', '0')
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
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
        self._reserve = client.register_script(_RESERVE_SCRIPT)
        self._settle = client.register_script(_SETTLE_SCRIPT)

    def redis_key(self, key: str) -> str:
        """Return the Redis key that stores the counter of throttle ``key``."""
        return self._prefix + key

    def reserve(self, key: str, policy: Policy, now: float) -> Verdict:
        allowed, retry_after, busy = self._reserve(
            keys=[self.redis_key(key)],
            args=[repr(float(now)), policy.limit, policy.max_delay, policy.window, PENDING_TIMEOUT, _expiry_ms(policy)],
        )
        return Verdict(bool(allowed), int(retry_after), busy=bool(busy))

    def settle(self, key: str, policy: Policy, now: float, *, failed: bool, reset: bool) -> None:
        self._settle(
            keys=[self.redis_key(key)],
            args=[repr(float(now)), policy.limit, policy.base_delay, policy.max_delay, int(failed), int(reset),
                  _expiry_ms(policy)],
        )

    def reset(self, key: str) -> None:
        # One DEL is atomic on its own, so this operation needs no script.
        self._client.delete(self.redis_key(key))


def _expiry_ms(policy: Policy) -> int:
    """Return how long a Redis counter lives after its last change: its failures and block are over by then."""
    return math.ceil((policy.window + policy.max_delay + PENDING_TIMEOUT) * 1000)


class FallbackThrottleStore:
    """Redis counters while Redis responds, the database's while it does not.

    NOTE: counts made in one store are not seen by the other, so across a Redis outage a key
    can get up to the policy's limit of extra attempts before it is blocked.
    """

    def __init__(self, primary: RedisThrottleStore, fallback: DatabaseThrottleStore, health: RedisHealth) -> None:
        self._primary = primary
        self._fallback = fallback
        self._health = health

    def reserve(self, key: str, policy: Policy, now: float) -> Verdict:
        if self._health.available:
            try:
                verdict = self._primary.reserve(key, policy, now)
            except REDIS_ERRORS as error:
                self._health.failed("throttle reserve", error)
            else:
                self._health.succeeded()
                return verdict
        return self._fallback.reserve(key, policy, now)

    def settle(self, key: str, policy: Policy, now: float, *, failed: bool, reset: bool) -> None:
        if self._health.available:
            try:
                self._primary.settle(key, policy, now, failed=failed, reset=reset)
            except REDIS_ERRORS as error:
                self._health.failed("throttle settle", error)
            else:
                self._health.succeeded()
                return
        self._fallback.settle(key, policy, now, failed=failed, reset=reset)

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
        .values(key=key, failures=0, blocked_until=0.0, last_failure_at=0.0, pending=0, pending_at=0.0)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return session.scalars(select(ThrottleCounter).where(ThrottleCounter.key == key).with_for_update()).one()


def _storage_key(kind: str, value: str) -> str:
    """Return the stored key: a digest, so the table contains neither usernames nor addresses in clear."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


class LoginThrottle:
    """Applies the username and address policies to one login attempt."""

    def __init__(self, store: ThrottleStore, user_policy: Policy, address_policy: Policy) -> None:
        self._store = store
        self._user_policy = user_policy
        self._address_policy = address_policy

    def attempt(self, username_key: str, address: str, now: float | None = None) -> Verdict:
        """Try once to reserve a password check for both keys; blocking (one or two store calls).

        A verdict with ``busy`` set means attempts in flight hold every slot: the caller should
        wait briefly and try again (see :func:`wait_delays`). An allowed attempt must be followed
        by exactly one :meth:`finish` call.
        """
        current = time.time() if now is None else now
        user_key = _storage_key("user", username_key)
        address_key = _storage_key("address", address)
        by_address = self._store.reserve(address_key, self._address_policy, current)
        if not by_address.allowed:
            return replace(by_address, kind="address")
        by_user = self._store.reserve(user_key, self._user_policy, current)
        if by_user.allowed:
            return by_user
        self._store.settle(address_key, self._address_policy, current, failed=False, reset=False)
        return replace(by_user, kind="user")

    def finish(self, username_key: str, address: str, *, outcome: str, now: float | None = None) -> None:
        """Settle an allowed attempt: ``outcome`` is "failed", "succeeded" or "aborted" (nothing checked)."""
        current = time.time() if now is None else now
        failed = outcome == "failed"
        self._store.settle(_storage_key("user", username_key), self._user_policy, current,
                           failed=failed, reset=outcome == "succeeded")
        self._store.settle(_storage_key("address", address), self._address_policy, current,
                           failed=failed, reset=False)
