"""Tenant isolation: a user with every right in administration A tries to reach administration B.

For every resource, API version and method the response in B must equal the response for a code
that does not exist, and a record id of B used under A must get the response of a random id. Path tricks (encoded
slashes, dot segments, double encoding, case and look-alike codes) must not lead anywhere else,
and v1 and v2 permissions must not stand in for each other.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.support import ALL_PERMISSIONS_V2, RESOURCES, Deployment

from .attacks import FAILURE_STATUSES, FULL_RIGHTS, headers_without_date, raw_request

VERSIONS = ["v1", "v2"]
METHODS = ["list", "create", "read", "replace", "update", "delete"]
RECORD_METHODS = ["read", "replace", "update", "delete"]
HTTP_METHODS = {"list": "GET", "create": "POST", "read": "GET", "replace": "PUT", "update": "PATCH",
                "delete": "DELETE"}

#: A valid body per resource with its required fields apart from ``code``.
REQUIRED_FIELDS: dict[str, dict[str, Any]] = {
    "articles": {"description": "Tenancy probe"},
    "article-groups": {"description": "Probe group"},
    "order-patterns": {"description": "Probe pattern"},
    "payment-conditions": {"description": "Probe terms", "days": 14},
    "contacts": {"name": "Probe Contact"},
    "dynamic-fields": {"label": "Probe", "entity": "orders", "data_type": "number"},
    "invoices": {"relation_code": "R-9", "invoice_date": "2026-06-30"},
    "integrations": {"name": "Probe link"},
    "orders": {"relation_code": "R-9", "order_date": "2026-06-30"},
    "delivery-notes": {"order_code": "O-9", "delivery_date": "2026-07-01"},
    "relations": {"name": "Probe B.V."},
    "relation-groups": {"description": "Probe relations"},
    "languages": {"description": "Frisian"},
    "webhooks": {"url": "https://probe.example/hook", "events": ["orders.created"]},
}


def body_for(resource: str) -> dict[str, Any]:
    return {"code": f"T-{secrets.token_hex(4)}", **REQUIRED_FIELDS[resource]}


@dataclass
class Tenants:
    """Administrations A and B, a code that does not exist, and clients of their users."""

    a: str
    b: str
    unknown: str
    client_a: httpx.Client
    client_b: httpx.Client
    token_a: str
    records_a: dict[str, dict[str, Any]] = field(default_factory=dict)
    records_b: dict[str, dict[str, Any]] = field(default_factory=dict)

    def secrets_of_b(self) -> list[str]:
        """The ids and codes of B's records: none may appear in a response to A's user."""
        return [value for record in self.records_b.values() for value in (record["id"], record["code"])]


@pytest.fixture(scope="module")
def tenants(deployment: Deployment) -> Iterator[Tenants]:
    suffix_length = 8
    # Every code starts with "acme", whose letters have Cyrillic look-alikes.
    a = deployment.seed.administration(f"acme-a-{secrets.token_hex(suffix_length // 2)}")
    b = deployment.seed.administration(f"acme-b-{secrets.token_hex(suffix_length // 2)}")
    unknown = f"acme-z-{secrets.token_hex(suffix_length // 2)}"
    assert len(unknown) == len(b)
    token_a = deployment.login(deployment.seed.user({a: FULL_RIGHTS}))
    token_b = deployment.login(deployment.seed.user({b: FULL_RIGHTS}))
    tenants = Tenants(a, b, unknown, deployment.client(token_a), deployment.client(token_b), token_a)
    for resource in RESOURCES:
        for code, client, records in ((a, tenants.client_a, tenants.records_a), (b, tenants.client_b,
                                                                                  tenants.records_b)):
            response = client.post(f"/api/v2/administrations/{code}/{resource}", json=body_for(resource))
            assert response.status_code == 201, response.text
            records[resource] = response.json()
    yield tenants
    tenants.client_a.close()
    tenants.client_b.close()


def call(client: httpx.Client, version: str, code: str, resource: str, method: str,
         record_id: str) -> httpx.Response:
    base = f"/api/{version}/administrations/{code}/{resource}"
    path = base if method in ("list", "create") else f"{base}/{record_id}"
    body = body_for(resource) if method in ("create", "replace", "update") else None
    return client.request(HTTP_METHODS[method], path, json=body)


def masked(response: httpx.Response, value: str) -> tuple[int, str]:
    return response.status_code, response.text.replace(value, "{masked}")


# ---------------------------------------------------------------------------------------------
# Another administration responds like one that does not exist


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("version", VERSIONS)
def test_foreign_administration_matches_unknown(tenants: Tenants, version: str, resource: str, method: str) -> None:
    record_id = tenants.records_b[resource]["id"]

    foreign = call(tenants.client_a, version, tenants.b, resource, method, record_id)
    unknown = call(tenants.client_a, version, tenants.unknown, resource, method, record_id)

    assert foreign.status_code == 403
    assert masked(foreign, tenants.b) == masked(unknown, tenants.unknown)
    assert headers_without_date(foreign.headers) == headers_without_date(unknown.headers)


@pytest.mark.parametrize("method", RECORD_METHODS)
@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("version", VERSIONS)
def test_foreign_record_matches_random_id(tenants: Tenants, version: str, resource: str, method: str) -> None:
    foreign_id = tenants.records_b[resource]["id"]
    random_id = str(uuid.uuid4())

    foreign = call(tenants.client_a, version, tenants.a, resource, method, foreign_id)
    missing = call(tenants.client_a, version, tenants.a, resource, method, random_id)

    assert foreign.status_code == 404
    assert masked(foreign, foreign_id) == masked(missing, random_id)
    assert headers_without_date(foreign.headers) == headers_without_date(missing.headers)


def test_foreign_records_unchanged(tenants: Tenants) -> None:
    # Runs after the writes above in file order: B's records must be exactly as created.
    for resource, record in tenants.records_b.items():
        response = tenants.client_b.get(f"/api/v2/administrations/{tenants.b}/{resource}/{record['id']}")

        assert response.status_code == 200, resource
        assert response.json() == record, resource


def test_foreign_administration_not_listed(tenants: Tenants) -> None:
    for path in ("/api/v1/administrations", "/api/v2/administrations", "/api/security/permissions"):
        response = tenants.client_a.get(path)

        assert response.status_code == 200
        assert tenants.b not in response.text, path


def test_foreign_cursor_reveals_nothing(tenants: Tenants) -> None:
    # A cursor of B's list, replayed on A's list, pages through A's records only.
    second = tenants.client_b.post(f"/api/v2/administrations/{tenants.b}/articles", json=body_for("articles"))
    assert second.status_code == 201
    first_page = tenants.client_b.get(f"/api/v2/administrations/{tenants.b}/articles", params={"limit": 1}).json()
    assert first_page["next_cursor"]

    replayed = tenants.client_a.get(f"/api/v2/administrations/{tenants.a}/articles",
                                    params={"cursor": first_page["next_cursor"], "limit": 1000})

    assert replayed.status_code in (200, 400)
    assert second.json()["id"] not in replayed.text
    for secret in tenants.secrets_of_b():
        assert secret not in replayed.text


# ---------------------------------------------------------------------------------------------
# Path tricks


def path_tricks(tenants: Tenants) -> dict[str, str]:
    a, b = tenants.a, tenants.b
    record_b = tenants.records_b["articles"]["id"]
    every_char_encoded = "".join(f"%{byte:02X}" for byte in b.encode("ascii"))
    return {
        "encoded-slash-dot-dot": f"/api/v2/administrations/{a}%2F..%2F{b}/articles",
        "dot-dot-segment": f"/api/v2/administrations/{a}/../{b}/articles",
        "encoded-dot-dot": f"/api/v2/administrations/{a}/%2e%2e/{b}/articles",
        "encoded-dot-dot-upper": f"/api/v2/administrations/{a}/%2E%2E/{b}/articles",
        "double-encoded-slash": f"/api/v2/administrations/{a}%252F..%252F{b}/articles",
        "double-encoded-dot-dot": f"/api/v2/administrations/{a}/%252e%252e/{b}/articles",
        "backslash-dot-dot": f"/api/v2/administrations/{a}\\..\\{b}/articles",
        "encoded-backslash": f"/api/v2/administrations/{a}%5C..%5C{b}/articles",
        "dot-dot-after-resource": f"/api/v2/administrations/{a}/articles/../../{b}/articles",
        "encoded-dot-dot-after-resource": f"/api/v2/administrations/{a}/articles/..%2F..%2F{b}%2Farticles",
        "dot-dot-before-record": f"/api/v2/administrations/{a}/articles/../../{b}/articles/{record_b}",
        "encoded-slash-in-id": f"/api/v2/administrations/{a}/articles/..%2F..%2F{b}%2Farticles%2F{record_b}",
        "double-slash": f"/api/v2//administrations/{b}/articles",
        "leading-double-slash": f"//api/v2/administrations/{b}/articles",
        "trailing-slash": f"/api/v2/administrations/{b}/articles/",
        "encoded-slash-after-code": f"/api/v2/administrations/{b}%2F/articles",
        "nul-after-code": f"/api/v2/administrations/{b}%00/articles",
        "space-after-code": f"/api/v2/administrations/{b}%20/articles",
        "space-before-code": f"/api/v2/administrations/%20{b}/articles",
        "dot-after-code": f"/api/v2/administrations/{b}./articles",
        "matrix-parameter": f"/api/v2/administrations/{b};code={a}/articles",
        "every-char-encoded": f"/api/v2/administrations/{every_char_encoded}/articles",
        "two-codes-comma": f"/api/v2/administrations/{a},{b}/articles",
        "two-codes-encoded-comma": f"/api/v2/administrations/{a}%2C{b}/articles",
        "wildcard": "/api/v2/administrations/*/articles",
        "encoded-percent": "/api/v2/administrations/%25/articles",
        "code-in-query": f"/api/v2/administrations/{a}/articles?code={b}&administration={b}",
        "fragment": f"/api/v2/administrations/{b}/articles#{a}",
        "absolute-form": f"http://127.0.0.1/api/v2/administrations/{b}/articles",
    }


PATH_TRICKS = ["encoded-slash-dot-dot", "dot-dot-segment", "encoded-dot-dot", "encoded-dot-dot-upper",
               "double-encoded-slash", "double-encoded-dot-dot", "backslash-dot-dot", "encoded-backslash",
               "dot-dot-after-resource", "encoded-dot-dot-after-resource", "dot-dot-before-record",
               "encoded-slash-in-id", "double-slash", "leading-double-slash", "trailing-slash",
               "encoded-slash-after-code", "nul-after-code", "space-after-code", "space-before-code", "dot-after-code",
               "matrix-parameter", "every-char-encoded", "two-codes-comma", "two-codes-encoded-comma", "wildcard",
               "encoded-percent", "code-in-query", "fragment", "absolute-form"]


@pytest.mark.parametrize("trick", PATH_TRICKS)
def test_path_trick_reaches_nothing(deployment: Deployment, tenants: Tenants, trick: str) -> None:
    target = path_tricks(tenants)[trick]
    authorization = f"Bearer {tenants.token_a}".encode("ascii")

    response = raw_request(deployment.server.port, "GET", target, [("Authorization", authorization)])

    assert response.status in FAILURE_STATUSES | {200}, response.text[:300]
    for secret in tenants.secrets_of_b():
        # A problem body may repeat the path, so only what the request did not contain counts.
        if secret not in target:
            assert secret not in response.text
    if response.status == 200:
        # Only A's own list may be returned, as for the query string trick.
        assert tenants.records_a["articles"]["id"] in response.text


def code_variants(code: str) -> dict[str, str]:
    return {
        "uppercase": code.upper(),
        "title-case": code.title(),
        "swapped-case": code.swapcase(),
        "cyrillic-a": code.replace("a", "\u0430", 1),
        "cyrillic-c": code.replace("c", "\u0441", 1),
        "cyrillic-e": code.replace("e", "\u0435", 1),
        "fullwidth": "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in code),
        "non-breaking-hyphen": code.replace("-", "\u2011"),
        "trailing-zero-width": code + "\u200b",
    }


CODE_VARIANTS = ["uppercase", "title-case", "swapped-case", "cyrillic-a", "cyrillic-c", "cyrillic-e", "fullwidth",
                 "non-breaking-hyphen", "trailing-zero-width"]


@pytest.mark.parametrize("variant", CODE_VARIANTS)
@pytest.mark.parametrize("owner", ["foreign", "own"])
def test_code_variant_matches_unknown(tenants: Tenants, variant: str, owner: str) -> None:
    # Another spelling of a code is another code, so it returns neither B's nor A's records.
    code = tenants.b if owner == "foreign" else tenants.a
    spelled = code_variants(code)[variant]
    assert spelled != code
    unknown = code_variants(tenants.unknown)[variant]

    response = tenants.client_a.get(f"/api/v2/administrations/{quote(spelled)}/articles")
    reference = tenants.client_a.get(f"/api/v2/administrations/{quote(unknown)}/articles")

    assert response.status_code == 403
    assert response.text.replace(spelled, "{code}") == reference.text.replace(unknown, "{code}")


# ---------------------------------------------------------------------------------------------
# v1 and v2 permissions do not stand in for each other


@pytest.fixture(scope="module")
def one_version_clients(deployment: Deployment, tenants: Tenants) -> Iterator[dict[str, httpx.Client]]:
    """Clients of users with every right of one API version in A, and none of the other."""
    v1_only = deployment.seed.user({tenants.a: ["administration.access", "v1.access"]})
    v2_only = deployment.seed.user({tenants.a: ["administration.access", *ALL_PERMISSIONS_V2]})
    clients = {"v1": deployment.client(deployment.login(v1_only)), "v2": deployment.client(deployment.login(v2_only))}
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("granted", ["v1", "v2"])
def test_other_version_denied(tenants: Tenants, one_version_clients: dict[str, httpx.Client], granted: str,
                              resource: str, method: str) -> None:
    called = "v2" if granted == "v1" else "v1"
    missing = f"v2.{resource}" if called == "v2" else "v1.access"

    response = call(one_version_clients[granted], called, tenants.a, resource, method,
                    tenants.records_a[resource]["id"])

    assert response.status_code == 403
    assert [permission["key"] for permission in response.json()["missing_permissions"]] == [missing]
    assert tenants.records_a[resource]["code"] not in response.text


@pytest.mark.parametrize("granted", ["v1", "v2"])
def test_denial_precedes_validation(tenants: Tenants, one_version_clients: dict[str, httpx.Client],
                                    granted: str) -> None:
    # An invalid body or an unknown id must not turn the 403 into a 422 or a 404, which would tell
    # the caller more than that it lacks the permission.
    called = "v2" if granted == "v1" else "v1"
    client = one_version_clients[granted]
    base = f"/api/{called}/administrations/{tenants.a}/articles"

    invalid_body = client.post(base, json={"unexpected": True})
    not_json = client.post(base, content=b"<xml/>", headers={"Content-Type": "application/xml"})
    unknown_id = client.get(f"{base}/{uuid.uuid4()}")
    bad_query = client.get(base, params={"limit": "many"})

    assert [invalid_body.status_code, not_json.status_code, unknown_id.status_code, bad_query.status_code] == \
        [403] * 4


def test_denied_writes_change_nothing(tenants: Tenants, one_version_clients: dict[str, httpx.Client]) -> None:
    # Runs after the denied writes above in file order: A's records must be exactly as created.
    for resource, record in tenants.records_a.items():
        response = tenants.client_a.get(f"/api/v2/administrations/{tenants.a}/{resource}/{record['id']}")

        assert response.json() == record, resource
    listed = tenants.client_a.get(f"/api/v2/administrations/{tenants.a}/articles", params={"limit": 1000})
    assert [item["id"] for item in listed.json()["items"]] == [tenants.records_a["articles"]["id"]]


def test_partial_v2_rights_reach_only_granted(deployment: Deployment, tenants: Tenants) -> None:
    # administration.access with v1.access and one v2 permission: every other v2 resource stays closed.
    user = deployment.seed.user({tenants.a: ["administration.access", "v1.access", "v2.orders"]})
    with deployment.client(deployment.login(user)) as client:
        statuses = {resource: client.get(f"/api/v2/administrations/{tenants.a}/{resource}").status_code
                    for resource in RESOURCES}

    assert statuses == {resource: 200 if resource == "orders" else 403 for resource in RESOURCES}
