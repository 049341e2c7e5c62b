"""Login throttling per username and per client address, on servers with short back-off delays."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .support import ApiUser, Deployment, unique_name

LOGIN = "/api/security/login"
WRONG_PASSWORD = "wrong-password-for-throttling"
USER_LIMIT = 5
BASE_DELAY = 2
MAX_DELAY = 4
ADDRESS_LIMIT = 8
SHORT_DELAYS = {"REFLEXBLUE_THROTTLE_BASE_DELAY": str(BASE_DELAY), "REFLEXBLUE_THROTTLE_MAX_DELAY": str(MAX_DELAY)}


@pytest.fixture(scope="module")
def throttled(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A server with 2-4 s back-off and a high per-address limit, so only usernames get throttled."""
    deployment = launch(SHORT_DELAYS)
    yield deployment
    deployment.stop()


@pytest.fixture
def address_throttled(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A server of its own per test, whose per-address limit is 8 failures."""
    deployment = launch({**SHORT_DELAYS, "REFLEXBLUE_THROTTLE_ADDRESS_FAILURES": str(ADDRESS_LIMIT)})
    yield deployment
    deployment.stop()


@pytest.fixture
def client(throttled: Deployment) -> Iterator[httpx.Client]:
    with throttled.client() as opened:
        yield opened


def fail_logins(client: httpx.Client, username: str, count: int) -> list[httpx.Response]:
    return [client.post(LOGIN, json={"username": username, "password": WRONG_PASSWORD}) for _ in range(count)]


def test_throttle_allows_five_failures(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()

    responses = fail_logins(client, user.username, USER_LIMIT)

    assert [response.status_code for response in responses] == [401] * USER_LIMIT


def test_throttle_rejects_sixth_failure(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()

    responses = fail_logins(client, user.username, USER_LIMIT + 1)

    assert responses[-1].status_code == 429
    assert responses[-1].headers["content-type"] == "application/problem+json"


def test_throttle_rejects_right_password_while_blocked(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()
    fail_logins(client, user.username, USER_LIMIT)

    response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 429
    assert "token" not in response.text


def test_throttle_retry_after_is_bounded(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()

    throttled_response = fail_logins(client, user.username, USER_LIMIT + 1)[-1]
    retry_after = throttled_response.headers.get("Retry-After", "")

    assert throttled_response.status_code == 429
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 900
    assert int(retry_after) <= MAX_DELAY


def test_throttle_unknown_user_same_sequence(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()

    existing = fail_logins(client, user.username, USER_LIMIT + 2)
    unknown = fail_logins(client, unique_name("nobody"), USER_LIMIT + 2)

    assert [response.status_code for response in unknown] == [response.status_code for response in existing]
    assert unknown[-1].headers.get("Retry-After") == existing[-1].headers.get("Retry-After")
    assert unknown[-1].content == existing[-1].content


def test_throttle_ends_after_retry_after(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()
    retry_after = int(fail_logins(client, user.username, USER_LIMIT + 1)[-1].headers["Retry-After"])

    time.sleep(retry_after + 0.2)
    response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 200


def test_throttle_success_resets_count(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()
    retry_after = int(fail_logins(client, user.username, USER_LIMIT + 1)[-1].headers["Retry-After"])
    time.sleep(retry_after + 0.2)
    assert client.post(LOGIN, json={"username": user.username, "password": user.password}).status_code == 200

    responses = fail_logins(client, user.username, USER_LIMIT + 1)

    assert [response.status_code for response in responses] == [401] * USER_LIMIT + [429]


def test_throttle_success_before_limit_resets(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()
    fail_logins(client, user.username, USER_LIMIT - 1)
    assert client.post(LOGIN, json={"username": user.username, "password": user.password}).status_code == 200

    responses = fail_logins(client, user.username, USER_LIMIT)

    assert [response.status_code for response in responses] == [401] * USER_LIMIT


def test_throttle_counts_username_case_insensitively(client: httpx.Client, throttled: Deployment) -> None:
    user = throttled.seed.user()
    spellings = [user.username, user.username.upper(), f" {user.username} ", user.username.title(),
                 user.username.upper(), user.username]

    statuses = [client.post(LOGIN, json={"username": spelling, "password": WRONG_PASSWORD}).status_code
                for spelling in spellings]

    assert statuses == [401] * USER_LIMIT + [429]


def test_throttle_parallel_guesses_capped(throttled: Deployment) -> None:
    user: ApiUser = throttled.seed.user()

    with throttled.client(limits=httpx.Limits(max_connections=30)) as client:
        with ThreadPoolExecutor(max_workers=30) as pool:
            statuses = list(pool.map(lambda _: fail_logins(client, user.username, 1)[0].status_code, range(30)))

    assert statuses.count(401) <= USER_LIMIT
    assert statuses.count(401) + statuses.count(429) == 30


def test_parallel_right_passwords_succeed(throttled: Deployment) -> None:
    # Only 5 checks of one username run at once, so the other logins wait for a free slot instead of getting 429.
    user = throttled.seed.user()
    credentials = {"username": user.username, "password": user.password}

    with throttled.client(limits=httpx.Limits(max_connections=20)) as client, ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: client.post(LOGIN, json=credentials).status_code, range(20)))

    assert statuses == [200] * 20


def test_throttle_other_user_unaffected(client: httpx.Client, throttled: Deployment) -> None:
    blocked = throttled.seed.user()
    other = throttled.seed.user()
    fail_logins(client, blocked.username, USER_LIMIT + 1)

    response = client.post(LOGIN, json={"username": other.username, "password": other.password})

    assert response.status_code == 200


def test_address_throttle_spans_usernames(address_throttled: Deployment) -> None:
    with address_throttled.client() as client:
        statuses = [fail_logins(client, unique_name("nobody"), 1)[0].status_code for _ in range(ADDRESS_LIMIT + 1)]

    assert statuses[:ADDRESS_LIMIT] == [401] * ADDRESS_LIMIT
    assert statuses[ADDRESS_LIMIT] == 429


def test_address_throttle_blocks_real_user_too(address_throttled: Deployment) -> None:
    user = address_throttled.seed.user()

    with address_throttled.client() as client:
        for _ in range(ADDRESS_LIMIT):
            fail_logins(client, unique_name("nobody"), 1)
        response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= MAX_DELAY


def test_address_block_end_allows_logins(address_throttled: Deployment) -> None:
    # After the block the address keeps its failures, but a success does not count as one, so it starts no new block.
    user = address_throttled.seed.user()
    credentials = {"username": user.username, "password": user.password}

    with address_throttled.client() as client:
        failed = [fail_logins(client, unique_name("nobody"), 1)[0] for _ in range(ADDRESS_LIMIT + 1)]
        blocked = failed[-1]
        time.sleep(int(blocked.headers["Retry-After"]) + 0.2)
        first = client.post(LOGIN, json=credentials)
        second = client.post(LOGIN, json=credentials)

    assert [response.status_code for response in failed[:ADDRESS_LIMIT]] == [401] * ADDRESS_LIMIT
    assert blocked.status_code == 429
    assert first.status_code == 200
    assert second.status_code == 200


def test_address_throttle_ignores_forwarded_for(address_throttled: Deployment) -> None:
    # No trusted proxy is configured, so X-Forwarded-For must not change the client address.
    with address_throttled.client() as client:
        statuses = [
            client.post(LOGIN, json={"username": unique_name("nobody"), "password": WRONG_PASSWORD},
                        headers={"X-Forwarded-For": f"198.51.100.{attempt}"}).status_code
            for attempt in range(ADDRESS_LIMIT + 1)
        ]

    assert statuses[ADDRESS_LIMIT] == 429


@pytest.fixture
def behind_proxy(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A server that trusts X-Forwarded-For from 127.0.0.1, with a per-address limit of 8 failures."""
    deployment = launch({**SHORT_DELAYS, "REFLEXBLUE_THROTTLE_ADDRESS_FAILURES": str(ADDRESS_LIMIT),
                         "REFLEXBLUE_TRUSTED_PROXIES": "127.0.0.1"})
    yield deployment
    deployment.stop()


def fail_from(client: httpx.Client, forwarded_for: str) -> int:
    response = client.post(LOGIN, json={"username": unique_name("nobody"), "password": WRONG_PASSWORD},
                           headers={"X-Forwarded-For": forwarded_for})
    return response.status_code


def test_trusted_proxy_throttles_client_address(behind_proxy: Deployment) -> None:
    with behind_proxy.client() as client:
        statuses = [fail_from(client, "198.51.100.1") for _ in range(ADDRESS_LIMIT + 1)]
        other_client = fail_from(client, "198.51.100.2")

    assert statuses[:ADDRESS_LIMIT] == [401] * ADDRESS_LIMIT
    assert statuses[ADDRESS_LIMIT] == 429
    assert other_client == 401


def test_trusted_proxy_ignores_prepended_hops(behind_proxy: Deployment) -> None:
    # The proxy appends the real client address last, so addresses the client wrote in front of it do not count.
    with behind_proxy.client() as client:
        for _ in range(ADDRESS_LIMIT):
            fail_from(client, "198.51.100.1")
        spoofed = fail_from(client, "203.0.113.9, 198.51.100.1")

    assert spoofed == 429
