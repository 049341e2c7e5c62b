"""Structured log events: logins, token rejections and permission denials, never with secrets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from .support import ApiUser, Deployment

LOGIN = "/api/security/login"
SECRET_PASSWORD = "Log-Secret-Wrong-Password-77"


@pytest.fixture
def log_mark(deployment: Deployment) -> int:
    """Return the length of the server log before the test, so the test reads only its own lines."""
    return len(deployment.server.log_text())


def events_after(deployment: Deployment, mark: int, name: str) -> list[dict[str, Any]]:
    """Return the JSON events called ``name`` logged after ``mark``, waiting briefly for them to appear."""
    deadline = time.monotonic() + 2.0
    while True:
        found = []
        for line in deployment.server.log_text()[mark:].splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_failed_login_event_has_reason(deployment: Deployment, client: httpx.Client,
                                       make_user: Callable[..., ApiUser], log_mark: int) -> None:
    user = make_user()
    client.post(LOGIN, json={"username": user.username, "password": SECRET_PASSWORD})

    events = events_after(deployment, log_mark, "login.failed")

    assert [event["reason"] for event in events] == ["invalid_credentials"]
    assert "client" in events[0]


def test_log_never_contains_password(deployment: Deployment, client: httpx.Client,
                                     make_user: Callable[..., ApiUser], log_mark: int) -> None:
    user = make_user()
    client.post(LOGIN, json={"username": user.username, "password": SECRET_PASSWORD})
    client.post(LOGIN, json={"username": user.username, "password": user.password})
    events_after(deployment, log_mark, "login.succeeded")

    written = deployment.server.log_text()[log_mark:]

    assert SECRET_PASSWORD not in written
    assert user.password not in written


def test_successful_login_event_names_user(deployment: Deployment, make_user: Callable[..., ApiUser],
                                           log_mark: int) -> None:
    user = make_user()
    deployment.login(user)

    events = events_after(deployment, log_mark, "login.succeeded")

    assert [event["username"] for event in events] == [user.username]


def test_token_rejection_event_has_reason(deployment: Deployment, log_mark: int) -> None:
    with deployment.client("not.a.token") as client:
        client.get("/api/v2/administrations")

    events = events_after(deployment, log_mark, "token.rejected")

    assert [event["reason"] for event in events] == ["malformed"]


def test_token_never_logged(deployment: Deployment, make_user: Callable[..., ApiUser], log_mark: int) -> None:
    token = deployment.login(make_user())
    with deployment.client(token + "x") as client:
        client.get("/api/v2/administrations")
    events_after(deployment, log_mark, "token.rejected")

    assert token not in deployment.server.log_text()[log_mark:]


def test_permission_denial_event_names_missing(deployment: Deployment, acme: str,
                                               make_user: Callable[..., ApiUser], log_mark: int) -> None:
    token = deployment.login(make_user({acme: ["administration.access", "v2.articles"]}))
    with deployment.client(token) as client:
        assert client.get(f"/api/v2/administrations/{acme}/orders").status_code == 403

    events = events_after(deployment, log_mark, "permission.denied")

    assert len(events) == 1
    assert events[0]["administration"] == acme
    assert events[0]["missing"] == ["v2.orders"]
