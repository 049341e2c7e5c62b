"""Login throttling with counters in a real Redis: the same policy as the database store, atomically.

The parity tests play one sequence on a database store and on the store under test and expect
the same verdicts from both. The sequences cover reservations, settled failures, successes,
aborted checks, and reservations dropped after PENDING_TIMEOUT.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from reflexblue.bootstrap import prepare
from reflexblue.redis_client import RedisHealth, connect
from reflexblue.security.throttle import (
    PENDING_TIMEOUT,
    DatabaseThrottleStore,
    FallbackThrottleStore,
    LoginThrottle,
    Policy,
    RedisThrottleStore,
    ThrottleStore,
    Verdict,
)
from reflexblue.settings import Settings
from reflexblue.storage.database import Database
from reflexblue.storage.models import ThrottleCounter

from ..conftest import REDIS_URL

T0 = 1_800_000_000.0
POLICY = Policy(limit=5, base_delay=30, max_delay=120, window=60)
ADDRESS_POLICY = Policy(limit=8, base_delay=30, max_delay=120, window=60)
ADDRESS = "192.0.2.10"
OTHER_ADDRESS = "198.51.100.7"
#: A port where nothing listens on 127.0.0.1, so connecting is refused at once.
REFUSED_REDIS_URL = "redis://127.0.0.1:1/0"

ALLOWED = Verdict(True)
BUSY_USER = Verdict(False, 1, "user", busy=True)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = connect(REDIS_URL)
    yield connection
    connection.close()


@pytest.fixture
def redis_store(client: redis.Redis, redis_prefix: str) -> RedisThrottleStore:
    return RedisThrottleStore(client, redis_prefix)


@pytest.fixture
def other_database(tmp_path: Path, cheap_settings: Callable[..., Settings]) -> Iterator[Database]:
    """A second migrated SQLite database, so that a fallback store never shares rows with the reference store."""
    database = prepare(cheap_settings(f"sqlite:///{tmp_path}/other.db"))
    yield database
    database.dispose()


class EventRecorder:
    """Collects what RedisHealth reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, _level: int, **fields: Any) -> None:
        self.events.append((name, fields))

    @property
    def names(self) -> list[str]:
        return [name for name, _fields in self.events]


def unreachable_store(prefix: str) -> RedisThrottleStore:
    return RedisThrottleStore(connect(REFUSED_REDIS_URL), prefix)


@pytest.fixture(params=["redis", "fallback", "fallback-redis-down"])
def store(request: pytest.FixtureRequest, redis_store: RedisThrottleStore, other_database: Database) -> ThrottleStore:
    """Each store that can hold counters in Redis: Redis alone, and the fallback store with Redis up and down."""
    if request.param == "redis":
        return redis_store
    if request.param == "fallback":
        return FallbackThrottleStore(redis_store, DatabaseThrottleStore(other_database), RedisHealth(REDIS_URL))
    return FallbackThrottleStore(unreachable_store("x:"), DatabaseThrottleStore(other_database),
                                 RedisHealth(REFUSED_REDIS_URL, EventRecorder()))


# ------------------------------------------------------------------------------------------------
# Store operations: the same verdicts as the database store


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "reserve", "reserve", "failed", "failed", "succeeded", "aborted", "reset"]),
        st.sampled_from([0.0, 0.4, 1.0, 29.5, 30.0, 31.0, 60.0, 61.0, 120.0, 200.0]),
    ),
    min_size=1,
    max_size=40,
)


#: The keyword arguments of ``settle`` for each outcome of a password check.
SETTLE_ARGUMENTS = {
    "failed": {"failed": True, "reset": False},
    "succeeded": {"failed": False, "reset": True},
    "aborted": {"failed": False, "reset": False},
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_redis_store_matches_database_store(
    operations: list[tuple[str, float]], sqlite_database: Database, redis_store: RedisThrottleStore
) -> None:
    run_both(operations, sqlite_database, redis_store)


def run_both(operations: list[tuple[str, float]], database: Database, redis_store: RedisThrottleStore) -> None:
    """Apply ``operations`` (name, seconds to advance first) to both stores and compare every verdict.

    "failed", "succeeded" and "aborted" settle one reservation with that outcome. Hypothesis also
    settles reservations that were never made, which both stores must treat alike too.
    """
    database_store = DatabaseThrottleStore(database)
    key = f"user:{secrets.token_hex(8)}"
    now = T0
    for step, (operation, advance) in enumerate(operations):
        now += advance
        if operation == "reserve":
            expected = database_store.reserve(key, POLICY, now)
            actual = redis_store.reserve(key, POLICY, now)
            assert actual == expected, f"step {step}: {operations[: step + 1]}"
        elif operation == "reset":
            database_store.reset(key)
            redis_store.reset(key)
        else:
            database_store.settle(key, POLICY, now, **SETTLE_ARGUMENTS[operation])
            redis_store.settle(key, POLICY, now, **SETTLE_ARGUMENTS[operation])


FAILED_LOGIN = [("reserve", 0.0), ("failed", 0.0)]

BOUNDARY_CASES = {
    # Four failures, then exactly one window later: the count is not yet forgotten.
    "window boundary": FAILED_LOGIN * 4 + [("reserve", 60.0), ("failed", 0.0), ("reserve", 0.0)],
    "just past window": FAILED_LOGIN * 4 + [("reserve", 60.5), ("failed", 0.0), ("reserve", 0.0)],
    # A block of 30 s ends exactly at blocked_until. Then one slot is free, so a second reservation is busy.
    "block end boundary": FAILED_LOGIN * 5 + [("reserve", 29.9), ("reserve", 0.1), ("reserve", 0.0)],
    "success in flight during failures": [("reserve", 0.0)] * 5 + [("failed", 0.0)] * 4
    + [("succeeded", 0.0)] + [("reserve", 0.0)] * 6,
    # A success settled during a block ends it. Only a check that outlived PENDING_TIMEOUT can still be in flight then.
    "success during block": FAILED_LOGIN * 5 + [("succeeded", 0.0), ("reserve", 0.0)],
    "success after block": FAILED_LOGIN * 5 + [("reserve", 30.0), ("succeeded", 0.0)] + [("reserve", 0.0)] * 6,
    "failure after block doubles": FAILED_LOGIN * 5 + [("reserve", 30.0), ("failed", 0.0), ("reserve", 1.0)],
    "aborted keeps count": FAILED_LOGIN * 4 + [("reserve", 0.0), ("aborted", 0.0)] * 3
    + FAILED_LOGIN + [("reserve", 0.0)],
    "slots full then freed": [("reserve", 0.0)] * 6 + [("succeeded", 0.0), ("reserve", 0.0), ("reserve", 0.0)],
    "stale reservations dropped": [("reserve", 0.0)] * 5 + [("reserve", PENDING_TIMEOUT), ("reserve", 0.5)],
    "late settles after drop": [("reserve", 0.0)] * 5 + [("reserve", 31.0)] + [("aborted", 0.0)] * 5
    + [("reserve", 0.0)] * 6,
    "capped at max delay": FAILED_LOGIN * 5 + [("reserve", 121.0), ("failed", 0.0)] * 4 + [("reserve", 119.0)],
    "reset during block": FAILED_LOGIN * 6 + [("reset", 0.0), ("reserve", 0.0)],
}


@pytest.mark.parametrize("operations", list(BOUNDARY_CASES.values()), ids=list(BOUNDARY_CASES))
def test_redis_store_matches_at_boundaries(
    operations: list[tuple[str, float]], sqlite_database: Database, redis_store: RedisThrottleStore
) -> None:
    run_both(operations, sqlite_database, redis_store)


# ------------------------------------------------------------------------------------------------
# Redis store


def fail_in_store(store: ThrottleStore, key: str, now: float) -> Verdict:
    verdict = store.reserve(key, POLICY, now)
    if verdict.allowed:
        store.settle(key, POLICY, now, failed=True, reset=False)
    return verdict


def test_redis_store_blocks_at_limit(redis_store: RedisThrottleStore) -> None:
    verdicts = [fail_in_store(redis_store, "user:a", T0) for _ in range(6)]

    assert [verdict.allowed for verdict in verdicts] == [True] * 5 + [False]
    assert verdicts[-1].retry_after == 30
    assert not verdicts[-1].busy


def test_redis_store_block_doubles(redis_store: RedisThrottleStore) -> None:
    for _ in range(5):
        fail_in_store(redis_store, "user:a", T0)

    fail_in_store(redis_store, "user:a", T0 + 30)
    verdict = redis_store.reserve("user:a", POLICY, T0 + 31)

    assert not verdict.allowed
    assert verdict.retry_after == 59


def test_redis_store_busy_when_slots_full(redis_store: RedisThrottleStore) -> None:
    in_flight = [redis_store.reserve("user:a", POLICY, T0) for _ in range(5)]

    sixth = redis_store.reserve("user:a", POLICY, T0)

    assert in_flight == [ALLOWED] * 5
    assert sixth == Verdict(False, 1, busy=True)


def test_redis_store_key_expiry(
    redis_store: RedisThrottleStore, client: redis.Redis
) -> None:
    # The key outlives its failures, its block and its reservations.
    lifetime_ms = (POLICY.window + POLICY.max_delay + PENDING_TIMEOUT) * 1000
    redis_store.reserve("user:a", POLICY, T0)

    ttl_ms = client.pttl(redis_store.redis_key("user:a"))

    assert lifetime_ms - 2000 < ttl_ms <= lifetime_ms


def test_redis_store_settle_sets_expiry(redis_store: RedisThrottleStore, client: redis.Redis) -> None:
    # A settle that arrives after its key expired writes the key again, so it must expire too.
    redis_store.settle("user:never-seen", POLICY, T0, failed=False, reset=False)

    assert client.pttl(redis_store.redis_key("user:never-seen")) > 0


def test_redis_store_settle_refreshes_expiry(redis_store: RedisThrottleStore, client: redis.Redis) -> None:
    redis_store.reserve("user:a", POLICY, T0)
    client.pexpire(redis_store.redis_key("user:a"), 10_000)

    redis_store.settle("user:a", POLICY, T0, failed=True, reset=False)

    assert client.pttl(redis_store.redis_key("user:a")) > 10_000


def test_redis_store_prefix_isolates_environments(client: redis.Redis, redis_prefix: str) -> None:
    first = RedisThrottleStore(client, redis_prefix + "one:")
    second = RedisThrottleStore(client, redis_prefix + "two:")
    for _ in range(5):
        fail_in_store(first, "user:a", T0)

    assert not first.reserve("user:a", POLICY, T0).allowed
    assert second.reserve("user:a", POLICY, T0).allowed


# ------------------------------------------------------------------------------------------------
# LoginThrottle sequences on each store, compared with the database store


def fail(throttle: LoginThrottle, now: float, user: str = "shop-api", address: str = ADDRESS) -> Verdict:
    """Play a login with a wrong password: reserve, and settle as a failure when allowed."""
    verdict = throttle.attempt(user, address, now=now)
    if verdict.allowed:
        throttle.finish(user, address, outcome="failed", now=now)
    return verdict


def succeed(throttle: LoginThrottle, now: float, user: str = "shop-api", address: str = ADDRESS) -> Verdict:
    """Play a login with the right password: reserve, and settle as a success when allowed."""
    verdict = throttle.attempt(user, address, now=now)
    if verdict.allowed:
        throttle.finish(user, address, outcome="succeeded", now=now)
    return verdict


def abort(throttle: LoginThrottle, now: float, user: str = "shop-api", address: str = ADDRESS) -> Verdict:
    """Play a login whose password check failed with an error: reserve, and release when allowed."""
    verdict = throttle.attempt(user, address, now=now)
    if verdict.allowed:
        throttle.finish(user, address, outcome="aborted", now=now)
    return verdict


def user_blocks(throttle: LoginThrottle) -> list[Verdict]:
    return [fail(throttle, T0) for _ in range(5)] + [throttle.attempt("shop-api", ADDRESS, now=T0)]


def success_resets_user(throttle: LoginThrottle) -> list[Verdict]:
    # The later failures come from another address, whose limit of 8 they stay under.
    return ([fail(throttle, T0) for _ in range(4)] + [succeed(throttle, T0)]
            + [fail(throttle, T0, address=OTHER_ADDRESS) for _ in range(5)]
            + [throttle.attempt("shop-api", OTHER_ADDRESS, now=T0)])


def success_keeps_address_failures(throttle: LoginThrottle) -> list[Verdict]:
    # 4 failures of shop-api and 4 of other users reach the address limit of 8 despite the success between them.
    return ([fail(throttle, T0) for _ in range(4)] + [succeed(throttle, T0)]
            + [fail(throttle, T0, user=f"user-{index}") for index in range(4)]
            + [throttle.attempt("shop-api", ADDRESS, now=T0)])


def success_after_address_block(throttle: LoginThrottle) -> list[Verdict]:
    end = T0 + ADDRESS_POLICY.base_delay
    return ([fail(throttle, T0, user=f"user-{index}") for index in range(8)]
            + [throttle.attempt("real-user", ADDRESS, now=T0)]
            + [succeed(throttle, end, user="real-user"), succeed(throttle, end, user="real-user"),
               succeed(throttle, end + 1, user="other-user")]
            + [fail(throttle, end + 1, user="user-8"), throttle.attempt("real-user", ADDRESS, now=end + 1)])


def slots_fill_then_free(throttle: LoginThrottle) -> list[Verdict]:
    verdicts = [throttle.attempt("shop-api", ADDRESS, now=T0) for _ in range(6)]
    throttle.finish("shop-api", ADDRESS, outcome="succeeded", now=T0)
    return verdicts + [throttle.attempt("shop-api", ADDRESS, now=T0)]


def address_slots_fill(throttle: LoginThrottle) -> list[Verdict]:
    return [throttle.attempt(f"user-{index}", ADDRESS, now=T0) for index in range(9)]


def stale_reservations_dropped(throttle: LoginThrottle) -> list[Verdict]:
    return ([throttle.attempt("shop-api", ADDRESS, now=T0) for _ in range(5)]
            + [throttle.attempt("shop-api", ADDRESS, now=T0 + PENDING_TIMEOUT),
               throttle.attempt("shop-api", ADDRESS, now=T0 + PENDING_TIMEOUT + 1)])


def aborted_not_counted(throttle: LoginThrottle) -> list[Verdict]:
    return ([fail(throttle, T0) for _ in range(4)] + [abort(throttle, T0) for _ in range(10)]
            + [fail(throttle, T0), throttle.attempt("shop-api", ADDRESS, now=T0)])


def one_slot_after_block(throttle: LoginThrottle) -> list[Verdict]:
    end = T0 + POLICY.base_delay
    verdicts = [fail(throttle, T0) for _ in range(5)]
    verdicts += [throttle.attempt("shop-api", ADDRESS, now=end), throttle.attempt("shop-api", ADDRESS, now=end)]
    throttle.finish("shop-api", ADDRESS, outcome="failed", now=end)
    return verdicts + [throttle.attempt("shop-api", ADDRESS, now=end)]


def window_forgets_failures(throttle: LoginThrottle) -> list[Verdict]:
    later = T0 + POLICY.window + 1
    return ([fail(throttle, T0) for _ in range(4)] + [fail(throttle, later) for _ in range(5)]
            + [throttle.attempt("shop-api", ADDRESS, now=later)])


SEQUENCES: dict[str, tuple[Callable[[LoginThrottle], list[Verdict]], list[Verdict]]] = {
    "user blocks": (user_blocks, [ALLOWED] * 5 + [Verdict(False, 30, "user")]),
    "success resets user": (success_resets_user, [ALLOWED] * 10 + [Verdict(False, 30, "user")]),
    "success keeps address failures": (success_keeps_address_failures,
                                       [ALLOWED] * 9 + [Verdict(False, 30, "address")]),
    "success after address block": (success_after_address_block,
                                    [ALLOWED] * 8 + [Verdict(False, 30, "address")] + [ALLOWED] * 4
                                    + [Verdict(False, 60, "address")]),
    "slots fill then free": (slots_fill_then_free, [ALLOWED] * 5 + [BUSY_USER, ALLOWED]),
    "address slots fill": (address_slots_fill, [ALLOWED] * 8 + [Verdict(False, 1, "address", busy=True)]),
    "stale reservations dropped": (stale_reservations_dropped, [ALLOWED] * 5 + [BUSY_USER, ALLOWED]),
    "aborted not counted": (aborted_not_counted, [ALLOWED] * 15 + [Verdict(False, 30, "user")]),
    "one slot after block": (one_slot_after_block, [ALLOWED] * 6 + [BUSY_USER, Verdict(False, 60, "user")]),
    "window forgets failures": (window_forgets_failures, [ALLOWED] * 9 + [Verdict(False, 30, "user")]),
}


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_login_sequence_matches_database(name: str, store: ThrottleStore, sqlite_database: Database) -> None:
    play, expected = SEQUENCES[name]
    reference = LoginThrottle(DatabaseThrottleStore(sqlite_database), POLICY, ADDRESS_POLICY)
    tested = LoginThrottle(store, POLICY, ADDRESS_POLICY)

    reference_verdicts = play(reference)
    tested_verdicts = play(tested)

    assert tested_verdicts == reference_verdicts
    assert tested_verdicts == expected


# ------------------------------------------------------------------------------------------------
# Concurrency


def run_at_once(count: int, attempt: Callable[[], Verdict]) -> list[Verdict]:
    """Run ``attempt()`` in ``count`` threads released together, and return every verdict."""
    barrier = threading.Barrier(count)
    verdicts: list[Verdict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        try:
            verdict = attempt()
        except BaseException as error:  # noqa: BLE001 - collected and reported by the test
            with lock:
                errors.append(error)
            return
        with lock:
            verdicts.append(verdict)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(verdicts) == count
    return verdicts


def test_parallel_reservations_capped(store: ThrottleStore) -> None:
    throttle = LoginThrottle(store, POLICY, Policy(limit=50, base_delay=30, max_delay=120, window=60))

    verdicts = run_at_once(40, lambda: throttle.attempt("shop-api", ADDRESS, now=T0))

    assert verdicts.count(ALLOWED) == POLICY.limit
    assert verdicts.count(BUSY_USER) == 40 - POLICY.limit


class CheckCounter:
    """The number of password checks running now, and the maximum seen at once, shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.maximum = 0

    def start(self) -> None:
        with self._lock:
            self.running += 1
            self.maximum = max(self.maximum, self.running)

    def end(self) -> None:
        with self._lock:
            self.running -= 1


def log_in_waiting(throttle: LoginThrottle, checks: CheckCounter) -> Verdict:
    """Log in with the right password, retrying while busy as the HTTP layer does, for up to 20 s."""
    deadline = time.monotonic() + 20
    verdict = throttle.attempt("shop-api", ADDRESS, now=T0)
    while verdict.busy and time.monotonic() < deadline:
        time.sleep(0.005)
        verdict = throttle.attempt("shop-api", ADDRESS, now=T0)
    if not verdict.allowed:
        return verdict
    checks.start()
    time.sleep(0.01)  # the password check
    checks.end()
    throttle.finish("shop-api", ADDRESS, outcome="succeeded", now=T0)
    return verdict


def test_parallel_right_passwords_never_rejected(store: ThrottleStore) -> None:
    throttle = LoginThrottle(store, POLICY, Policy(limit=50, base_delay=30, max_delay=120, window=60))
    for _ in range(POLICY.limit - 1):
        fail(throttle, T0)
    checks = CheckCounter()

    verdicts = run_at_once(20, lambda: log_in_waiting(throttle, checks))

    assert [verdict for verdict in verdicts if not verdict.allowed] == []
    assert checks.maximum <= POLICY.limit


# ------------------------------------------------------------------------------------------------
# Falling back to the database while Redis is unreachable


def test_fallback_counts_in_database_when_redis_down(sqlite_database: Database) -> None:
    recorder = EventRecorder()
    store = FallbackThrottleStore(unreachable_store("x:"), DatabaseThrottleStore(sqlite_database),
                                  RedisHealth(REFUSED_REDIS_URL, recorder))

    verdicts = [fail_in_store(store, "user:a", T0) for _ in range(6)]

    assert [verdict.allowed for verdict in verdicts] == [True] * 5 + [False]
    with sqlite_database.read() as session:
        assert session.scalars(select(ThrottleCounter.failures).where(ThrottleCounter.key == "user:a")).one() == 5


def test_fallback_logs_one_event_per_outage(sqlite_database: Database) -> None:
    recorder = EventRecorder()
    store = FallbackThrottleStore(unreachable_store("x:"), DatabaseThrottleStore(sqlite_database),
                                  RedisHealth(REFUSED_REDIS_URL, recorder))

    for _ in range(4):
        fail_in_store(store, "user:a", T0)
    store.settle("user:a", POLICY, T0, failed=False, reset=False)
    store.reset("user:a")

    assert recorder.names == ["redis.unavailable"]
    assert recorder.events[0][1]["error"] == "ConnectionError"


def test_fallback_uses_redis_when_it_responds(
    sqlite_database: Database, redis_store: RedisThrottleStore, client: redis.Redis
) -> None:
    store = FallbackThrottleStore(redis_store, DatabaseThrottleStore(sqlite_database), RedisHealth(REDIS_URL))

    store.reserve("user:a", POLICY, T0)
    store.settle("user:a", POLICY, T0, failed=True, reset=False)

    assert client.exists(redis_store.redis_key("user:a")) == 1
    with sqlite_database.read() as session:
        assert session.scalars(select(ThrottleCounter)).all() == []
