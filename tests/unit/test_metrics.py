"""Prometheus metrics of the application: counters at the logged events, request durations, seats."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from reflexblue.api.app import create_app
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import repository

PASSWORD = "metrics-password-1"
DURATION_COUNT = "reflexblue_http_request_duration_seconds_count"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def seed(client: TestClient[Any], settings: Settings) -> None:
    """Create a plan of 5 seats, administration acme and user 'metrics-user' with a seat and no role."""
    database = client.app.state.runtime.database
    with database.write() as session:
        repository.set_external_seats(session, 5, actor="test")
        repository.upsert_administration(session, "acme", "Acme", actor="test")
        repository.create_user(session, "metrics-user", Passwords(settings).hash(PASSWORD), actor="test",
                               external_seat=True)


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(sqlite_settings)) as test_client:
        seed(test_client, sqlite_settings)
        yield test_client


def login(client: TestClient[Any], password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/security/login", json={"username": "metrics-user", "password": password})


# ------------------------------------------------------------------------------------------------
# Request durations


def test_duration_labelled_by_route_template(client: TestClient[Any]) -> None:
    labels = {"method": "GET", "route": "/api/v2/administrations/{code}/articles", "status": "401"}
    before = sample(DURATION_COUNT, **labels)

    client.get("/api/v2/administrations/acme/articles")
    client.get("/api/v2/administrations/globex/articles")

    assert sample(DURATION_COUNT, **labels) == before + 2


def test_duration_never_labelled_by_raw_path(client: TestClient[Any]) -> None:
    client.get("/api/v2/administrations/raw-path-probe/articles")
    client.get("/no/such/path-probe")

    routes = {
        sample.labels["route"]
        for metric in REGISTRY.collect() if metric.name == "reflexblue_http_request_duration_seconds"
        for sample in metric.samples if "route" in sample.labels
    }
    assert not [route for route in routes if "probe" in route]
    assert "unmatched" in routes


def test_duration_unknown_method_counted_as_other(client: TestClient[Any]) -> None:
    # A method that no route accepts fails routing with 405, so the route is "unmatched" too.
    before = sample(DURATION_COUNT, method="other", route="unmatched", status="405")

    client.request("BREW", "/healthz")

    assert sample(DURATION_COUNT, method="other", route="unmatched", status="405") == before + 1


# ------------------------------------------------------------------------------------------------
# Counters at the logged events


def test_login_outcomes_counted(client: TestClient[Any]) -> None:
    succeeded = sample("reflexblue_logins_total", outcome="succeeded")
    invalid = sample("reflexblue_logins_total", outcome="invalid_credentials")

    assert login(client).status_code == 200
    assert login(client, "wrong-password").status_code == 401

    assert sample("reflexblue_logins_total", outcome="succeeded") == succeeded + 1
    assert sample("reflexblue_logins_total", outcome="invalid_credentials") == invalid + 1


def test_throttled_login_counted_by_kind(client: TestClient[Any]) -> None:
    throttled = sample("reflexblue_logins_total", outcome="throttled")
    by_user = sample("reflexblue_throttled_attempts_total", kind="user")

    for _ in range(5):
        login(client, "wrong-password")
    assert login(client, "wrong-password").status_code == 429

    assert sample("reflexblue_logins_total", outcome="throttled") == throttled + 1
    assert sample("reflexblue_throttled_attempts_total", kind="user") == by_user + 1


def test_token_rejection_counted_by_reason(client: TestClient[Any]) -> None:
    before = sample("reflexblue_token_rejections_total", reason="malformed")

    client.get("/api/v2/administrations", headers={"Authorization": "Bearer abc.def.ghi"})

    assert sample("reflexblue_token_rejections_total", reason="malformed") == before + 1


def test_permission_denial_counted_by_version(client: TestClient[Any]) -> None:
    token = login(client).json()["token"]
    before = sample("reflexblue_permission_denials_total", api_version="v2")

    response = client.get("/api/v2/administrations/acme/articles", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 403
    assert sample("reflexblue_permission_denials_total", api_version="v2") == before + 1


# ------------------------------------------------------------------------------------------------
# The /metrics endpoint


def test_metrics_endpoint_needs_no_token(client: TestClient[Any]) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'reflexblue_logins_total{outcome="succeeded"}' in response.text


def test_metrics_endpoint_reports_seats(client: TestClient[Any]) -> None:
    time.sleep(1.0)  # past the seat cache of an earlier scrape

    text = client.get("/metrics").text

    assert 'reflexblue_external_seats{state="used"} 1.0' in text
    assert 'reflexblue_external_seats{state="available"} 4.0' in text


def test_metrics_endpoint_not_in_openapi(client: TestClient[Any]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]

    assert "/metrics" not in paths


def test_metrics_disabled_no_endpoint(sqlite_settings: Settings) -> None:
    with TestClient(create_app(replace(sqlite_settings, metrics=False))) as test_client:
        assert test_client.get("/metrics").status_code == 404


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_port_serves_separately(sqlite_settings: Settings) -> None:
    port = free_port()
    with TestClient(create_app(replace(sqlite_settings, metrics_port=port))) as test_client:
        main_port = test_client.get("/metrics")
        separate = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)

    assert main_port.status_code == 404
    assert separate.status_code == 200
    assert "reflexblue_logins_total" in separate.text
    assert "reflexblue_external_seats" in separate.text


def test_metrics_port_closed_after_stop(sqlite_settings: Settings) -> None:
    port = free_port()
    with TestClient(create_app(replace(sqlite_settings, metrics_port=port))):
        pass

    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
