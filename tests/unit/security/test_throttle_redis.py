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
    DatabaseThrottleStore,
    FallbackThrottleStore,
    LoginThrottle,
    Policy,
    RedisThrottleStore,
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


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["attempt", "attempt", "attempt", "forgive", "reset"]),
        st.sampled_from([0.0, 0.4, 1.0, 29.5, 30.0, 31.0, 60.0, 61.0, 120.0, 200.0]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_redis_store_matches_database_store(
    operations: list[tuple[str, float]], sqlite_database: Database, redis_store: RedisThrottleStore
) -> None:
    run_both(operations, sqlite_database, redis_store)


def run_both(operations: list[tuple[str, float]], database: Database, redis_store: RedisThrottleStore) -> None:
    """Apply ``operations`` (name, seconds to advance first) to both stores and compare every verdict."""
    database_store = DatabaseThrottleStore(database)
    key = f"user:{secrets.token_hex(8)}"
    now = T0
    for step, (operation, advance) in enumerate(operations):
        now += advance
        if operation == "attempt":
            expected = database_store.attempt(key, POLICY, now)
            actual = redis_store.attempt(key, POLICY, now)
            assert actual == expected, f"step {step}: {operations[: step + 1]}"
        elif operation == "forgive":
            database_store.forgive(key, POLICY)
            redis_store.forgive(key, POLICY)
        else:
            database_store.reset(key)
            redis_store.reset(key)


BOUNDARY_CASES = {
    # Four failures, then exactly one window later: the count is not yet forgotten.
    "window boundary": [("attempt", 0.0)] * 4 + [("attempt", 60.0), ("attempt", 0.0)],
    "just past window": [("attempt", 0.0)] * 4 + [("attempt", 60.5), ("attempt", 0.0)],
    # A block of 30 s ends exactly at blocked_until.
    "block end boundary": [("attempt", 0.0)] * 5 + [("attempt", 29.9), ("attempt", 0.1), ("attempt", 0.0)],
    "forgive during block": [("attempt", 0.0)] * 5 + [("forgive", 0.0), ("attempt", 0.0), ("attempt", 0.0)],
    "forgive after block started twice": [("attempt", 0.0)] * 5 + [("attempt", 30.0), ("forgive", 0.0),
                                                                   ("attempt", 0.0)],
    "capped at max delay": [("attempt", 0.0)] * 5 + [("attempt", 121.0)] * 4 + [("attempt", 119.0)],
    "reset during block": [("attempt", 0.0)] * 6 + [("reset", 0.0), ("attempt", 0.0)],
}


@pytest.mark.parametrize("operations", list(BOUNDARY_CASES.values()), ids=list(BOUNDARY_CASES))
def test_redis_store_matches_at_boundaries(
    operations: list[tuple[str, float]], sqlite_database: Database, redis_store: RedisThrottleStore
) -> None:
    run_both(operations, sqlite_database, redis_store)


def test_redis_store_blocks_at_limit(redis_store: RedisThrottleStore) -> None:
    verdicts = [redis_store.attempt("user:a", POLICY, T0) for _ in range(6)]

    assert [verdict.allowed for verdict in verdicts] == [True] * 5 + [False]
    assert verdicts[-1].retry_after == 30


def test_redis_store_block_doubles(redis_store: RedisThrottleStore) -> None:
    for _ in range(5):
        redis_store.attempt("user:a", POLICY, T0)

    redis_store.attempt("user:a", POLICY, T0 + 30)
    verdict = redis_store.attempt("user:a", POLICY, T0 + 31)

    assert not verdict.allowed
    assert verdict.retry_after == 59


def test_redis_store_key_expires_after_window_and_max_delay(
    redis_store: RedisThrottleStore, client: redis.Redis
) -> None:
    redis_store.attempt("user:a", POLICY, T0)

    ttl_ms = client.pttl(redis_store.redis_key("user:a"))

    assert (POLICY.window + POLICY.max_delay) * 1000 - 2000 < ttl_ms <= (POLICY.window + POLICY.max_delay) * 1000


def test_redis_store_forgive_missing_key_creates_nothing(
    redis_store: RedisThrottleStore, client: redis.Redis
) -> None:
    redis_store.forgive("user:never-seen", POLICY)

    assert client.exists(redis_store.redis_key("user:never-seen")) == 0


def test_redis_store_forgive_keeps_expiry(redis_store: RedisThrottleStore, client: redis.Redis) -> None:
    redis_store.attempt("user:a", POLICY, T0)

    redis_store.forgive("user:a", POLICY)

    assert client.pttl(redis_store.redis_key("user:a")) > 0


def test_redis_store_parallel_attempts_capped(redis_store: RedisThrottleStore) -> None:
    barrier = threading.Barrier(20)
    allowed: list[bool] = []
    lock = threading.Lock()

    def guess() -> None:
        barrier.wait()
        verdict = redis_store.attempt("user:parallel", POLICY, T0)
        with lock:
            allowed.append(verdict.allowed)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(allowed) == 20
    assert allowed.count(True) == POLICY.limit


def test_redis_store_prefix_isolates_environments(client: redis.Redis, redis_prefix: str) -> None:
    first = RedisThrottleStore(client, redis_prefix + "one:")
    second = RedisThrottleStore(client, redis_prefix + "two:")
    for _ in range(5):
        first.attempt("user:a", POLICY, T0)

    assert not first.attempt("user:a", POLICY, T0).allowed
    assert second.attempt("user:a", POLICY, T0).allowed


# ------------------------------------------------------------------------------------------------
# LoginThrottle names the blocked key


def test_verdict_names_blocked_user(redis_store: RedisThrottleStore) -> None:
    throttle = LoginThrottle(redis_store, POLICY, Policy(limit=50, base_delay=30, max_delay=120, window=60))
    for _ in range(5):
        throttle.attempt("shop-api", "192.0.2.10", now=T0)

    verdict = throttle.attempt("shop-api", "192.0.2.10", now=T0)

    assert verdict.kind == "user"


def test_verdict_names_blocked_address(redis_store: RedisThrottleStore) -> None:
    throttle = LoginThrottle(redis_store, Policy(limit=50, base_delay=30, max_delay=120, window=60), POLICY)
    for index in range(5):
        throttle.attempt(f"user-{index}", "192.0.2.10", now=T0)

    verdict = throttle.attempt("another", "192.0.2.10", now=T0)

    assert not verdict.allowed
    assert verdict.kind == "address"


# ------------------------------------------------------------------------------------------------
# Falling back to the database while Redis is unreachable


def unreachable_store(prefix: str) -> RedisThrottleStore:
    return RedisThrottleStore(connect(REFUSED_REDIS_URL), prefix)


def test_fallback_counts_in_database_when_redis_down(sqlite_database: Database) -> None:
    recorder = EventRecorder()
    store = FallbackThrottleStore(unreachable_store("x:"), DatabaseThrottleStore(sqlite_database),
                                  RedisHealth(REFUSED_REDIS_URL, recorder))

    verdicts = [store.attempt("user:a", POLICY, T0) for _ in range(6)]

    assert [verdict.allowed for verdict in verdicts] == [True] * 5 + [False]
    with sqlite_database.read() as session:
        assert session.scalars(select(ThrottleCounter.failures).where(ThrottleCounter.key == "user:a")).one() == 5


def test_fallback_logs_one_event_per_outage(sqlite_database: Database) -> None:
    recorder = EventRecorder()
    store = FallbackThrottleStore(unreachable_store("x:"), DatabaseThrottleStore(sqlite_database),
                                  RedisHealth(REFUSED_REDIS_URL, recorder))

    for _ in range(4):
        store.attempt("user:a", POLICY, T0)
    store.forgive("user:a", POLICY)
    store.reset("user:a")

    assert recorder.names == ["redis.unavailable"]
    assert recorder.events[0][1]["error"] == "ConnectionError"


def test_fallback_uses_redis_when_it_answers(
    sqlite_database: Database, redis_store: RedisThrottleStore, client: redis.Redis
) -> None:
    store = FallbackThrottleStore(redis_store, DatabaseThrottleStore(sqlite_database), RedisHealth(REDIS_URL))

    store.attempt("user:a", POLICY, T0)

    assert client.exists(redis_store.redis_key("user:a")) == 1
    with sqlite_database.read() as session:
        assert session.scalars(select(ThrottleCounter)).all() == []
