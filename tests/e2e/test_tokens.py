"""Issued tokens: header, claims, JWKS, expiry, and how the bearer token may be sent."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from .support import ApiUser, Deployment, poll, token_header, token_payload

REQUIRED_CLAIMS = {"iss", "aud", "sub", "iat", "nbf", "exp", "jti"}


@pytest.fixture
def user(make_user: Callable[..., ApiUser], acme: str) -> ApiUser:
    return make_user({acme: ["administration.access", "v2.articles"]})


@pytest.fixture
def token(user: ApiUser, login: Callable[[ApiUser], str]) -> str:
    return login(user)


@pytest.fixture(scope="module")
def short_lived(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """A server whose tokens live 2 s, with no leeway."""
    deployment = launch({"REFLEXBLUE_TOKEN_LIFETIME": "2", "REFLEXBLUE_TOKEN_LEEWAY": "0"})
    deployment.seed.administration("acme", "Acme Wholesale")
    yield deployment
    deployment.stop()


def articles(client: httpx.Client, acme: str, **options: object) -> httpx.Response:
    return client.get(f"/api/v2/administrations/{acme}/articles", **options)  # type: ignore[arg-type]


def test_token_header_names_eddsa(token: str) -> None:
    header = token_header(token)

    assert header["alg"] == "EdDSA"
    assert header["typ"] == "JWT"
    assert isinstance(header.get("kid"), str)


def test_token_kid_is_in_jwks(client: httpx.Client, token: str) -> None:
    response = client.get("/.well-known/jwks.json")
    kids = [key["kid"] for key in response.json()["keys"]]

    assert response.status_code == 200
    assert token_header(token)["kid"] in kids


def test_jwks_publishes_public_keys_only(client: httpx.Client) -> None:
    keys = client.get("/.well-known/jwks.json").json()["keys"]

    assert keys
    for key in keys:
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert "d" not in key


def test_token_has_required_claims(token: str) -> None:
    assert REQUIRED_CLAIMS <= token_payload(token).keys()


def test_token_subject_is_user_id(token: str, user: ApiUser) -> None:
    assert token_payload(token)["sub"] == user.id


def test_token_lifetime_defaults_to_day(token: str) -> None:
    payload = token_payload(token)

    assert payload["exp"] - payload["iat"] == 86_400


def test_token_issued_now(token: str) -> None:
    payload = token_payload(token)

    assert abs(payload["iat"] - time.time()) < 60
    assert payload["nbf"] <= payload["iat"] + 1


def test_token_ids_are_unique(user: ApiUser, login: Callable[[ApiUser], str]) -> None:
    first = token_payload(login(user))
    second = token_payload(login(user))

    assert first["jti"] != second["jti"]


def test_token_audience_is_configured_default(token: str) -> None:
    assert token_payload(token)["aud"] == "reflexblue-external-api"


def test_token_works_until_expiry(short_lived: Deployment) -> None:
    user = short_lived.seed.user({"acme": ["administration.access", "v2.articles"]})
    token = short_lived.login(user)

    with short_lived.client(token) as client:
        response = articles(client, "acme")

    assert response.status_code == 200


def test_token_lifetime_follows_setting(short_lived: Deployment) -> None:
    user = short_lived.seed.user()
    payload = token_payload(short_lived.login(user))

    assert payload["exp"] - payload["iat"] == 2


def test_token_expired_is_401(short_lived: Deployment) -> None:
    user = short_lived.seed.user({"acme": ["administration.access", "v2.articles"]})
    token = short_lived.login(user)
    with short_lived.client(token) as client:
        assert articles(client, "acme").status_code == 200
        time.sleep(max(0.0, token_payload(token)["exp"] + 1 - time.time()))

        response = articles(client, "acme")

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["reason"] == "expired"


def test_missing_token_challenge_has_no_error(client: httpx.Client, acme: str) -> None:
    response = articles(client, acme)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="reflexblue"'
    assert response.json()["reason"] == "missing"
    assert response.headers["content-type"] == "application/problem+json"


def test_invalid_token_challenge_names_error(client: httpx.Client, acme: str) -> None:
    response = articles(client, acme, headers={"Authorization": "Bearer not-a-token"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="reflexblue", error="invalid_token"')


def test_two_authorization_headers_are_400(client: httpx.Client, token: str, acme: str) -> None:
    response = articles(client, acme, headers=[("Authorization", f"Bearer {token}"),
                                               ("Authorization", f"Bearer {token}")])

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_two_authorization_headers_raw_are_400(deployment: Deployment, token: str, acme: str) -> None:
    request = (
        f"GET /api/v2/administrations/{acme}/articles HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{deployment.server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Authorization: Bearer other\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")

    with socket.create_connection(("127.0.0.1", deployment.server.port), timeout=10) as connection:
        connection.sendall(request)
        status_line = connection.makefile("rb").readline()

    assert status_line.split()[1] == b"400"


@pytest.mark.parametrize("parameter", ["access_token", "token", "jwt"])
def test_token_in_query_is_ignored(client: httpx.Client, token: str, acme: str, parameter: str) -> None:
    response = articles(client, acme, params={parameter: token})

    assert response.status_code == 401
    assert response.json()["reason"] == "missing"


@pytest.mark.parametrize("cookie", ["access_token", "token", "Authorization"])
def test_token_in_cookie_is_ignored(client: httpx.Client, token: str, acme: str, cookie: str) -> None:
    response = articles(client, acme, headers={"Cookie": f"{cookie}={token}"})

    assert response.status_code == 401
    assert response.json()["reason"] == "missing"


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(client: httpx.Client, token: str, acme: str, scheme: str) -> None:
    response = articles(client, acme, headers={"Authorization": f"{scheme} {token}"})

    assert response.status_code == 200


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT"])
def test_other_scheme_is_missing_token(client: httpx.Client, token: str, acme: str, scheme: str) -> None:
    response = articles(client, acme, headers={"Authorization": f"{scheme} {token}"})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="reflexblue"'


# -------------------------------------------------------------------------------------------------
# Key rotation, on a deployment of its own so the shared deployment keeps its key


@pytest.fixture(scope="module")
def rotating(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    deployment = launch()
    deployment.seed.administration("acme", "Acme Wholesale")
    yield deployment
    deployment.stop()


@pytest.fixture
def rotated(rotating: Deployment) -> tuple[str, str]:
    """Rotate the signing key after a login and return the token signed with the old key and the new kid."""
    user = rotating.seed.user({"acme": ["administration.access", "v2.articles"]})
    old_token = rotating.login(user)
    return old_token, rotating.seed.rotate_key()


def test_rotation_signs_with_new_key(rotating: Deployment, rotated: tuple[str, str]) -> None:
    # Only logins reach the server here, and the new key must still be in use within one second.
    _, new_kid = rotated
    user = rotating.seed.user()
    deadline = time.monotonic() + 1.5
    kid = token_header(rotating.login(user))["kid"]
    while kid != new_kid and time.monotonic() < deadline:
        time.sleep(0.05)
        kid = token_header(rotating.login(user))["kid"]

    assert kid == new_kid


def test_rotation_keeps_old_tokens_valid(rotating: Deployment, rotated: tuple[str, str]) -> None:
    old_token, _ = rotated
    time.sleep(1.0)  # past the access refresh interval, so the server has loaded the new key set

    with rotating.client(old_token) as client:
        response = articles(client, "acme")

    assert response.status_code == 200


def test_rotation_publishes_both_keys(rotating: Deployment, rotated: tuple[str, str]) -> None:
    old_token, new_kid = rotated

    with rotating.client() as client:
        response, _ = poll(lambda: client.get("/.well-known/jwks.json"), lambda response: new_kid in response.text,
                           timeout=1.5)
    kids = [key["kid"] for key in response.json()["keys"]]

    assert new_kid in kids
    assert token_header(old_token)["kid"] in kids


def test_retired_key_rejects_its_tokens(rotating: Deployment, rotated: tuple[str, str]) -> None:
    old_token, _ = rotated
    rotating.seed.retire_key(token_header(old_token)["kid"])

    with rotating.client(old_token) as client:
        response, _ = poll(lambda: articles(client, "acme"), lambda response: response.status_code == 401,
                           timeout=1.5)

    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_key"


def test_login_after_retirement_is_usable(rotating: Deployment, rotated: tuple[str, str]) -> None:
    # An operator rotates and at once retires a compromised key, and meanwhile only logins reach the server.
    old_token, _ = rotated
    rotating.seed.retire_key(token_header(old_token)["kid"])
    time.sleep(1.2)
    user = rotating.seed.user({"acme": ["administration.access", "v2.articles"]})
    token = rotating.login(user)

    with rotating.client(token) as client:
        response = articles(client, "acme")

    assert response.status_code == 200
