"""Login throttling with counters in a real database and an explicit clock.

A login reserves a slot of its username key and of its address key before the password is
checked, and settles both afterwards. The helpers below play whole logins: ``fail`` is a
reservation settled as a failure, ``succeed`` one settled as a success.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Row, select

from reflexblue.security.throttle import (
    PENDING_TIMEOUT,
    DatabaseThrottleStore,
    LoginThrottle,
    Policy,
    Verdict,
    _storage_key,
)
from reflexblue.storage.database import Database
from reflexblue.storage.models import ThrottleCounter

T0 = 1_800_000_000.0
USER_POLICY = Policy(limit=5, base_delay=30, max_delay=900, window=900)
ADDRESS_POLICY = Policy(limit=50, base_delay=30, max_delay=900, window=900)
ADDRESS = "192.0.2.10"
OTHER_ADDRESS = "198.51.100.7"


@pytest.fixture
def throttle(sqlite_database: Database) -> LoginThrottle:
    return LoginThrottle(DatabaseThrottleStore(sqlite_database), USER_POLICY, ADDRESS_POLICY)


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


def failures(throttle: LoginThrottle, count: int, now: float, user: str = "shop-api",
             address: str = ADDRESS) -> list[Verdict]:
    return [fail(throttle, now, user, address) for _ in range(count)]


def reserve(throttle: LoginThrottle, count: int, now: float, user: str = "shop-api",
            address: str = ADDRESS) -> list[Verdict]:
    """Reserve ``count`` password checks and leave them in flight (not settled)."""
    return [throttle.attempt(user, address, now=now) for _ in range(count)]


def counter(database: Database, kind: str, value: str) -> Row[tuple[int, float, int]]:
    """Return failures, blocked_until and pending of the stored ``kind`` ("user" or "address") key of ``value``."""
    query = (select(ThrottleCounter.failures, ThrottleCounter.blocked_until, ThrottleCounter.pending)
             .where(ThrottleCounter.key == _storage_key(kind, value)))
    with database.read() as session:
        return session.execute(query).one()


# ------------------------------------------------------------------------------------------------
# Policy


def test_policy_no_delay_below_limit() -> None:
    assert [USER_POLICY.delay(count) for count in range(5)] == [0.0] * 5


def test_policy_delay_doubles_from_limit() -> None:
    assert [USER_POLICY.delay(count) for count in range(5, 11)] == [30, 60, 120, 240, 480, 900]


def test_policy_delay_capped_for_huge_counts() -> None:
    assert USER_POLICY.delay(10_000) == 900


def test_policy_slots_shrink_with_failures() -> None:
    assert [USER_POLICY.slots(count) for count in range(5)] == [5, 4, 3, 2, 1]


def test_policy_one_slot_from_limit() -> None:
    assert [USER_POLICY.slots(count) for count in (5, 6, 40, 10_000)] == [1, 1, 1, 1]


# ------------------------------------------------------------------------------------------------
# Username policy


def test_first_five_failures_allowed(throttle: LoginThrottle) -> None:
    assert all(verdict.allowed for verdict in failures(throttle, 5, T0))


def test_sixth_attempt_rejected_with_base_delay(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)

    verdict = throttle.attempt("shop-api", ADDRESS, now=T0)

    assert not verdict.allowed
    assert verdict.retry_after == 30
    assert verdict.kind == "user"
    assert not verdict.busy


def test_retry_after_counts_down(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 10).retry_after == 20
    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 29.5).retry_after == 1


def test_rejected_attempts_do_not_extend_block(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)
    failures(throttle, 20, T0 + 1)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 30).allowed


def test_block_expires_after_delay(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 30).allowed


def test_backoff_doubles_and_caps(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)
    now = T0
    observed = []
    for _ in range(8):
        rejected = throttle.attempt("shop-api", ADDRESS, now=now)
        observed.append(rejected.retry_after)
        now += rejected.retry_after
        assert fail(throttle, now).allowed

    assert observed == [30, 60, 120, 240, 480, 900, 900, 900]


def test_longest_block_keeps_backoff(throttle: LoginThrottle) -> None:
    # Waiting out a 900 s block, and a little more, must not give a fresh set of five guesses.
    failures(throttle, 5, T0)
    now = T0
    for _ in range(6):
        rejected = throttle.attempt("shop-api", ADDRESS, now=now)
        now += rejected.retry_after + 1
        assert fail(throttle, now).allowed

    assert throttle.attempt("shop-api", ADDRESS, now=now + 1).retry_after >= 899


def test_retry_after_never_exceeds_900(throttle: LoginThrottle) -> None:
    now = T0
    for _ in range(40):
        verdict = fail(throttle, now)
        assert verdict.retry_after <= 900
        now += max(verdict.retry_after, 1)


def test_success_resets_user_count(throttle: LoginThrottle) -> None:
    failures(throttle, 4, T0)
    assert succeed(throttle, T0).allowed

    assert all(verdict.allowed for verdict in failures(throttle, 5, T0 + 1))
    assert not throttle.attempt("shop-api", ADDRESS, now=T0 + 1).allowed


def test_success_on_fifth_attempt_prevents_block(throttle: LoginThrottle) -> None:
    # The fifth attempt is checked before anything is counted, so the right password starts no block.
    failures(throttle, 4, T0)

    fifth = succeed(throttle, T0)

    assert fifth.allowed
    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 1).allowed


def test_success_after_block_resets_count(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)

    after_block = succeed(throttle, T0 + 30)

    assert after_block.allowed
    assert all(verdict.allowed for verdict in failures(throttle, 5, T0 + 31))
    assert not throttle.attempt("shop-api", ADDRESS, now=T0 + 31).allowed


def test_window_expiry_resets_count(throttle: LoginThrottle) -> None:
    failures(throttle, 4, T0)

    later = T0 + USER_POLICY.window + 1
    assert all(verdict.allowed for verdict in failures(throttle, 5, later))
    assert not throttle.attempt("shop-api", ADDRESS, now=later).allowed


def test_window_counts_from_last_failure(throttle: LoginThrottle) -> None:
    failures(throttle, 2, T0)
    failures(throttle, 2, T0 + 600)

    later = T0 + 600 + USER_POLICY.window - 1
    assert fail(throttle, later).allowed
    assert not throttle.attempt("shop-api", ADDRESS, now=later).allowed


def test_window_expiry_after_block_resets(throttle: LoginThrottle) -> None:
    # The window counts from the end of the block, not from the last failure.
    failures(throttle, 5, T0)

    later = T0 + USER_POLICY.delay(5) + USER_POLICY.window + 1
    assert all(verdict.allowed for verdict in failures(throttle, 5, later))


def test_users_are_throttled_independently(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0, user="shop-api")

    assert not throttle.attempt("shop-api", ADDRESS, now=T0).allowed
    assert throttle.attempt("edi-link", ADDRESS, now=T0).allowed


def test_same_user_from_other_address_throttled(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0, address="192.0.2.1")

    assert not throttle.attempt("shop-api", OTHER_ADDRESS, now=T0).allowed


def test_user_rejection_releases_address_slot(throttle: LoginThrottle, sqlite_database: Database) -> None:
    # 100 rejections would fill the 45 address slots left if each kept its address reservation.
    failures(throttle, 5, T0)
    rejected = reserve(throttle, 100, T0)

    assert all(verdict.kind == "user" for verdict in rejected)
    assert counter(sqlite_database, "address", ADDRESS).pending == 0
    assert fail(throttle, T0, user="edi-link").allowed


# ------------------------------------------------------------------------------------------------
# Slots: attempts in flight


def test_slots_fill_then_busy(throttle: LoginThrottle) -> None:
    in_flight = reserve(throttle, 5, T0)

    sixth = throttle.attempt("shop-api", ADDRESS, now=T0)

    assert all(verdict.allowed for verdict in in_flight)
    assert not sixth.allowed
    assert sixth.busy
    assert sixth.kind == "user"
    assert sixth.retry_after == 1


def test_success_frees_slot(throttle: LoginThrottle) -> None:
    reserve(throttle, 5, T0)
    assert throttle.attempt("shop-api", ADDRESS, now=T0).busy

    throttle.finish("shop-api", ADDRESS, outcome="succeeded", now=T0)

    assert throttle.attempt("shop-api", ADDRESS, now=T0).allowed


def test_busy_verdict_is_no_block(throttle: LoginThrottle, sqlite_database: Database) -> None:
    reserve(throttle, 5, T0)
    busy = throttle.attempt("shop-api", ADDRESS, now=T0)
    for _ in range(5):
        throttle.finish("shop-api", ADDRESS, outcome="aborted", now=T0)

    row = counter(sqlite_database, "user", "shop-api")
    assert busy.busy
    assert row.failures == 0
    assert row.blocked_until == 0.0
    assert throttle.attempt("shop-api", ADDRESS, now=T0).allowed


def test_slots_shrink_with_failures(throttle: LoginThrottle) -> None:
    failures(throttle, 3, T0)

    in_flight = reserve(throttle, 2, T0)
    third = throttle.attempt("shop-api", ADDRESS, now=T0)

    assert all(verdict.allowed for verdict in in_flight)
    assert third.busy


def test_one_slot_after_block_ends(throttle: LoginThrottle) -> None:
    failures(throttle, 5, T0)

    first = throttle.attempt("shop-api", ADDRESS, now=T0 + 30)
    second = throttle.attempt("shop-api", ADDRESS, now=T0 + 30)

    assert first.allowed
    assert not second.allowed
    assert second.busy


def test_aborted_releases_without_counting(throttle: LoginThrottle, sqlite_database: Database) -> None:
    failures(throttle, 4, T0)
    for _ in range(10):
        assert throttle.attempt("shop-api", ADDRESS, now=T0).allowed
        throttle.finish("shop-api", ADDRESS, outcome="aborted", now=T0)

    assert counter(sqlite_database, "user", "shop-api").failures == 4
    assert counter(sqlite_database, "address", ADDRESS).failures == 4
    assert fail(throttle, T0).allowed
    assert not throttle.attempt("shop-api", ADDRESS, now=T0).allowed


def test_stale_reservations_dropped(throttle: LoginThrottle) -> None:
    # The five reservations were never settled, as if their process had died.
    reserve(throttle, 5, T0)

    at_timeout = throttle.attempt("shop-api", ADDRESS, now=T0 + PENDING_TIMEOUT)
    after_timeout = throttle.attempt("shop-api", ADDRESS, now=T0 + PENDING_TIMEOUT + 1)

    assert at_timeout.busy
    assert after_timeout.allowed


def test_late_settles_stop_at_zero(throttle: LoginThrottle, sqlite_database: Database) -> None:
    # The five dropped reservations are settled after a new one was taken. Their settles also
    # release the new one's count, so up to limit + 1 checks are in flight here. The floor at zero
    # keeps late settles from freeing more slots than that.
    reserve(throttle, 5, T0)
    later = T0 + PENDING_TIMEOUT + 1
    assert throttle.attempt("shop-api", ADDRESS, now=later).allowed
    for _ in range(5):
        throttle.finish("shop-api", ADDRESS, outcome="aborted", now=later)

    in_flight = reserve(throttle, 5, later)
    sixth = throttle.attempt("shop-api", ADDRESS, now=later)

    assert counter(sqlite_database, "user", "shop-api").pending == 5
    assert all(verdict.allowed for verdict in in_flight)
    assert sixth.busy


# ------------------------------------------------------------------------------------------------
# Address policy


def test_address_limit_across_usernames(throttle: LoginThrottle) -> None:
    verdicts = [fail(throttle, T0, user=f"user-{index}") for index in range(50)]

    rejected = throttle.attempt("user-50", ADDRESS, now=T0)

    assert all(verdict.allowed for verdict in verdicts)
    assert not rejected.allowed
    assert rejected.retry_after == 30
    assert rejected.kind == "address"


def test_address_block_spares_other_addresses(throttle: LoginThrottle) -> None:
    for index in range(50):
        fail(throttle, T0, user=f"user-{index}")

    assert throttle.attempt("user-51", OTHER_ADDRESS, now=T0).allowed


def test_address_block_does_not_count_user(throttle: LoginThrottle) -> None:
    for index in range(50):
        fail(throttle, T0, user=f"user-{index}")
    for _ in range(10):
        fail(throttle, T0, user="victim")

    assert all(verdict.allowed for verdict in failures(throttle, 5, T0, user="victim", address=OTHER_ADDRESS))


def test_success_keeps_address_failures(throttle: LoginThrottle, sqlite_database: Database) -> None:
    failures(throttle, 4, T0)

    succeed(throttle, T0)

    assert counter(sqlite_database, "user", "shop-api").failures == 0
    assert counter(sqlite_database, "address", ADDRESS).failures == 4


def test_address_blocks_despite_success(throttle: LoginThrottle) -> None:
    # 49 failures and a success leave the address one failure from its limit of 50.
    for index in range(49):
        fail(throttle, T0, user=f"user-{index}")
    assert succeed(throttle, T0, user="real-user").allowed

    assert fail(throttle, T0, user="user-49").allowed
    rejected = throttle.attempt("real-user", ADDRESS, now=T0)

    assert not rejected.allowed
    assert rejected.kind == "address"


def test_success_after_address_block(throttle: LoginThrottle) -> None:
    # After the block the address still has 50 failures, but a success neither clears them nor starts a new block.
    for index in range(50):
        fail(throttle, T0, user=f"user-{index}")
    end = T0 + ADDRESS_POLICY.base_delay

    first = succeed(throttle, end, user="real-user")
    second = succeed(throttle, end, user="other-user")
    third = succeed(throttle, end + 1, user="real-user")

    assert first.allowed
    assert second.allowed
    assert third.allowed


def test_address_failure_after_block_doubles(throttle: LoginThrottle) -> None:
    for index in range(50):
        fail(throttle, T0, user=f"user-{index}")
    end = T0 + ADDRESS_POLICY.base_delay
    succeed(throttle, end, user="real-user")

    assert fail(throttle, end, user="user-50").allowed
    rejected = throttle.attempt("real-user", ADDRESS, now=end)

    assert rejected.kind == "address"
    assert rejected.retry_after == 60


def test_address_one_slot_after_block(throttle: LoginThrottle) -> None:
    # Successes keep the address's failures, so it stays at one slot until its window has passed.
    for index in range(50):
        fail(throttle, T0, user=f"user-{index}")
    end = T0 + ADDRESS_POLICY.base_delay
    succeed(throttle, end, user="real-user")

    first = throttle.attempt("real-user", ADDRESS, now=end + 1)
    second = throttle.attempt("other-user", ADDRESS, now=end + 1)
    throttle.finish("real-user", ADDRESS, outcome="succeeded", now=end + 1)
    later = T0 + ADDRESS_POLICY.delay(ADDRESS_POLICY.limit) + ADDRESS_POLICY.window + 1
    after_window = [throttle.attempt(f"user-{index}", ADDRESS, now=later) for index in range(2)]

    assert first.allowed
    assert second.busy
    assert second.kind == "address"
    assert all(verdict.allowed for verdict in after_window)


def test_stored_keys_hide_names(throttle: LoginThrottle, sqlite_database: Database) -> None:
    throttle.attempt("shop-api", ADDRESS, now=T0)

    with sqlite_database.read() as session:
        keys = list(session.scalars(select(ThrottleCounter.key)))

    assert len(keys) == 2
    assert not any("shop-api" in key or ADDRESS in key for key in keys)


def test_counters_shared_between_instances(sqlite_database: Database, sqlite_url: str) -> None:
    # Two server instances on one database see the same counters.
    other_database = Database(sqlite_url)
    first = LoginThrottle(DatabaseThrottleStore(sqlite_database), USER_POLICY, ADDRESS_POLICY)
    second = LoginThrottle(DatabaseThrottleStore(other_database), USER_POLICY, ADDRESS_POLICY)

    failures(first, 3, T0)
    failures(second, 2, T0)

    assert not first.attempt("shop-api", ADDRESS, now=T0).allowed
    other_database.dispose()


def test_reservations_shared_between_instances(sqlite_database: Database, sqlite_url: str) -> None:
    other_database = Database(sqlite_url)
    first = LoginThrottle(DatabaseThrottleStore(sqlite_database), USER_POLICY, ADDRESS_POLICY)
    second = LoginThrottle(DatabaseThrottleStore(other_database), USER_POLICY, ADDRESS_POLICY)

    reserve(first, 3, T0)
    reserve(second, 2, T0)

    assert first.attempt("shop-api", ADDRESS, now=T0).busy
    other_database.dispose()


# ------------------------------------------------------------------------------------------------
# Concurrency


def run_at_once(count: int, attempt: Callable[[int], Verdict]) -> list[Verdict]:
    """Run ``attempt(index)`` in ``count`` threads released together, and return every verdict."""
    barrier = threading.Barrier(count)
    verdicts: list[Verdict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait()
        try:
            verdict = attempt(index)
        except BaseException as error:  # noqa: BLE001 - collected and reported by the test
            with lock:
                errors.append(error)
            return
        with lock:
            verdicts.append(verdict)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(verdicts) == count
    return verdicts


def test_concurrent_attempts_allow_exactly_limit(any_database: Database) -> None:
    throttle = LoginThrottle(DatabaseThrottleStore(any_database), USER_POLICY, ADDRESS_POLICY)

    verdicts = run_at_once(40, lambda _index: throttle.attempt("shop-api", ADDRESS, now=T0))

    rejected = [verdict for verdict in verdicts if not verdict.allowed]
    assert len(verdicts) - len(rejected) == USER_POLICY.limit
    assert all(verdict.busy for verdict in rejected)
    assert all(verdict.kind == "user" for verdict in rejected)


def test_concurrent_instances_allow_exactly_limit(any_database: Database) -> None:
    # Half of the threads use a second Database object, as a second server instance would.
    second_database = Database(any_database.url.render_as_string(hide_password=False))
    throttles = [
        LoginThrottle(DatabaseThrottleStore(database), USER_POLICY, ADDRESS_POLICY)
        for database in (any_database, second_database)
    ]

    verdicts = run_at_once(40, lambda index: throttles[index % 2].attempt("shop-api", ADDRESS, now=T0))

    assert sum(verdict.allowed for verdict in verdicts) == USER_POLICY.limit
    assert all(verdict.busy for verdict in verdicts if not verdict.allowed)
    second_database.dispose()


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


@pytest.mark.parametrize("earlier_failures", [0, USER_POLICY.limit - 1])
def test_parallel_right_passwords_never_rejected(any_database: Database, earlier_failures: int) -> None:
    throttle = LoginThrottle(DatabaseThrottleStore(any_database), USER_POLICY, ADDRESS_POLICY)
    failures(throttle, earlier_failures, T0)
    checks = CheckCounter()

    verdicts = run_at_once(20, lambda _index: log_in_waiting(throttle, checks))

    assert [verdict for verdict in verdicts if not verdict.allowed] == []
    assert checks.maximum <= USER_POLICY.limit
