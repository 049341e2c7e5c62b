"""Username enumeration through login responses: status, body and headers (apart from Date) must be
byte-identical whether or not the username exists, is active, has a seat, or is throttled.

Timing is measured elsewhere. tests/e2e/test_login.py compares single pairs; this module compares
every account state and spelling against an unknown username, malformed bodies, and throttled
responses including their Retry-After.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reflexblue.storage import repository
from tests.e2e.support import ApiUser, Deployment, unique_name

from .attacks import LOGIN, headers_without_date

#: Default per-username limit of the shared server: the sixth failure in a row is throttled.
USER_LIMIT = 5
#: Attempts at catching both throttled responses within the same second of Retry-After.
SAME_SECOND_ATTEMPTS = 5

Fingerprint = tuple[int, bytes, list[tuple[str, str]]]


def fingerprint(response: httpx.Response) -> Fingerprint:
    """Return everything an enumerating client can compare: status, exact body and headers but Date."""
    return response.status_code, response.content, headers_without_date(response.headers)


def attempt(http: httpx.Client, username: str, password: str) -> httpx.Response:
    return http.post(LOGIN, json={"username": username, "password": password})


def nobody() -> str:
    return unique_name("nobody")


def wrong_password() -> str:
    return f"wrong-{secrets.token_hex(8)}"


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


# ---------------------------------------------------------------------------------------------
# 401 for every account state


def account_cases(deployment: Deployment) -> dict[str, Callable[[], tuple[str, str]]]:
    """Per case, a function that prepares an account and returns the (username, password) to try."""
    seed = deployment.seed

    def deleted() -> tuple[str, str]:
        user = seed.user()
        with seed.database.write() as session:
            repository.delete_user(session, repository.get_user(session, user.username), actor="security-test")
        return user.username, user.password

    def password_changed() -> tuple[str, str]:
        user = seed.user()
        with seed.database.write() as session:
            repository.set_password_hash(session, repository.get_user(session, user.username),
                                         seed.passwords.hash(wrong_password()), actor="security-test")
        return user.username, user.password

    def existing(**options: Any) -> Callable[[], tuple[str, str]]:
        return lambda: (seed.user(**options).username, wrong_password())

    def spelled(spell: Callable[[str], str]) -> Callable[[], tuple[str, str]]:
        return lambda: (spell(seed.user().username), wrong_password())

    return {
        "wrong-password": existing(),
        "inactive": existing(active=False),
        "no-seat": existing(external_seat=False),
        "inactive-no-seat": existing(active=False, external_seat=False),
        "no-roles": existing(permissions={}),
        "uppercase-spelling": spelled(str.upper),
        "fullwidth-spelling": spelled(to_fullwidth),
        "padded-spelling": spelled(lambda name: f"  {name}  "),
        "deleted-with-old-password": deleted,
        "changed-with-old-password": password_changed,
    }


ACCOUNT_CASES = ["wrong-password", "inactive", "no-seat", "inactive-no-seat", "no-roles", "uppercase-spelling",
                 "fullwidth-spelling", "padded-spelling", "deleted-with-old-password", "changed-with-old-password"]


@pytest.mark.parametrize("case", ACCOUNT_CASES)
def test_failed_login_matches_unknown_user(http: httpx.Client, deployment: Deployment, case: str) -> None:
    username, password = account_cases(deployment)[case]()

    existing = attempt(http, username, password)
    unknown = attempt(http, nobody(), password)

    assert existing.status_code == 401
    assert fingerprint(existing) == fingerprint(unknown)


def test_invalid_credentials_body_names_nobody(http: httpx.Client, deployment: Deployment) -> None:
    user = deployment.seed.user()

    body = attempt(http, user.username, wrong_password()).json()

    assert set(body) == {"type", "title", "status", "detail", "instance"}
    assert user.username not in str(body)


@pytest.mark.parametrize("length", [1, 64, 1024])
def test_password_length_changes_nothing(http: httpx.Client, deployment: Deployment, length: int) -> None:
    user = deployment.seed.user()
    password = "p" * length

    assert fingerprint(attempt(http, user.username, password)) == fingerprint(attempt(http, nobody(), password))


# ---------------------------------------------------------------------------------------------
# Malformed bodies


MALFORMED_PASSWORDS: dict[str, object] = {
    "too-long": "p" * 1025,
    "empty": "",
    "number": 12345678,
    "null": None,
    "object": {"$ne": None},
}


@pytest.mark.parametrize("case", sorted(MALFORMED_PASSWORDS))
def test_malformed_login_ignores_username(http: httpx.Client, deployment: Deployment, case: str) -> None:
    user = deployment.seed.user()
    password = MALFORMED_PASSWORDS[case]

    existing = http.post(LOGIN, json={"username": user.username, "password": password})
    unknown = http.post(LOGIN, json={"username": nobody(), "password": password})

    assert existing.status_code in (400, 422)
    assert fingerprint(existing) == fingerprint(unknown)


# ---------------------------------------------------------------------------------------------
# Throttled responses


def throttled_pair(http: httpx.Client, existing: tuple[str, str],
                   unknown: tuple[str, str]) -> tuple[httpx.Response, httpx.Response]:
    """Throttle both usernames side by side, then return a pair of 429s with the same Retry-After.

    Retry-After counts down in whole seconds from when each block started. The two blocks start
    milliseconds apart, so a pair can straddle a second; up to SAME_SECOND_ATTEMPTS pairs are
    tried. A server that responded differently to the two would never produce an equal pair.
    """
    for _ in range(USER_LIMIT):
        attempt(http, existing[0], wrong_password())
        attempt(http, unknown[0], wrong_password())
    pair = (attempt(http, *existing), attempt(http, *unknown))
    for _ in range(SAME_SECOND_ATTEMPTS - 1):
        if pair[0].headers.get("Retry-After") == pair[1].headers.get("Retry-After"):
            break
        pair = (attempt(http, *existing), attempt(http, *unknown))
    return pair


def throttle_cases(deployment: Deployment) -> dict[str, Callable[[], tuple[str, str]]]:
    seed = deployment.seed

    def with_password(user: ApiUser) -> tuple[str, str]:
        return user.username, user.password

    return {
        "wrong-password": lambda: (seed.user().username, wrong_password()),
        "right-password": lambda: with_password(seed.user()),
        "inactive-right-password": lambda: with_password(seed.user(active=False)),
        "no-seat-right-password": lambda: with_password(seed.user(external_seat=False)),
    }


@pytest.mark.parametrize("case", ["wrong-password", "right-password", "inactive-right-password",
                                  "no-seat-right-password"])
def test_throttled_login_matches_unknown_user(http: httpx.Client, deployment: Deployment, case: str) -> None:
    # While the username is blocked, even the right password gets the response of an unknown name.
    existing = throttle_cases(deployment)[case]()

    throttled_existing, throttled_unknown = throttled_pair(http, existing, (nobody(), wrong_password()))

    assert throttled_existing.status_code == 429
    assert throttled_unknown.status_code == 429
    assert fingerprint(throttled_existing) == fingerprint(throttled_unknown)
    assert 1 <= int(throttled_existing.headers["Retry-After"]) <= 900


def test_throttled_body_has_no_username(http: httpx.Client, deployment: Deployment) -> None:
    user = deployment.seed.user()

    throttled, _ = throttled_pair(http, (user.username, wrong_password()), (nobody(), wrong_password()))

    assert throttled.status_code == 429
    assert set(throttled.json()) == {"type", "title", "status", "detail", "instance"}
    assert user.username not in throttled.text
