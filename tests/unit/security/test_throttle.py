"""Login throttling with counters in a real database and an explicit clock."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select

from reflexblue.security.throttle import DatabaseThrottleStore, LoginThrottle, Policy, Verdict
from reflexblue.storage.database import Database
from reflexblue.storage.models import ThrottleCounter

T0 = 1_800_000_000.0
USER_POLICY = Policy(limit=5, base_delay=30, max_delay=900, window=900)
ADDRESS_POLICY = Policy(limit=50, base_delay=30, max_delay=900, window=900)
ADDRESS = "192.0.2.10"


@pytest.fixture
def throttle(sqlite_database: Database) -> LoginThrottle:
    return LoginThrottle(DatabaseThrottleStore(sqlite_database), USER_POLICY, ADDRESS_POLICY)


def attempts(throttle: LoginThrottle, count: int, now: float, user: str = "shop-api",
             address: str = ADDRESS) -> list[Verdict]:
    return [throttle.attempt(user, address, now=now) for _ in range(count)]


# ------------------------------------------------------------------------------------------------
# Policy


def test_policy_no_delay_below_limit() -> None:
    assert [USER_POLICY.delay(failures) for failures in range(5)] == [0.0] * 5


def test_policy_delay_doubles_from_limit() -> None:
    assert [USER_POLICY.delay(failures) for failures in range(5, 11)] == [30, 60, 120, 240, 480, 900]


def test_policy_delay_capped_for_huge_counts() -> None:
    assert USER_POLICY.delay(10_000) == 900


# ------------------------------------------------------------------------------------------------
# Username policy


def test_first_five_attempts_allowed(throttle: LoginThrottle) -> None:
    assert all(verdict.allowed for verdict in attempts(throttle, 5, T0))


def test_sixth_attempt_rejected_with_base_delay(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)

    verdict = throttle.attempt("shop-api", ADDRESS, now=T0)

    assert not verdict.allowed
    assert verdict.retry_after == 30


def test_retry_after_counts_down(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 10).retry_after == 20
    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 29.5).retry_after == 1


def test_rejected_attempts_do_not_extend_block(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)
    attempts(throttle, 20, T0 + 1)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 30).allowed


def test_block_expires_after_delay(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 30).allowed


def test_backoff_doubles_and_caps(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)
    now = T0
    observed = []
    for _ in range(8):
        rejected = throttle.attempt("shop-api", ADDRESS, now=now)
        observed.append(rejected.retry_after)
        now += rejected.retry_after
        assert throttle.attempt("shop-api", ADDRESS, now=now).allowed

    assert observed == [30, 60, 120, 240, 480, 900, 900, 900]


def test_retry_after_never_exceeds_900(throttle: LoginThrottle) -> None:
    now = T0
    for _ in range(40):
        verdict = throttle.attempt("shop-api", ADDRESS, now=now)
        assert verdict.retry_after <= 900
        now += max(verdict.retry_after, 1)


def test_success_resets_user_count(throttle: LoginThrottle) -> None:
    attempts(throttle, 4, T0)
    throttle.succeeded("shop-api", ADDRESS)

    assert all(verdict.allowed for verdict in attempts(throttle, 5, T0 + 1))
    assert not throttle.attempt("shop-api", ADDRESS, now=T0 + 1).allowed


def test_success_on_fifth_attempt_clears_block(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)
    throttle.succeeded("shop-api", ADDRESS)

    assert throttle.attempt("shop-api", ADDRESS, now=T0 + 1).allowed


def test_window_expiry_resets_count(throttle: LoginThrottle) -> None:
    attempts(throttle, 4, T0)

    later = T0 + USER_POLICY.window + 1
    assert all(verdict.allowed for verdict in attempts(throttle, 5, later))
    assert not throttle.attempt("shop-api", ADDRESS, now=later).allowed


def test_window_counts_from_last_failure(throttle: LoginThrottle) -> None:
    attempts(throttle, 2, T0)
    attempts(throttle, 2, T0 + 600)

    later = T0 + 600 + USER_POLICY.window - 1
    assert throttle.attempt("shop-api", ADDRESS, now=later).allowed
    assert not throttle.attempt("shop-api", ADDRESS, now=later).allowed


def test_window_expiry_after_block_resets(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0)

    later = T0 + USER_POLICY.window + 1
    assert all(verdict.allowed for verdict in attempts(throttle, 5, later))


def test_users_are_throttled_independently(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0, user="shop-api")

    assert not throttle.attempt("shop-api", ADDRESS, now=T0).allowed
    assert throttle.attempt("edi-link", ADDRESS, now=T0).allowed


def test_same_user_from_other_address_throttled(throttle: LoginThrottle) -> None:
    attempts(throttle, 5, T0, address="192.0.2.1")

    assert not throttle.attempt("shop-api", "198.51.100.7", now=T0).allowed


# ------------------------------------------------------------------------------------------------
# Address policy


def test_address_limit_across_usernames(throttle: LoginThrottle) -> None:
    verdicts = [throttle.attempt(f"user-{index}", ADDRESS, now=T0) for index in range(50)]

    rejected = throttle.attempt("user-50", ADDRESS, now=T0)

    assert all(verdict.allowed for verdict in verdicts)
    assert not rejected.allowed
    assert rejected.retry_after == 30


def test_address_block_spares_other_addresses(throttle: LoginThrottle) -> None:
    for index in range(50):
        throttle.attempt(f"user-{index}", ADDRESS, now=T0)

    assert throttle.attempt("user-51", "198.51.100.7", now=T0).allowed


def test_address_block_does_not_count_user(throttle: LoginThrottle) -> None:
    for index in range(50):
        throttle.attempt(f"user-{index}", ADDRESS, now=T0)
    for _ in range(10):
        throttle.attempt("victim", ADDRESS, now=T0)

    assert all(verdict.allowed for verdict in attempts(throttle, 5, T0, user="victim", address="198.51.100.7"))


def test_success_forgives_address_attempt(throttle: LoginThrottle) -> None:
    for index in range(49):
        throttle.attempt(f"user-{index}", ADDRESS, now=T0)
    throttle.attempt("real-user", ADDRESS, now=T0)
    throttle.succeeded("real-user", ADDRESS)

    assert throttle.attempt("real-user", ADDRESS, now=T0).allowed


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

    attempts(first, 3, T0)
    attempts(second, 2, T0)

    assert not first.attempt("shop-api", ADDRESS, now=T0).allowed
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

    assert sum(verdict.allowed for verdict in verdicts) == USER_POLICY.limit


def test_concurrent_instances_allow_exactly_limit(any_database: Database) -> None:
    # Half of the threads use a second Database object, as a second server instance would.
    second_database = Database(any_database.url.render_as_string(hide_password=False))
    throttles = [
        LoginThrottle(DatabaseThrottleStore(database), USER_POLICY, ADDRESS_POLICY)
        for database in (any_database, second_database)
    ]

    verdicts = run_at_once(40, lambda index: throttles[index % 2].attempt("shop-api", ADDRESS, now=T0))

    assert sum(verdict.allowed for verdict in verdicts) == USER_POLICY.limit
    second_database.dispose()
