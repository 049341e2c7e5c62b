"""The fourteen resource collections: create, read, replace, update, delete, lists and isolation."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from reflexblue.domain.resources import SCHEMAS

from .support import ALL_PERMISSIONS_V2, RESOURCES, Deployment, unique_name

#: A valid body per resource with exactly the required fields apart from ``code``.
MINIMAL_FIELDS: dict[str, dict[str, Any]] = {
    "articles": {"description": "Blue widget"},
    "article-groups": {"description": "Widgets"},
    "order-patterns": {"description": "Weekly restock"},
    "payment-conditions": {"description": "30 days net", "days": 30},
    "contacts": {"name": "Jane Doe"},
    "dynamic-fields": {"label": "Colour", "entity": "articles", "data_type": "text"},
    "invoices": {"relation_code": "R-1", "invoice_date": "2026-01-31"},
    "integrations": {"name": "Web shop"},
    "orders": {"relation_code": "R-1", "order_date": "2026-01-31"},
    "delivery-notes": {"order_code": "O-1", "delivery_date": "2026-02-02"},
    "relations": {"name": "Initech B.V."},
    "relation-groups": {"description": "Wholesale customers"},
    "languages": {"description": "Dutch"},
    "webhooks": {"url": "https://shop.example/hooks/reflexblue", "events": ["orders.created"]},
}

#: One required field per resource with a new valid value, for PUT and PATCH.
CHANGED_FIELD: dict[str, tuple[str, Any]] = {
    "articles": ("description", "Red widget"),
    "article-groups": ("description", "Gadgets"),
    "order-patterns": ("description", "Monthly restock"),
    "payment-conditions": ("days", 14),
    "contacts": ("name", "John Doe"),
    "dynamic-fields": ("label", "Colour code"),
    "invoices": ("invoice_date", "2026-03-01"),
    "integrations": ("name", "EDI link"),
    "orders": ("relation_code", "R-2"),
    "delivery-notes": ("delivery_date", "2026-02-03"),
    "relations": ("name", "Initrode B.V."),
    "relation-groups": ("description", "Retail customers"),
    "languages": ("description", "German"),
    "webhooks": ("events", ["orders.created", "invoices.paid"]),
}

#: One optional field per resource that has any, with a valid value.
OPTIONAL_FIELD: dict[str, tuple[str, Any]] = {
    "articles": ("unit", "pcs"),
    "article-groups": ("parent_code", "ROOT"),
    "order-patterns": ("relation_code", "R-1"),
    "payment-conditions": ("discount_days", 8),
    "contacts": ("phone", "+31 20 555 0100"),
    "dynamic-fields": ("mandatory", True),
    "invoices": ("currency", "EUR"),
    "integrations": ("kind", "webshop"),
    "orders": ("reference", "PO-7781"),
    "delivery-notes": ("carrier", "PostNL"),
    "relations": ("city", "Utrecht"),
    "webhooks": ("enabled", True),
}


def new_code() -> str:
    return f"C-{secrets.token_hex(4)}"


def minimal_body(resource: str, **extra: Any) -> dict[str, Any]:
    return {"code": new_code(), **MINIMAL_FIELDS[resource], **extra}


@dataclass
class Tenant:
    """An administration and a client whose user has every v1 and v2 permission there."""

    code: str
    client: httpx.Client

    def path(self, resource: str, record_id: str | None = None, version: str = "v2") -> str:
        base = f"/api/{version}/administrations/{self.code}/{resource}"
        return f"{base}/{record_id}" if record_id else base

    def create(self, resource: str, body: dict[str, Any] | None = None, version: str = "v2") -> dict[str, Any]:
        response = self.client.post(self.path(resource, version=version), json=body or minimal_body(resource))
        assert response.status_code == 201, response.text
        return dict(response.json())


def open_tenant(deployment: Deployment, code: str | None = None) -> Tenant:
    code = code or deployment.seed.administration(unique_name("tenant"))
    user = deployment.seed.user({code: ["administration.access", "v1.access", *ALL_PERMISSIONS_V2]})
    return Tenant(code, deployment.client(deployment.login(user)))


@pytest.fixture(scope="module")
def tenant(deployment: Deployment) -> Iterator[Tenant]:
    """A tenant shared by the tests of this module that do not depend on what else a list contains."""
    shared = open_tenant(deployment)
    yield shared
    shared.client.close()


@pytest.fixture
def fresh_tenant(deployment: Deployment) -> Iterator[Tenant]:
    """A tenant of its own, for tests that check whole lists."""
    own = open_tenant(deployment)
    yield own
    own.client.close()


def test_minimal_bodies_match_schemas() -> None:
    for resource in RESOURCES:
        assert {"code", *MINIMAL_FIELDS[resource]} == set(SCHEMAS[resource].required), resource


# -------------------------------------------------------------------------------------------------
# Create, read, replace, update, delete


@pytest.mark.parametrize("resource", RESOURCES)
def test_create_returns_201_record(tenant: Tenant, resource: str) -> None:
    body = minimal_body(resource)

    response = tenant.client.post(tenant.path(resource), json=body)
    record = response.json()

    assert response.status_code == 201
    assert isinstance(record["id"], str) and record["id"]
    assert record["code"] == body["code"]
    assert record["created_at"]
    assert record["modified_at"]
    for name, value in MINIMAL_FIELDS[resource].items():
        assert record[name] == value, name


@pytest.mark.parametrize("resource", RESOURCES)
def test_read_returns_created_record(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)

    response = tenant.client.get(tenant.path(resource, created["id"]))

    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize("resource", RESOURCES)
def test_put_replaces_fields(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)
    name, value = CHANGED_FIELD[resource]
    replacement = {**minimal_body(resource), name: value}

    response = tenant.client.put(tenant.path(resource, created["id"]), json=replacement)

    assert response.status_code == 200
    assert response.json()["id"] == created["id"]
    assert response.json()["code"] == replacement["code"]
    assert response.json()[name] == value
    assert tenant.client.get(tenant.path(resource, created["id"])).json()[name] == value


def test_put_keeping_code_is_200(tenant: Tenant) -> None:
    created = tenant.create("articles")

    response = tenant.client.put(tenant.path("articles", created["id"]),
                                 json={"code": created["code"], "description": "Same code, new text"})

    assert response.status_code == 200
    assert response.json()["description"] == "Same code, new text"


@pytest.mark.parametrize("resource", sorted(OPTIONAL_FIELD))
def test_put_drops_omitted_optional_field(tenant: Tenant, resource: str) -> None:
    name, value = OPTIONAL_FIELD[resource]
    created = tenant.create(resource, minimal_body(resource, **{name: value}))
    assert created[name] == value

    response = tenant.client.put(tenant.path(resource, created["id"]), json=minimal_body(resource))

    assert response.status_code == 200
    assert response.json().get(name) is None


@pytest.mark.parametrize("resource", RESOURCES)
def test_put_missing_required_is_422(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)
    body = minimal_body(resource)
    missing = next(iter(MINIMAL_FIELDS[resource]))
    body.pop(missing)

    response = tenant.client.put(tenant.path(resource, created["id"]), json=body)

    assert response.status_code == 422
    assert missing in response.text


@pytest.mark.parametrize("resource", RESOURCES)
def test_patch_changes_one_field(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)
    name, value = CHANGED_FIELD[resource]

    response = tenant.client.patch(tenant.path(resource, created["id"]), json={name: value})
    patched = response.json()

    assert response.status_code == 200
    assert patched[name] == value
    assert patched["code"] == created["code"]
    assert patched["created_at"] == created["created_at"]
    for other, original in MINIMAL_FIELDS[resource].items():
        if other != name:
            assert patched[other] == original, other


@pytest.mark.parametrize("resource", RESOURCES)
def test_patch_bumps_modified_at(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)
    name, value = CHANGED_FIELD[resource]

    patched = tenant.client.patch(tenant.path(resource, created["id"]), json={name: value}).json()

    assert dt.datetime.fromisoformat(patched["modified_at"]) > dt.datetime.fromisoformat(created["modified_at"])


@pytest.mark.parametrize("resource", sorted(OPTIONAL_FIELD))
def test_patch_null_clears_optional_field(tenant: Tenant, resource: str) -> None:
    name, value = OPTIONAL_FIELD[resource]
    created = tenant.create(resource, minimal_body(resource, **{name: value}))

    response = tenant.client.patch(tenant.path(resource, created["id"]), json={name: None})

    assert response.status_code == 200
    assert response.json().get(name) is None


@pytest.mark.parametrize("resource", RESOURCES)
def test_patch_null_required_is_422(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)
    name = next(iter(MINIMAL_FIELDS[resource]))

    response = tenant.client.patch(tenant.path(resource, created["id"]), json={name: None})

    assert response.status_code == 422


@pytest.mark.parametrize("resource", RESOURCES)
def test_delete_then_read_is_404(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)

    deleted = tenant.client.delete(tenant.path(resource, created["id"]))
    read = tenant.client.get(tenant.path(resource, created["id"]))

    assert deleted.status_code == 204
    assert read.status_code == 404
    assert read.headers["content-type"] == "application/problem+json"


def test_delete_twice_is_404(tenant: Tenant) -> None:
    created = tenant.create("articles")
    tenant.client.delete(tenant.path("articles", created["id"]))

    response = tenant.client.delete(tenant.path("articles", created["id"]))

    assert response.status_code == 404


@pytest.mark.parametrize("resource", RESOURCES)
def test_duplicate_code_is_409(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource)

    response = tenant.client.post(tenant.path(resource), json=minimal_body(resource, code=created["code"]))

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"


def test_same_code_in_other_resource_is_allowed(tenant: Tenant) -> None:
    created = tenant.create("articles")

    response = tenant.client.post(tenant.path("languages"), json=minimal_body("languages", code=created["code"]))

    assert response.status_code == 201


def test_put_to_taken_code_is_409(tenant: Tenant) -> None:
    first = tenant.create("articles")
    second = tenant.create("articles")

    response = tenant.client.put(tenant.path("articles", second["id"]), json=minimal_body("articles",
                                                                                          code=first["code"]))

    assert response.status_code == 409


def test_patch_to_taken_code_is_409(tenant: Tenant) -> None:
    first = tenant.create("articles")
    second = tenant.create("articles")

    response = tenant.client.patch(tenant.path("articles", second["id"]), json={"code": first["code"]})

    assert response.status_code == 409


@pytest.mark.parametrize("resource", RESOURCES)
def test_unknown_field_is_422(tenant: Tenant, resource: str) -> None:
    response = tenant.client.post(tenant.path(resource), json=minimal_body(resource, colour_of_the_sky="blue"))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("field", ["id", "created_at", "modified_at"])
def test_server_fields_are_not_writable(tenant: Tenant, field: str) -> None:
    response = tenant.client.post(tenant.path("articles"), json=minimal_body("articles", **{field: "x"}))

    assert response.status_code == 422


@pytest.mark.parametrize(("resource", "field"), [
    (resource, field) for resource in RESOURCES for field in SCHEMAS[resource].required
])
def test_missing_required_field_is_422(tenant: Tenant, resource: str, field: str) -> None:
    body = minimal_body(resource)
    body.pop(field)

    response = tenant.client.post(tenant.path(resource), json=body)

    assert response.status_code == 422
    assert field in response.text


INVALID_ARTICLES = {
    "code-with-space": {"code": "A 1", "description": "x"},
    "code-empty": {"code": "", "description": "x"},
    "code-too-long": {"code": "A" * 65, "description": "x"},
    "code-number": {"code": 12, "description": "x"},
    "description-too-long": {"code": "A-1", "description": "x" * 256},
    "barcode-letters": {"code": "A-1", "description": "x", "barcode": "12345abc"},
    "sales-price-word": {"code": "A-1", "description": "x", "sales_price": "cheap"},
    "blocked-string": {"code": "A-1", "description": "x", "blocked": "yes"},
}


@pytest.mark.parametrize("case", sorted(INVALID_ARTICLES))
def test_invalid_article_is_422(tenant: Tenant, case: str) -> None:
    response = tenant.client.post(tenant.path("articles"), json=INVALID_ARTICLES[case])

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("resource", "body"), [
    ("payment-conditions", {"description": "x", "days": 366}),
    ("invoices", {"relation_code": "R-1", "invoice_date": "2026-02-30"}),
    ("invoices", {"relation_code": "R-1", "invoice_date": "2026-01-31", "currency": "eur"}),
    ("webhooks", {"url": "http://insecure.example/hook", "events": ["orders.created"]}),
    ("webhooks", {"url": "https://shop.example/hook", "events": ["no event"]}),
    ("dynamic-fields", {"label": "x", "entity": "users", "data_type": "text"}),
    ("integrations", {"name": "x", "settings": {"k" * 65: "v"}}),
    ("orders", {"relation_code": "R-1", "order_date": "2026-01-31", "lines": [{"quantity": "1"}]}),
])
def test_invalid_field_value_is_422(tenant: Tenant, resource: str, body: dict[str, Any]) -> None:
    response = tenant.client.post(tenant.path(resource), json={"code": new_code(), **body})

    assert response.status_code == 422


def test_decimal_amount_round_trips(tenant: Tenant) -> None:
    created = tenant.create("articles", minimal_body("articles", sales_price="12.50", purchase_price=7.25))

    assert created["sales_price"] == "12.50"
    assert created["purchase_price"] == "7.25"


def test_order_lines_round_trip(tenant: Tenant) -> None:
    lines = [{"article_code": "A-1", "quantity": "3", "description": "Blue widget", "unit_price": "9.95"}]

    created = tenant.create("orders", minimal_body("orders", lines=lines))

    assert created["lines"] == lines


@pytest.mark.parametrize(("content", "content_type", "status"), [
    (b'{"code": "A-1", "description": ', "application/json", 400),
    (b"[]", "application/json", 422),
    (b'{"code": "A-1", "description": "x"}', "text/plain", 415),
    (b'{"code": "A-1", "description": "' + b"x" * (1024 * 1024) + b'"}', "application/json", 413),
])
def test_malformed_create_body(tenant: Tenant, content: bytes, content_type: str, status: int) -> None:
    response = tenant.client.post(tenant.path("articles"), content=content, headers={"Content-Type": content_type})

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


# -------------------------------------------------------------------------------------------------
# Lists


def list_all(tenant: Tenant, resource: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow next_cursor to the end and return every item and the number of pages."""
    items: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = tenant.client.get(tenant.path(resource), params=query)
        assert response.status_code == 200, response.text
        pages += 1
        items.extend(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None or pages > 100:
            return items, pages


def test_pagination_has_three_pages(fresh_tenant: Tenant) -> None:
    created = [fresh_tenant.create("articles") for _ in range(5)]

    items, pages = list_all(fresh_tenant, "articles", limit=2)

    assert pages == 3
    assert sorted(item["id"] for item in items) == sorted(record["id"] for record in created)
    assert len(items) == len({item["id"] for item in items})


def test_pagination_last_cursor_is_null(fresh_tenant: Tenant) -> None:
    for _ in range(2):
        fresh_tenant.create("articles")

    response = fresh_tenant.client.get(fresh_tenant.path("articles"), params={"limit": 2})

    assert len(response.json()["items"]) == 2
    assert response.json()["next_cursor"] is None


def test_list_shape_and_default(fresh_tenant: Tenant) -> None:
    created = fresh_tenant.create("languages")

    response = fresh_tenant.client.get(fresh_tenant.path("languages"))

    assert response.status_code == 200
    assert set(response.json()) == {"items", "next_cursor"}
    assert response.json()["items"] == [created]
    assert response.json()["next_cursor"] is None


def test_pagination_survives_equal_timestamps(fresh_tenant: Tenant) -> None:
    created = [fresh_tenant.create("relation-groups") for _ in range(7)]

    items, _ = list_all(fresh_tenant, "relation-groups", limit=1)

    assert [item["id"] for item in items] == [record["id"] for record in
                                              sorted(created, key=lambda r: (r["modified_at"], r["id"]))]


def test_modified_since_filters(fresh_tenant: Tenant) -> None:
    older = fresh_tenant.create("articles")
    time.sleep(0.02)
    newer = fresh_tenant.create("articles")

    response = fresh_tenant.client.get(fresh_tenant.path("articles"),
                                       params={"modified_since": newer["modified_at"]})
    ids = [item["id"] for item in response.json()["items"]]

    assert response.status_code == 200
    assert newer["id"] in ids
    assert older["id"] not in ids


def test_modified_since_honours_offset(fresh_tenant: Tenant) -> None:
    older = fresh_tenant.create("articles")
    time.sleep(0.02)
    newer = fresh_tenant.create("articles")
    instant = dt.datetime.fromisoformat(newer["modified_at"]).astimezone(dt.timezone(dt.timedelta(hours=2)))

    response = fresh_tenant.client.get(fresh_tenant.path("articles"), params={"modified_since": instant.isoformat()})
    ids = [item["id"] for item in response.json()["items"]]

    assert response.status_code == 200
    assert ids == [newer["id"]]
    assert older["id"] not in ids


def test_modified_since_includes_patched(fresh_tenant: Tenant) -> None:
    first = fresh_tenant.create("articles")
    second = fresh_tenant.create("articles")
    time.sleep(0.02)
    since = dt.datetime.now(dt.UTC).isoformat()
    fresh_tenant.client.patch(fresh_tenant.path("articles", first["id"]), json={"description": "Changed"})

    items = fresh_tenant.client.get(fresh_tenant.path("articles"), params={"modified_since": since}).json()["items"]

    assert [item["id"] for item in items] == [first["id"]]
    assert second["id"] not in [item["id"] for item in items]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", "2026-01-31T12:00:00"])
def test_modified_since_invalid_is_400(tenant: Tenant, value: str) -> None:
    response = tenant.client.get(tenant.path("articles"), params={"modified_since": value})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_modified_since_extreme_dates(tenant: Tenant, value: str) -> None:
    response = tenant.client.get(tenant.path("articles"), params={"modified_since": value})

    assert response.status_code in (200, 400)


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("cursor", [
    "not-a-cursor", "!!!", encoded("null"), encoded("[1]"), encoded('{"a": 1, "b": 2}'),
    encoded('["yesterday", "x"]'), encoded('["2026-01-31T12:00:00", "x"]'),
    encoded('["2026-01-31T12:00:00+00:00", 5]'), encoded('[1e999, "x"]'), "a" * 201,
])
def test_invalid_cursor_is_400(tenant: Tenant, cursor: str) -> None:
    response = tenant.client.get(tenant.path("articles"), params={"cursor": cursor})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "1.5"])
def test_invalid_limit_is_400(tenant: Tenant, limit: str) -> None:
    response = tenant.client.get(tenant.path("articles"), params={"limit": limit})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_limit_bounds_are_accepted(tenant: Tenant, limit: str) -> None:
    response = tenant.client.get(tenant.path("articles"), params={"limit": limit})

    assert response.status_code == 200


# -------------------------------------------------------------------------------------------------
# Identifiers and isolation between administrations


def test_ids_are_not_sequential(fresh_tenant: Tenant) -> None:
    ids = [fresh_tenant.create("articles")["id"] for _ in range(3)]

    assert len(set(ids)) == 3
    for record_id in ids:
        assert not record_id.isdigit()
        assert len(record_id) >= 32
    assert ids[0][:-4] != ids[1][:-4]
    assert ids[1][:-4] != ids[2][:-4]


@pytest.fixture
def two_tenants(deployment: Deployment) -> Iterator[tuple[Tenant, Tenant]]:
    """Administrations A and B, and one user with every permission in both."""
    code_a = deployment.seed.administration(unique_name("tenant-a"))
    code_b = deployment.seed.administration(unique_name("tenant-b"))
    all_permissions = ["administration.access", "v1.access", *ALL_PERMISSIONS_V2]
    user = deployment.seed.user({code_a: all_permissions, code_b: all_permissions})
    client = deployment.client(deployment.login(user))
    yield Tenant(code_a, client), Tenant(code_b, client)
    client.close()


def masked_record_id(response: httpx.Response, record_id: str) -> str:
    return response.text.replace(record_id, "{id}")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_administration_id_is_404(two_tenants: tuple[Tenant, Tenant], method: str) -> None:
    tenant_a, tenant_b = two_tenants
    record = tenant_a.create("articles")
    random_id = str(uuid.uuid4())
    body = minimal_body("articles") if method in ("PUT", "PATCH") else None

    foreign = tenant_b.client.request(method, tenant_b.path("articles", record["id"]), json=body)
    missing = tenant_b.client.request(method, tenant_b.path("articles", random_id), json=body)

    assert foreign.status_code == 404
    assert masked_record_id(foreign, record["id"]) == masked_record_id(missing, random_id)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_administration_leaves_record(two_tenants: tuple[Tenant, Tenant], method: str) -> None:
    tenant_a, tenant_b = two_tenants
    record = tenant_a.create("articles")
    body = minimal_body("articles") if method in ("PUT", "PATCH") else None

    tenant_b.client.request(method, tenant_b.path("articles", record["id"]), json=body)

    assert tenant_a.client.get(tenant_a.path("articles", record["id"])).json() == record


def test_other_administration_list_is_empty(two_tenants: tuple[Tenant, Tenant]) -> None:
    tenant_a, tenant_b = two_tenants
    for resource in ("articles", "orders", "relations"):
        tenant_a.create(resource)

    for resource in ("articles", "orders", "relations"):
        assert tenant_b.client.get(tenant_b.path(resource)).json()["items"] == [], resource


def test_same_code_in_two_administrations(two_tenants: tuple[Tenant, Tenant]) -> None:
    tenant_a, tenant_b = two_tenants
    record = tenant_a.create("articles")

    response = tenant_b.client.post(tenant_b.path("articles"), json=minimal_body("articles", code=record["code"]))

    assert response.status_code == 201
    assert response.json()["id"] != record["id"]


def test_other_resource_id_is_404(tenant: Tenant) -> None:
    article = tenant.create("articles")

    response = tenant.client.get(tenant.path("orders", article["id"]))

    assert response.status_code == 404


def test_overlong_id_is_not_found(tenant: Tenant) -> None:
    response = tenant.client.get(tenant.path("articles", "x" * 300))

    assert response.status_code in (400, 404)


# -------------------------------------------------------------------------------------------------
# API v1


@pytest.mark.parametrize("resource", ["articles", "orders", "relations", "webhooks"])
def test_v1_create_and_read(tenant: Tenant, resource: str) -> None:
    created = tenant.create(resource, version="v1")

    response = tenant.client.get(tenant.path(resource, created["id"], version="v1"))

    assert response.status_code == 200
    assert response.json() == created


def test_v1_list_pagination(fresh_tenant: Tenant) -> None:
    created = [fresh_tenant.create("contacts", version="v1") for _ in range(3)]

    first = fresh_tenant.client.get(fresh_tenant.path("contacts", version="v1"), params={"limit": 2}).json()
    second = fresh_tenant.client.get(fresh_tenant.path("contacts", version="v1"),
                                     params={"limit": 2, "cursor": first["next_cursor"]}).json()

    assert [item["id"] for item in first["items"] + second["items"]] == [record["id"] for record in created]
    assert second["next_cursor"] is None


def test_v1_patch_and_delete(tenant: Tenant) -> None:
    created = tenant.create("relations", version="v1")

    patched = tenant.client.patch(tenant.path("relations", created["id"], version="v1"), json={"city": "Delft"})
    deleted = tenant.client.delete(tenant.path("relations", created["id"], version="v1"))

    assert patched.status_code == 200
    assert patched.json()["city"] == "Delft"
    assert deleted.status_code == 204


# -------------------------------------------------------------------------------------------------
# Hostile input: control characters and invalid Unicode in paths, queries and bodies


@pytest.mark.parametrize("record_id", ["%00", "a%00b", "%C0%80", "%FF", "..%2F..%2Fetc", "' OR '1'='1"])
def test_odd_record_id_is_404(tenant: Tenant, record_id: str) -> None:
    response = tenant.client.get(tenant.path("articles") + "/" + record_id)

    assert response.status_code in (400, 404)
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("record_id", ["%00", "a%00b"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_nul_record_id_write_is_404(tenant: Tenant, record_id: str, method: str) -> None:
    body = minimal_body("articles") if method != "DELETE" else None

    response = tenant.client.request(method, tenant.path("articles") + "/" + record_id, json=body)

    assert response.status_code in (400, 404)


@pytest.mark.parametrize("cursor", [
    encoded('["2026-01-31T12:00:00+00:00", "a\\u0000b"]'),
    encoded('["2026-01-31T12:00:00+00:00", "a\\ud800b"]'),
], ids=["nul", "lone-surrogate"])
def test_cursor_with_odd_id_is_handled(tenant: Tenant, cursor: str) -> None:
    response = tenant.client.get(tenant.path("articles"), params={"cursor": cursor})

    assert response.status_code in (200, 400)


@pytest.mark.parametrize("text", ["a\\u0000b", "a\\ud800b", "\\udfff", "\\u202eevil", "emoji \\ud83d\\ude00"])
def test_odd_text_field_is_handled(tenant: Tenant, text: str) -> None:
    body = f'{{"code": "{new_code()}", "description": "{text}"}}'.encode("ascii")

    created = tenant.client.post(tenant.path("articles"), content=body, headers={"Content-Type": "application/json"})
    listed = tenant.client.get(tenant.path("articles"))

    assert created.status_code in (201, 400, 422)
    assert listed.status_code == 200


def test_emoji_text_round_trips(tenant: Tenant) -> None:
    created = tenant.create("articles", minimal_body("articles", description="Blue widget \U0001F600 ü"))

    assert tenant.client.get(tenant.path("articles", created["id"])).json()["description"] == "Blue widget \U0001F600 ü"


def test_parallel_duplicate_codes(deployment: Deployment, fresh_tenant: Tenant) -> None:
    body = minimal_body("articles")

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: fresh_tenant.client.post(fresh_tenant.path("articles"), json=body).status_code,
                                 range(10)))

    assert statuses.count(201) == 1
    assert statuses.count(409) == 9
