"""Operations endpoints, the OpenAPI document, generic errors and the audit trail of logins."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from .support import RESOURCES, ApiUser, Deployment

PROBLEM_JSON = "application/problem+json"


def test_healthz_needs_no_token(client: httpx.Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readyz_needs_no_token(client: httpx.Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_jwks_needs_no_token(client: httpx.Client) -> None:
    response = client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.json()["keys"]


def test_unknown_path_is_404_problem(client: httpx.Client) -> None:
    response = client.get("/api/v3/no-such-thing")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 404


def test_unknown_resource_is_404(client: httpx.Client, acme: str) -> None:
    response = client.get(f"/api/v2/administrations/{acme}/unicorns")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON


def test_wrong_method_is_405_problem(client: httpx.Client) -> None:
    response = client.delete("/healthz")

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_JSON


# -------------------------------------------------------------------------------------------------
# OpenAPI document


@pytest.fixture(scope="module")
def openapi(deployment: Deployment) -> dict[str, Any]:
    with deployment.client() as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def test_openapi_has_bearer_scheme(openapi: dict[str, Any]) -> None:
    scheme = openapi["components"]["securitySchemes"]["BearerToken"]

    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"


def test_openapi_has_login(openapi: dict[str, Any]) -> None:
    login = openapi["paths"]["/api/security/login"]["post"]

    assert {"200", "401", "403", "422", "429"} <= set(login["responses"])
    assert "application/json" in login["requestBody"]["content"]


def test_openapi_resource_errors_are_problems(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/api/v2/administrations/{code}/articles"]["get"]

    for status in ("401", "403"):
        assert PROBLEM_JSON in operation["responses"][status]["content"], status


def api_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in openapi["paths"].items() if path.startswith(("/api/v1/", "/api/v2/"))
        for method, operation in item.items() if method in ("get", "post", "put", "patch", "delete")
    ]


def test_openapi_lists_every_resource(openapi: dict[str, Any]) -> None:
    for version in ("v1", "v2"):
        for resource in RESOURCES:
            assert f"/api/{version}/administrations/{{code}}/{resource}" in openapi["paths"], (version, resource)
            assert f"/api/{version}/administrations/{{code}}/{resource}/{{record_id}}" in openapi["paths"]


def test_openapi_api_operations_need_bearer(openapi: dict[str, Any]) -> None:
    operations = api_operations(openapi)

    assert len(operations) >= 2 * 14 * 6
    for path, method, operation in operations:
        assert operation.get("security") == [{"BearerToken": []}], (method, path)


def test_openapi_api_operations_document_errors(openapi: dict[str, Any]) -> None:
    for path, method, operation in api_operations(openapi):
        for status in ("401", "403"):
            assert status in operation["responses"], (method, path, status)
            assert PROBLEM_JSON in operation["responses"][status]["content"], (method, path, status)


def test_openapi_documents_required_fields(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/api/v2/administrations/{code}/articles"]["post"]
    reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = openapi["components"]["schemas"][reference.rsplit("/", 1)[1]]

    assert sorted(schema["required"]) == ["code", "description"]


# -------------------------------------------------------------------------------------------------
# Audit trail of logins


@pytest.fixture
def audit_mark(deployment: Deployment) -> int:
    events = deployment.seed.audit_events()
    return int(events[-1]["id"]) if events else 0


def login_events(deployment: Deployment, since_id: int) -> list[dict[str, Any]]:
    return [event for event in deployment.seed.audit_events(since_id) if event["event"].startswith("login.")]


def test_audit_records_successful_login(deployment: Deployment, make_user: Callable[..., ApiUser],
                                        audit_mark: int) -> None:
    user = make_user()
    deployment.login(user)

    events = login_events(deployment, audit_mark)

    assert [event["event"] for event in events] == ["login.succeeded"]
    assert events[0]["username"] == user.username


def test_audit_records_failure_reason(deployment: Deployment, client: httpx.Client,
                                      make_user: Callable[..., ApiUser], audit_mark: int) -> None:
    user = make_user(active=False)
    client.post("/api/security/login", json={"username": user.username, "password": user.password})

    events = login_events(deployment, audit_mark)

    assert [event["event"] for event in events] == ["login.failed"]
    assert events[0]["detail"]["reason"] == "user_inactive"


def test_audit_never_stores_password(deployment: Deployment, client: httpx.Client,
                                     make_user: Callable[..., ApiUser], audit_mark: int) -> None:
    user = make_user()
    wrong_password = "Audit-Secret-Wrong-Password-55"
    client.post("/api/security/login", json={"username": user.username, "password": wrong_password})
    client.post("/api/security/login", json={"username": user.username, "password": user.password})

    stored = json.dumps(deployment.seed.audit_events(audit_mark))

    assert wrong_password not in stored
    assert user.password not in stored
