"""POST /api/security/logout: a no-op by default, a revocation with REFLEXBLUE_REVOKE_ON_LOGOUT=true."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from .support import ApiUser, Deployment, poll, start_server

LOGOUT = "/api/security/logout"
REVOKE_ON_LOGOUT = {"REFLEXBLUE_REVOKE_ON_LOGOUT": "true"}


@pytest.fixture
def articles_user(make_user: Callable[..., ApiUser], acme: str) -> ApiUser:
    return make_user({acme: ["administration.access", "v2.articles"]})


@pytest.fixture(scope="module")
def revoking(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    deployment = launch(REVOKE_ON_LOGOUT)
    deployment.seed.administration("acme", "Acme Wholesale")
    yield deployment
    deployment.stop()


def articles_status(client: httpx.Client, token: str) -> httpx.Response:
    return client.get("/api/v2/administrations/acme/articles", headers={"Authorization": f"Bearer {token}"})


def test_logout_without_token_is_204(client: httpx.Client) -> None:
    response = client.post(LOGOUT)

    assert response.status_code == 204


def test_logout_with_token_is_204(client: httpx.Client, articles_user: ApiUser,
                                  login: Callable[[ApiUser], str]) -> None:
    token = login(articles_user)

    response = client.post(LOGOUT, headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 204


@pytest.mark.parametrize("authorization", ["Bearer garbage", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ∞"])
def test_logout_with_garbage_is_204(client: httpx.Client, authorization: str) -> None:
    response = client.post(LOGOUT, headers={"Authorization": authorization.encode("utf-8")})

    assert response.status_code == 204


def test_logout_keeps_token_by_default(client: httpx.Client, articles_user: ApiUser, acme: str,
                                       login: Callable[[ApiUser], str]) -> None:
    token = login(articles_user)
    assert client.post(LOGOUT, headers={"Authorization": f"Bearer {token}"}).status_code == 204

    response = articles_status(client, token)

    assert response.status_code == 200


def test_revoking_logout_is_204(revoking: Deployment) -> None:
    user = revoking.seed.user({"acme": ["administration.access", "v2.articles"]})
    token = revoking.login(user)

    with revoking.client() as client:
        response = client.post(LOGOUT, headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 204


def test_revoking_logout_rejects_token(revoking: Deployment) -> None:
    user = revoking.seed.user({"acme": ["administration.access", "v2.articles"]})
    token = revoking.login(user)

    with revoking.client() as client:
        assert articles_status(client, token).status_code == 200
        client.post(LOGOUT, headers={"Authorization": f"Bearer {token}"})
        response = articles_status(client, token)

    assert response.status_code == 401
    assert response.json()["reason"] == "revoked"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_revoking_logout_spares_other_tokens(revoking: Deployment) -> None:
    user = revoking.seed.user({"acme": ["administration.access", "v2.articles"]})
    logged_out = revoking.login(user)
    other = revoking.login(user)

    with revoking.client() as client:
        client.post(LOGOUT, headers={"Authorization": f"Bearer {logged_out}"})
        response = articles_status(client, other)

    assert response.status_code == 200


def test_revoking_logout_reaches_other_instance(revoking: Deployment) -> None:
    second = start_server(revoking.server.env)
    try:
        user = revoking.seed.user({"acme": ["administration.access", "v2.articles"]})
        token = revoking.login(user)
        with second.client() as other_instance:
            assert articles_status(other_instance, token).status_code == 200
            with revoking.client() as client:
                client.post(LOGOUT, headers={"Authorization": f"Bearer {token}"})
            response, _ = poll(lambda: articles_status(other_instance, token),
                               lambda response: response.status_code == 401, timeout=1.5)
    finally:
        second.stop()

    assert response.status_code == 401
    assert response.json()["reason"] == "revoked"


def test_revoking_logout_survives_restart(launch: Callable[..., Deployment]) -> None:
    deployment = launch(REVOKE_ON_LOGOUT)
    deployment.seed.administration("acme", "Acme Wholesale")
    user = deployment.seed.user({"acme": ["administration.access", "v2.articles"]})
    token = deployment.login(user)
    with deployment.client() as client:
        client.post(LOGOUT, headers={"Authorization": f"Bearer {token}"})

    deployment.server.stop()
    deployment.server = start_server(deployment.server.env)
    with deployment.client() as client:
        response = articles_status(client, token)
    deployment.stop()

    assert response.status_code == 401
    assert response.json()["reason"] == "revoked"
