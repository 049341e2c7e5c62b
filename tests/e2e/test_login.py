"""POST /api/security/login against the shared server: success, refusals and malformed bodies."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator

import httpx
import pytest

from .support import ApiUser, Deployment

LOGIN = "/api/security/login"
PROBLEM_JSON = "application/problem+json"
#: A password that appears nowhere else, so a response that echoes it is easy to spot.
SECRET = "Zebra-Quartz-7731-Do-Not-Echo"


def problem_type(response: httpx.Response) -> str:
    return str(response.json()["type"])


def headers_without_date(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((name.lower(), value) for name, value in response.headers.items() if name.lower() != "date")


@pytest.fixture
def user(make_user: Callable[..., ApiUser], acme: str) -> ApiUser:
    return make_user({acme: ["administration.access", "v2.articles"]})


def test_login_returns_only_token(client: httpx.Client, user: ApiUser) -> None:
    response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 200
    assert list(response.json()) == ["token"]
    assert isinstance(response.json()["token"], str)


def test_login_response_is_not_cached(client: httpx.Client, user: ApiUser) -> None:
    response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"


def test_login_token_works_on_v2(client: httpx.Client, user: ApiUser, acme: str) -> None:
    token = client.post(LOGIN, json={"username": user.username, "password": user.password}).json()["token"]

    response = client.get(f"/api/v2/administrations/{acme}/articles", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200


def test_login_unknown_user_is_401(client: httpx.Client) -> None:
    response = client.post(LOGIN, json={"username": "nobody-at-all-1", "password": SECRET})

    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_JSON
    assert problem_type(response) == "urn:reflexblue:problem:invalid-credentials"


def test_login_wrong_password_matches_unknown_user(client: httpx.Client, user: ApiUser) -> None:
    wrong_password = client.post(LOGIN, json={"username": user.username, "password": SECRET})
    unknown_user = client.post(LOGIN, json={"username": "nobody-at-all-2", "password": SECRET})

    assert wrong_password.status_code == 401
    assert unknown_user.status_code == 401
    assert wrong_password.content == unknown_user.content
    assert headers_without_date(wrong_password) == headers_without_date(unknown_user)


def test_login_username_ignores_case_and_spaces(client: httpx.Client, make_user: Callable[..., ApiUser]) -> None:
    user = make_user(username="shop-api-casefold")

    response = client.post(LOGIN, json={"username": "  SHOP-API-CASEFOLD ", "password": user.password})

    assert response.status_code == 200


def test_login_username_is_nfkc_normalised(client: httpx.Client, make_user: Callable[..., ApiUser]) -> None:
    user = make_user(username="shop-api-fullwidth")
    fullwidth = "".join(chr(ord(char) + 0xFEE0) if char.isalpha() else char for char in user.username)

    response = client.post(LOGIN, json={"username": fullwidth, "password": user.password})

    assert fullwidth != user.username
    assert response.status_code == 200


def test_login_password_is_not_trimmed(client: httpx.Client, user: ApiUser) -> None:
    response = client.post(LOGIN, json={"username": user.username, "password": user.password + " "})

    assert response.status_code == 401


def test_login_password_is_case_sensitive(client: httpx.Client, user: ApiUser) -> None:
    response = client.post(LOGIN, json={"username": user.username, "password": user.password.swapcase()})

    assert response.status_code == 401


def test_login_inactive_user_is_403(client: httpx.Client, make_user: Callable[..., ApiUser]) -> None:
    user = make_user(active=False)

    response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_JSON
    assert problem_type(response) == "urn:reflexblue:problem:user-inactive"
    assert "token" not in response.json()


def test_login_user_without_seat_is_403(client: httpx.Client, make_user: Callable[..., ApiUser]) -> None:
    user = make_user(external_seat=False)

    response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_JSON
    assert problem_type(response) == "urn:reflexblue:problem:no-external-seat"
    assert "token" not in response.json()


def test_login_inactive_wrong_password_is_401(client: httpx.Client, make_user: Callable[..., ApiUser]) -> None:
    user = make_user(active=False)

    inactive = client.post(LOGIN, json={"username": user.username, "password": SECRET})
    unknown = client.post(LOGIN, json={"username": "nobody-at-all-3", "password": SECRET})

    assert inactive.status_code == 401
    assert inactive.content == unknown.content
    assert headers_without_date(inactive) == headers_without_date(unknown)


def test_login_seatless_wrong_password_is_401(client: httpx.Client, make_user: Callable[..., ApiUser]) -> None:
    user = make_user(external_seat=False)

    seatless = client.post(LOGIN, json={"username": user.username, "password": SECRET})
    unknown = client.post(LOGIN, json={"username": "nobody-at-all-4", "password": SECRET})

    assert seatless.status_code == 401
    assert seatless.content == unknown.content


# Each case: (request body, content type, expected status). Every body contains SECRET somewhere.
MALFORMED_BODIES = {
    "not-json": (f"username=shop&password={SECRET}".encode(), "application/json", 400),
    "truncated-json": (f'{{"username": "shop", "password": "{SECRET}"'.encode(), "application/json", 400),
    "invalid-utf8": (b'{"username": "shop\xff", "password": "' + SECRET.encode() + b'"}', "application/json", 400),
    "json-array": (json.dumps(["shop", SECRET]).encode(), "application/json", 422),
    "json-string": (json.dumps(SECRET).encode(), "application/json", 422),
    "missing-password": (json.dumps({"username": SECRET}).encode(), "application/json", 422),
    "missing-username": (json.dumps({"password": SECRET}).encode(), "application/json", 422),
    "null-password": (json.dumps({"username": SECRET, "password": None}).encode(), "application/json", 422),
    "number-password": (json.dumps({"username": SECRET, "password": 12345678}).encode(), "application/json", 422),
    "object-password": (json.dumps({"username": "shop", "password": {"value": SECRET}}).encode(),
                        "application/json", 422),
    "list-password": (json.dumps({"username": "shop", "password": [SECRET]}).encode(), "application/json", 422),
    "empty-password": (json.dumps({"username": SECRET, "password": ""}).encode(), "application/json", 422),
    "extra-member": (json.dumps({"username": "shop", "password": "x", "otp": SECRET}).encode(),
                     "application/json", 422),
    "text-plain": (json.dumps({"username": "shop", "password": SECRET}).encode(), "text/plain", 415),
    "form-encoded": (f"username=shop&password={SECRET}".encode(), "application/x-www-form-urlencoded", 415),
    "oversized": (json.dumps({"username": "shop", "password": SECRET + "a" * 17 * 1024}).encode(),
                  "application/json", 413),
    "duplicate-username": (f'{{"username": "a", "username": "b", "password": "{SECRET}"}}'.encode(),
                           "application/json", 400),
    "deep-nesting": (b'{"username": "shop", "password": "' + SECRET.encode() + b'", "x": ' + b"[" * 5000
                     + b"]" * 5000 + b"}", "application/json", 400),
}


@pytest.fixture(params=sorted(MALFORMED_BODIES))
def malformed(request: pytest.FixtureRequest, client: httpx.Client) -> Iterator[tuple[httpx.Response, int]]:
    body, content_type, expected_status = MALFORMED_BODIES[request.param]
    assert SECRET.encode() in body
    yield client.post(LOGIN, content=body, headers={"Content-Type": content_type}), expected_status


def test_login_malformed_body_status(malformed: tuple[httpx.Response, int]) -> None:
    response, expected_status = malformed

    assert response.status_code == expected_status


def test_login_malformed_body_is_problem(malformed: tuple[httpx.Response, int]) -> None:
    response, expected_status = malformed

    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == response.status_code


def test_login_malformed_body_hides_values(malformed: tuple[httpx.Response, int]) -> None:
    response, _ = malformed

    assert SECRET not in response.text
    assert SECRET not in str(response.headers)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_login_other_methods_are_405(client: httpx.Client, method: str) -> None:
    response = client.request(method, LOGIN)

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_JSON


# -------------------------------------------------------------------------------------------------
# Password hashes under the default argon2id parameters (m=19456 KiB, t=2, p=1)

DEFAULT_PARAMETERS_PREFIX = "$argon2id$v=19$m=19456,t=2,p=1$"


@pytest.fixture(scope="module")
def default_argon2(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A server with the default argon2 parameters, while the seeder hashes with cheaper ones."""
    deployment = launch(fast_argon2=False)
    yield deployment
    deployment.stop()


def test_login_rehashes_to_default_parameters(default_argon2: Deployment) -> None:
    user = default_argon2.seed.user()
    assert not default_argon2.seed.password_hash(user.username).startswith(DEFAULT_PARAMETERS_PREFIX)

    default_argon2.login(user)

    assert default_argon2.seed.password_hash(user.username).startswith(DEFAULT_PARAMETERS_PREFIX)


def test_login_after_rehash_still_works(default_argon2: Deployment) -> None:
    user = default_argon2.seed.user()
    default_argon2.login(user)

    with default_argon2.client() as client:
        response = client.post(LOGIN, json={"username": user.username, "password": user.password})

    assert response.status_code == 200


def test_login_wrong_password_keeps_hash(default_argon2: Deployment) -> None:
    user = default_argon2.seed.user()
    before = default_argon2.seed.password_hash(user.username)

    with default_argon2.client() as client:
        response = client.post(LOGIN, json={"username": user.username, "password": SECRET})

    assert response.status_code == 401
    assert default_argon2.seed.password_hash(user.username) == before


def test_login_unknown_user_costs_a_hash(default_argon2: Deployment) -> None:
    # With the default parameters one argon2id verification took about 20 ms on the 2-core Xeon test machine,
    # so a server that skipped hashing for unknown usernames would reject them several times faster.
    user = default_argon2.seed.user()
    wrong_password_times = []
    unknown_user_times = []

    with default_argon2.client() as client:
        for attempt in range(4):
            response = client.post(LOGIN, json={"username": user.username, "password": SECRET})
            assert response.status_code == 401
            wrong_password_times.append(response.elapsed.total_seconds())
            response = client.post(LOGIN, json={"username": f"nobody-timed-{attempt}", "password": SECRET})
            assert response.status_code == 401
            unknown_user_times.append(response.elapsed.total_seconds())

    assert statistics.median(unknown_user_times) > 0.5 * statistics.median(wrong_password_times)


# Raw JSON texts, so lone surrogates and escapes reach the server exactly as written.
ODD_CREDENTIALS = {
    "nul-in-username": '{"username": "shop\\u0000api", "password": "some-password"}',
    "lone-surrogate-username": '{"username": "shop\\ud800api", "password": "some-password"}',
    "lone-surrogate-password": '{"username": "shop-api", "password": "pass\\udfffword"}',
    "nul-in-password": '{"username": "shop-api", "password": "pass\\u0000word"}',
    "control-characters": '{"username": "\\u001b[31mshop", "password": "\\u0007bell"}',
    "right-to-left-override": '{"username": "\\u202eipa-pohs", "password": "some-password"}',
    "only-spaces-username": '{"username": "   ", "password": "some-password"}',
    "long-username": json.dumps({"username": "u" * 151, "password": "some-password"}),
    "long-password": json.dumps({"username": "shop-api", "password": "p" * 1025}),
}


@pytest.mark.parametrize("case", sorted(ODD_CREDENTIALS))
def test_login_odd_credentials_are_refused(client: httpx.Client, case: str) -> None:
    response = client.post(LOGIN, content=ODD_CREDENTIALS[case].encode("utf-8"),
                           headers={"Content-Type": "application/json"})

    assert response.status_code in (401, 422)
    assert response.headers["content-type"] == PROBLEM_JSON


def test_login_lone_surrogate_password_existing_user(client: httpx.Client, user: ApiUser) -> None:
    body = json.dumps({"username": user.username, "password": "pass\ud800word"})

    response = client.post(LOGIN, content=body.encode("ascii"), headers={"Content-Type": "application/json"})

    assert response.status_code in (401, 422)
