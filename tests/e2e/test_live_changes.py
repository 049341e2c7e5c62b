"""Access changes made by another process reach the running server within one second.

Each change runs in a separate Python process that opens the database and calls the repository,
as an operator's CLI would. The tests then poll the server for at most 1.5 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from .support import ApiUser, Deployment, change_in_other_process, poll, start_server

DEADLINE = 1.5


@dataclass
class LoggedIn:
    """A logged-in user whose token has just been shown to work."""

    user: ApiUser
    client: httpx.Client
    path: str


@pytest.fixture
def logged_in(deployment: Deployment, acme: str) -> Iterator[LoggedIn]:
    user = deployment.seed.user({acme: ["administration.access", "v2.articles", "v2.orders"]})
    path = f"/api/v2/administrations/{acme}/articles"
    with deployment.client(deployment.login(user)) as client:
        assert client.get(path).status_code == 200
        yield LoggedIn(user, client, path)


def change(deployment: Deployment, operation: str, **arguments: object) -> None:
    change_in_other_process(deployment.server.database_url, operation, **arguments)


def wait_for_status(logged_in: LoggedIn, status: int, path: str | None = None) -> tuple[httpx.Response, float]:
    return poll(lambda: logged_in.client.get(path or logged_in.path), lambda response: response.status_code == status,
                timeout=DEADLINE)


def test_deactivated_user_gets_401(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "deactivate", username=logged_in.user.username)

    response, elapsed = wait_for_status(logged_in, 401)

    assert response.status_code == 401
    assert response.json()["reason"] == "user_inactive"
    assert elapsed < DEADLINE


def test_deleted_user_gets_401(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "delete_user", username=logged_in.user.username)

    response, elapsed = wait_for_status(logged_in, 401)

    assert response.status_code == 401
    assert response.json()["reason"] == "unknown_user"
    assert elapsed < DEADLINE


def test_password_change_ends_token(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "set_password", username=logged_in.user.username, password="a-brand-new-password")

    response, elapsed = wait_for_status(logged_in, 401)

    assert response.status_code == 401
    assert response.json()["reason"] == "credentials_changed"
    assert elapsed < DEADLINE


def test_password_change_new_password_works(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "set_password", username=logged_in.user.username, password="a-brand-new-password")

    with deployment.client() as client:
        old = client.post("/api/security/login", json={"username": logged_in.user.username,
                                                       "password": logged_in.user.password})
        new = client.post("/api/security/login", json={"username": logged_in.user.username,
                                                       "password": "a-brand-new-password"})

    assert old.status_code == 401
    assert new.status_code == 200


def test_revoke_tokens_ends_token(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "revoke_tokens", username=logged_in.user.username)

    response, elapsed = wait_for_status(logged_in, 401)

    assert response.status_code == 401
    assert response.json()["reason"] == "credentials_changed"
    assert elapsed < DEADLINE


def test_revoke_tokens_allows_new_login(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "revoke_tokens", username=logged_in.user.username)
    wait_for_status(logged_in, 401)

    with deployment.client(deployment.login(logged_in.user)) as client:
        response = client.get(logged_in.path)

    assert response.status_code == 200


def test_unlinked_seat_gets_403(deployment: Deployment, logged_in: LoggedIn) -> None:
    change(deployment, "unlink_seat", username=logged_in.user.username)

    response, elapsed = wait_for_status(logged_in, 403)

    assert response.status_code == 403
    assert response.json()["type"] == "urn:reflexblue:problem:no-external-seat"
    assert elapsed < DEADLINE


def test_revoked_permission_gets_403(deployment: Deployment, logged_in: LoggedIn, acme: str) -> None:
    change(deployment, "set_role_permissions", administration=acme, role=logged_in.user.role,
           permissions=["administration.access", "v2.orders"])

    response, elapsed = wait_for_status(logged_in, 403)

    assert response.status_code == 403
    assert [permission["key"] for permission in response.json()["missing_permissions"]] == ["v2.articles"]
    assert elapsed < DEADLINE


def test_revoked_permission_spares_others(deployment: Deployment, logged_in: LoggedIn, acme: str) -> None:
    change(deployment, "set_role_permissions", administration=acme, role=logged_in.user.role,
           permissions=["administration.access", "v2.orders"])
    wait_for_status(logged_in, 403)

    response = logged_in.client.get(f"/api/v2/administrations/{acme}/orders")

    assert response.status_code == 200


def test_regranted_permission_gets_200(deployment: Deployment, logged_in: LoggedIn, acme: str) -> None:
    change(deployment, "set_role_permissions", administration=acme, role=logged_in.user.role,
           permissions=["administration.access", "v2.orders"])
    assert wait_for_status(logged_in, 403)[0].status_code == 403

    change(deployment, "set_role_permissions", administration=acme, role=logged_in.user.role,
           permissions=["administration.access", "v2.orders", "v2.articles"])
    response, elapsed = wait_for_status(logged_in, 200)

    assert response.status_code == 200
    assert elapsed < DEADLINE


def test_revoked_administration_access_gets_403(deployment: Deployment, logged_in: LoggedIn, acme: str) -> None:
    change(deployment, "set_role_permissions", administration=acme, role=logged_in.user.role,
           permissions=["v2.articles", "v2.orders"])

    response, elapsed = wait_for_status(logged_in, 403)

    assert response.status_code == 403
    assert "administration.access" in [permission["key"] for permission in response.json()["missing_permissions"]]
    assert elapsed < DEADLINE


def test_revoked_permission_updates_listing(deployment: Deployment, logged_in: LoggedIn, acme: str) -> None:
    change(deployment, "set_role_permissions", administration=acme, role=logged_in.user.role,
           permissions=["administration.access", "v2.orders"])

    response, elapsed = poll(lambda: logged_in.client.get("/api/v2/administrations"),
                             lambda response: "v2.articles" not in response.text, timeout=DEADLINE)

    assert response.json()["items"][0]["permissions"] == ["v2.orders"]
    assert elapsed < DEADLINE


def test_change_reaches_every_instance(deployment: Deployment, logged_in: LoggedIn) -> None:
    second = start_server(deployment.server.env)
    try:
        with second.client(logged_in.client.headers["Authorization"].removeprefix("Bearer ")) as other_instance:
            assert other_instance.get(logged_in.path).status_code == 200
            change(deployment, "deactivate", username=logged_in.user.username)
            response, elapsed = poll(lambda: other_instance.get(logged_in.path),
                                     lambda response: response.status_code == 401, timeout=DEADLINE)
    finally:
        second.stop()

    assert response.status_code == 401
    assert response.json()["reason"] == "user_inactive"
    assert elapsed < DEADLINE
