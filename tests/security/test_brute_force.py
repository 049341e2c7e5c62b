"""Password guessing against the login throttle: parallel bursts, spoofed client addresses,
back-off after each block, and the 900-second ceiling of Retry-After.

The servers of this module have their own throttle settings. Tests that need an address bucket
of their own connect from another loopback source address (127.0.0.2 and up), which the server
counts as another client. No server trusts a proxy, so headers must never change the address.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import update

from reflexblue.domain.usernames import normalise_username
from reflexblue.security.throttle import _storage_key
from reflexblue.storage.models import ThrottleCounter
from tests.e2e.support import ApiUser, Deployment, new_client, unique_name

from .attacks import LOGIN

USER_LIMIT = 5
ADDRESS_LIMIT = 10
LONG_DELAY = 120
SHORT_BASE_DELAY = 1
SHORT_MAX_DELAY = 2
BURST = 50
MAX_RETRY_AFTER = 900


def guess(client: httpx.Client, username: str, password: str = "wrong-guess",
          headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(LOGIN, json={"username": username, "password": password}, headers=headers)


def client_from(deployment: Deployment, source_address: str | None = None, connections: int = BURST) -> httpx.Client:
    """Open a client of ``deployment`` that connects from ``source_address`` and fails on any 5xx."""
    transport = httpx.HTTPTransport(local_address=source_address,
                                    limits=httpx.Limits(max_connections=connections))
    return new_client(deployment.base_url, transport=transport)


def in_parallel(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


@pytest.fixture(scope="module")
def guarded(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """Per-username limit 5, blocks of at least 120 s, so no block ends during a burst."""
    deployment = launch({"REFLEXBLUE_THROTTLE_USER_FAILURES": str(USER_LIMIT),
                         "REFLEXBLUE_THROTTLE_BASE_DELAY": str(LONG_DELAY)})
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def address_guarded(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """Per-address limit 10, blocks of at least 120 s, and no trusted proxy."""
    deployment = launch({"REFLEXBLUE_THROTTLE_ADDRESS_FAILURES": str(ADDRESS_LIMIT),
                         "REFLEXBLUE_THROTTLE_BASE_DELAY": str(LONG_DELAY)})
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def backing_off(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """Blocks of 1 s doubling to at most 2 s, so a test can wait for them to end."""
    deployment = launch({"REFLEXBLUE_THROTTLE_BASE_DELAY": str(SHORT_BASE_DELAY),
                         "REFLEXBLUE_THROTTLE_MAX_DELAY": str(SHORT_MAX_DELAY)})
    yield deployment
    deployment.stop()


# ---------------------------------------------------------------------------------------------
# Parallel bursts


def test_parallel_guesses_capped_at_limit(guarded: Deployment) -> None:
    user = guarded.seed.user()

    with client_from(guarded) as client:
        responses = in_parallel([lambda: guess(client, user.username)] * BURST)
        after_burst = guess(client, user.username, user.password)

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {401, 429}
    assert 1 <= statuses.count(401) <= USER_LIMIT
    assert after_burst.status_code == 429


def test_parallel_guesses_on_two_usernames(guarded: Deployment) -> None:
    first, second = guarded.seed.user(), guarded.seed.user()

    with client_from(guarded, connections=2 * BURST) as client:
        calls = [lambda: guess(client, first.username), lambda: guess(client, second.username)] * BURST
        responses = in_parallel(calls)

    per_username: dict[str, list[int]] = {first.username: [], second.username: []}
    for response in responses:
        per_username[json.loads(response.request.content)["username"]].append(response.status_code)
    for username, statuses in per_username.items():
        assert len(statuses) == BURST
        assert set(statuses) <= {401, 429}, username
        assert 1 <= statuses.count(401) <= USER_LIMIT, username


@pytest.mark.parametrize("position", ["first", "last"])
def test_parallel_right_password_capped(guarded: Deployment, position: str) -> None:
    # A burst of wrong passwords hides the right one. At most 5 checks of one username run at once,
    # and a failure counts only when its check ends, so at most 4 failures are counted before the
    # right password's check ends. Its success then resets the username's count, and 5 more
    # failures start the block. So at most 2 * 5 - 1 = 9 responses are 401.
    user = guarded.seed.user()
    wrong = ["wrong-guess"] * (BURST - 1)
    passwords = [user.password] + wrong if position == "first" else wrong + [user.password]

    with client_from(guarded) as client:
        responses = in_parallel([lambda password=password: guess(client, user.username, password)
                                 for password in passwords])

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 401, 429}
    assert statuses.count(401) <= 2 * USER_LIMIT - 1
    assert statuses.count(200) <= 1


def test_parallel_guesses_per_address_capped(address_guarded: Deployment) -> None:
    with client_from(address_guarded, "127.0.0.2") as client:
        responses = in_parallel([lambda: guess(client, unique_name("nobody")) for _ in range(BURST)])

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {401, 429}
    assert 1 <= statuses.count(401) <= ADDRESS_LIMIT


# ---------------------------------------------------------------------------------------------
# Spoofed client addresses


SPOOFING_HEADERS: list[dict[str, str]] = [
    {"X-Forwarded-For": "203.0.113.7"},
    {"X-Forwarded-For": "203.0.113.8, 198.51.100.9"},
    {"X-Forwarded-For": "127.0.0.1"},
    {"X-Forwarded-For": "unknown"},
    {"X-Forwarded-For": "::1"},
    {"X-Forwarded-For": "2001:db8::7"},
    {"X-Forwarded-For": ", ".join(f"198.51.100.{index % 250}" for index in range(1000))},
    {"X-Real-IP": "203.0.113.10"},
    {"Forwarded": "for=203.0.113.11"},
    {"Forwarded": 'for="[2001:db8::11]";proto=https'},
    {"True-Client-IP": "203.0.113.12"},
    {"CF-Connecting-IP": "203.0.113.13"},
    {"X-Client-IP": "203.0.113.14"},
    {"X-Cluster-Client-IP": "203.0.113.15"},
    {"Fastly-Client-IP": "203.0.113.16"},
    {"X-Originating-IP": "203.0.113.17"},
    {"X-Forwarded-For": "203.0.113.18", "X-Real-IP": "203.0.113.18", "Forwarded": "for=203.0.113.18"},
]


def test_spoofed_address_shares_bucket(address_guarded: Deployment) -> None:
    # Every attempt claims another client address; all of them count against the one real address.
    with client_from(address_guarded, "127.0.0.3") as client:
        statuses = [guess(client, unique_name("nobody"), headers=SPOOFING_HEADERS[index]).status_code
                    for index in range(ADDRESS_LIMIT + 1)]

    assert statuses == [401] * ADDRESS_LIMIT + [429]


def test_spoofed_address_keeps_block(address_guarded: Deployment) -> None:
    user = address_guarded.seed.user()
    with client_from(address_guarded, "127.0.0.4") as client:
        for _ in range(ADDRESS_LIMIT):
            guess(client, unique_name("nobody"))
        spoofed = [guess(client, unique_name("nobody"), headers=headers) for headers in SPOOFING_HEADERS]
        right_password = guess(client, user.username, user.password, headers=SPOOFING_HEADERS[0])
    with client_from(address_guarded, "127.0.0.5") as other_client:
        other_address = guess(other_client, user.username, user.password)

    assert [response.status_code for response in spoofed] == [429] * len(SPOOFING_HEADERS)
    assert all(1 <= int(response.headers["Retry-After"]) <= LONG_DELAY for response in spoofed)
    assert right_password.status_code == 429
    assert other_address.status_code == 200


# ---------------------------------------------------------------------------------------------
# Back-off


def wait_out(response: httpx.Response) -> None:
    time.sleep(int(response.headers["Retry-After"]) + 0.3)


def test_one_guess_per_expired_block(backing_off: Deployment) -> None:
    user: ApiUser = backing_off.seed.user()
    retry_afters: list[int] = []

    with client_from(backing_off) as client:
        first_round = [guess(client, user.username).status_code for _ in range(USER_LIMIT)]
        blocked = guess(client, user.username)
        retry_afters.append(int(blocked.headers["Retry-After"]))
        wait_out(blocked)

        after_first_block = [guess(client, user.username) for _ in range(2)]
        retry_afters.append(int(after_first_block[1].headers["Retry-After"]))
        wait_out(after_first_block[1])

        burst = in_parallel([lambda: guess(client, user.username)] * 10)
        retry_afters.extend(int(response.headers["Retry-After"]) for response in burst
                            if response.status_code == 429)

    assert first_round == [401] * USER_LIMIT
    assert blocked.status_code == 429
    assert [response.status_code for response in after_first_block] == [401, 429]
    assert sorted(response.status_code for response in burst) == [401] + [429] * 9
    assert retry_afters[0] <= SHORT_BASE_DELAY
    assert retry_afters[1] == SHORT_MAX_DELAY  # doubled from 1 s, capped at 2 s
    assert max(retry_afters) <= SHORT_MAX_DELAY


def test_blocked_right_password_after_expiry(backing_off: Deployment) -> None:
    # After a block ends, the one allowed attempt may be the right password: it logs in.
    user = backing_off.seed.user()

    with client_from(backing_off) as client:
        for _ in range(USER_LIMIT):
            guess(client, user.username)
        blocked = guess(client, user.username, user.password)
        wait_out(blocked)
        unblocked = guess(client, user.username, user.password)

    assert blocked.status_code == 429
    assert unblocked.status_code == 200


# ---------------------------------------------------------------------------------------------
# Retry-After ceiling on the shared server, whose delays are the defaults (30 s doubling to 900 s)


def set_counter(deployment: Deployment, username: str, **values: float) -> None:
    """Write the throttle row of ``username`` as another instance of the deployment would have left it."""
    with deployment.client() as client:
        guess(client, username)  # creates the row
    key = _storage_key("user", normalise_username(username))
    with deployment.seed.database.write() as session:
        changed = session.execute(update(ThrottleCounter).where(ThrottleCounter.key == key).values(**values))
        assert changed.rowcount == 1


def test_retry_after_reaches_900_only(deployment: Deployment, http: httpx.Client) -> None:
    # 40 failures in a row ask for 30 * 2**35 s; the block and Retry-After stop at 900 s.
    username = unique_name("persistent")
    set_counter(deployment, username, failures=40, blocked_until=0.0, last_failure_at=time.time())

    counted = guess(http, username)
    throttled = guess(http, username)

    assert counted.status_code == 401
    assert throttled.status_code == 429
    assert MAX_RETRY_AFTER - 2 <= int(throttled.headers["Retry-After"]) <= MAX_RETRY_AFTER


def test_retry_after_capped_for_future_block(deployment: Deployment, http: httpx.Client) -> None:
    # Every instance shares the counters, and blocked_until is that instance's clock plus the delay.
    # A block written by an instance whose clock ran two hours ahead must still end within 900 s.
    username = unique_name("skewed")
    set_counter(deployment, username, failures=USER_LIMIT, blocked_until=time.time() + 7200,
                last_failure_at=time.time())

    throttled = guess(http, username)

    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) <= MAX_RETRY_AFTER
