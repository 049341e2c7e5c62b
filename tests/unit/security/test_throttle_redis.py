"""Login throttling with counters in a real Redis: the same policy as the database store, atomically."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from reflexblue.redis_client import RedisHealth, connect
from reflexblue.security.throttle import (
    PENDING_TIMEOUT,
    DatabaseThrottleStore,
    FallbackThrottleStore,
    LoginThrottle,
    Policy,
    RedisThrottleStore,
    Verdict,
)
from reflexblue.storage.database import Database
from reflexblue.storage.models import ThrottleCounter

from ..conftest import REDIS_URL

T0 = 1_800_000_000.0
POLICY = Policy(limit=5, base_delay=30, max_delay=120, window=60)
#: A port where nothing listens on 127.0.0.1, so connecting is refused at once.
REFUSED_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = connect(REDIS_URL)
    yield connection
    connection.close()


@pytest.fixture
def redis_store(client: redis.Redis, redis_prefix: str) -> RedisThrottleStore:
    return RedisThrottleStore(client, redis_prefix)


class EventRecorder:
    """Collects what RedisHealth reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, _level: int, **fields: Any) -> None:
        self.events.append((name, fields))

    @property
    def names(self) -> list[str]:
        return [name for name, _fields in self.events]


# ------------------------------------------------------------------------------------------------
# The same policy as the database store

# Each operation is (name, seconds to advance first). "fail", "succeed" and "abort" settle a
# reservation the way a login does after a wrong password, a right one, or no check at all.
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve", "fail", "fail", "succeed", "abort", "reset"]),
        st.sampled_from([0.0, 0.4, 1.0, 29.5, 30.0, 31.0, 60.0, 61.0, 120.0, 200.0]),
    ),
    min_size=1,
    max_size=40,
)


def apply(store: Any, operation: str, key: str, now: float) -> Verdict | None:
    if operation == "reserve":
        return store.reserve(key, POLICY, now)
    if operation == "reset":
        store.reset(key)
    else:
        store.settle(key, POLICY, now, failed=operation == "fail", reset=operation == "succeed")
    return None


def run_both(operations: list[tuple[str, float]], database: Database, redis_store: RedisThrottleStore) -> None:
    """Apply ``operations`` to both stores and compare every verdict."""
    database_store = DatabaseThrottleStore(database)
    key = f"user:{secrets.token_hex(8)}"
    now = T0
    for step, (operation, advance) in enumerate(operations):
        now += advance
        expected = apply(database_store, operation, key, now)
        actual = apply(redis_store, operation, key, now)
        assert actual == expected, f"step {step}: {operations[: step + 1]}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_redis_store_matches_database_store(
    operations: list[tuple[str, float]], sqlite_database: Database, redis_store: RedisThrottleStore
) -> None:
    run_both(operations, sqlite_database, redis_store)


def failed_logins(count: int, advance: float = 0.0) -> list[tuple[str, float]]:
    """Return ``count`` reserve-and-fail pairs, the first one after ``advance`` seconds."""
    operations: list[tuple[str, float]] = []
    for index in range(count):
        operations += [("reserve", advance if index == 0 else 0.0), ("fail", 0.0)]
    return operations


BOUNDARY_CASES = {
    # Four failures, then exactly one window later: the failures are not yet forgotten.
    "window boundary": failed_logins(4) + failed_logins(1, 60.0) + [("reserve", 0.0)],
    "just past window": failed_logins(4) + failed_logins(1, 60.5) + [("reserve", 0.0)],
    # A block of 30 s ends exactly at blocked_until.
    "block end boundary": failed_logins(5) + [("reserve", 29.9), ("reserve", 0.1), ("reserve", 0.0)],
    "success during block": failed_logins(5) + [("succeed", 0.0), ("reserve", 0.0)],
    "abort keeps failures": failed_logins(4) + [("reserve", 0.0), ("abort", 0.0)] + failed_logins(1) +
                            [("reserve", 0.0)],
    "slots taken in flight": [("reserve", 0.0)] * 6 + [("abort", 0.0), ("reserve", 0.0)],
    "stale reservations dropped": [("reserve", 0.0)] * 5 + [("reserve", 31.0)],
    "capped at max delay": failed_logins(5) + [("reserve", 121.0), ("fail", 0.0)] * 4 + [("reserve", 119.0)],
    "reset during block": failed_logins(6) + [("reset", 0.0), ("reserve", 0.0)],
}


@pytest.mark.parametrize("operations", list(BOUNDARY_CASES.values()), ids=list(BOUNDARY_CASES))
def test_redis_store_matches_at_boundaries(
    operations: list[tuple[str, float]], sqlite_database: Database, redis_store: RedisThrottleStore
) -> None:
    run_both(operations, sqlite_database, redis_store)


def fail_times(store: RedisThrottleStore, key: str, count: int, now: float) -> None:
    for _ in range(count):
        assert store.reserve(key, POLICY, now).allowed
        store.settle(key, POLICY, now, failed=True, reset=False)


def test_redis_store_blocks_at_limit(redis_store: RedisThrottleStore) -> None:
    fail_times(redis_store, "user:a", 5, T0)

    verdict = redis_store.reserve("user:a", POLICY, T0)

    assert not verdict.allowed
    assert verdict.retry_after == 30


def test_redis_store_block_doubles(redis_store: RedisThrottleStore) -> None:
    fail_times(redis_store, "user:a", 5, T0)
    fail_times(redis_store, "user:a", 1, T0 + 30)

    verdict = redis_store.reserve("user:a", POLICY, T0 + 31)

    assert not verdict.allowed
    assert verdict.retry_after == 59


def test_redis_store_key_expiry(redis_store: RedisThrottleStore, client: redis.Redis) -> None:
    redis_store.reserve("user:a", POLICY, T0)

    ttl_ms = client.pttl(redis_store.redis_key("user:a"))

    lifetime_ms = (POLICY.window + POLICY.max_delay + PENDING_TIMEOUT) * 1000
    assert lifetime_ms - 2000 < ttl_ms <= lifetime_ms


def test_redis_store_settle_refreshes_expiry(redis_store: RedisThrottleStore, client: redis.Redis) -> None:
    redis_store.reserve("user:a", POLICY, T0)
    client.pexpire(redis_store.redis_key("user:a"), 10_000)

    redis_store.settle("user:a", POLICY, T0, failed=True, reset=False)

    assert client.pttl(redis_store.redis_key("user:a")) > 10_000


def test_redis_store_parallel_reservations_capped(redis_store: RedisThrottleStore) -> None:
    barrier = threading.Barrier(20)
    verdicts: list[Verdict] = []
    lock = threading.Lock()

    def reserve() -> None:
        barrier.wait()
        verdict = redis_store.reserve("user:parallel", POLICY, T0)
        with lock:
            verdicts.append(verdict)

    threads = [threading.Thread(target=reserve) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(verdicts) == 20
    assert [verdict.allowed for verdict in verdicts].count(True) == POLICY.limit
    assert all(verdict.busy for verdict in verdicts if not verdict.allowed)


def test_redis_store_prefix_isolates_environments(client: redis.Redis, redis_prefix: str) -> None:
    first = RedisThrottleStore(client, redis_prefix + "one:")
    second = RedisThrottleStore(client, redis_prefix + "two:")
    fail_times(first, "user:a", 5, T0)

    assert not first.reserve("user:a", POLICY, T0).allowed
    assert second.reserve("user:a", POLICY, T0).allowed


# ------------------------------------------------------------------------------------------------
# LoginThrottle names the blocked key


def fail_logins(throttle: LoginThrottle, usernames: list[str], address: str) -> None:
    for username in usernames:
        assert throttle.attempt(username, address, now=T0).allowed
        throttle.finish(username, address, outcome="failed", now=T0)


def test_verdict_names_blocked_user(redis_store: RedisThrottleStore) -> None:
    throttle = LoginThrottle(redis_store, POLICY, Policy(limit=50, base_delay=30, max_delay=120, window=60))
    fail_logins(throttle, ["shop-api"] * 5, "192.0.2.10")

    verdict = throttle.attempt("shop-api", "192.0.2.10", now=T0)

    assert not verdict.allowed
    assert verdict.kind == "user"


def test_verdict_names_blocked_address(redis_store: RedisThrottleStore) -> None:
    throttle = LoginThrottle(redis_store, Policy(limit=50, base_delay=30, max_delay=120, window=60), POLICY)
    fail_logins(throttle, [f"user-{index}" for index in range(5)], "192.0.2.10")

    verdict = throttle.attempt("another", "192.0.2.10", now=T0)

    assert not verdict.allowed
    assert verdict.kind == "address"


# ------------------------------------------------------------------------------------------------
# Falling back to the database while Redis is unreachable


def unreachable_store(prefix: str) -> RedisThrottleStore:
    return RedisThrottleStore(connect(REFUSED_REDIS_URL), prefix)


def fallback_store(database: Database, recorder: EventRecorder) -> FallbackThrottleStore:
    return FallbackThrottleStore(unreachable_store("x:"), DatabaseThrottleStore(database),
                                 RedisHealth(REFUSED_REDIS_URL, recorder))


def test_fallback_counts_in_database_when_redis_down(sqlite_database: Database) -> None:
    store = fallback_store(sqlite_database, EventRecorder())
    for _ in range(5):
        assert store.reserve("user:a", POLICY, T0).allowed
        store.settle("user:a", POLICY, T0, failed=True, reset=False)

    sixth = store.reserve("user:a", POLICY, T0)

    assert not sixth.allowed
    with sqlite_database.read() as session:
        assert session.scalars(select(ThrottleCounter.failures).where(ThrottleCounter.key == "user:a")).one() == 5


def test_fallback_logs_one_event_per_outage(sqlite_database: Database) -> None:
    recorder = EventRecorder()
    store = fallback_store(sqlite_database, recorder)

    for _ in range(4):
        store.reserve("user:a", POLICY, T0)
        store.settle("user:a", POLICY, T0, failed=True, reset=False)
    store.reset("user:a")

    assert recorder.names == ["redis.unavailable"]
    assert recorder.events[0][1]["error"] == "ConnectionError"


def test_fallback_uses_redis_when_it_responds(
    sqlite_database: Database, redis_store: RedisThrottleStore, client: redis.Redis
) -> None:
    store = FallbackThrottleStore(redis_store, DatabaseThrottleStore(sqlite_database), RedisHealth(REDIS_URL))

    store.reserve("user:a", POLICY, T0)

    assert client.exists(redis_store.redis_key("user:a")) == 1
    with sqlite_database.read() as session:
        assert session.scalars(select(ThrottleCounter)).all() == []
