"""The typed schemas of the fourteen resources, and PATCH merging."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from reflexblue.domain.permissions import RESOURCES
from reflexblue.domain.resources import SCHEMAS, apply_patch, to_document

# The smallest valid document of each resource: exactly its required fields.
MINIMAL: dict[str, dict[str, Any]] = {
    "articles": {"code": "A-1001", "description": "Blue pen"},
    "article-groups": {"code": "PENS", "description": "Pens"},
    "order-patterns": {"code": "WEEKLY", "description": "Weekly refill"},
    "payment-conditions": {"code": "30D", "description": "30 days net", "days": 30},
    "contacts": {"code": "C1", "name": "Ada Lovelace"},
    "dynamic-fields": {"code": "colour", "label": "Colour", "entity": "articles", "data_type": "text"},
    "invoices": {"code": "INV-1", "relation_code": "R1", "invoice_date": "2026-01-31"},
    "integrations": {"code": "shop", "name": "Web shop"},
    "orders": {"code": "O-1", "relation_code": "R1", "order_date": "2026-01-31"},
    "delivery-notes": {"code": "D-1", "order_code": "O-1", "delivery_date": "2026-02-01"},
    "relations": {"code": "R1", "name": "Acme Ltd"},
    "relation-groups": {"code": "RETAIL", "description": "Retail customers"},
    "languages": {"code": "nl", "description": "Dutch"},
    "webhooks": {"code": "hook-1", "url": "https://example.com/hook", "events": ["orders.created"]},
}

REQUIRED_CASES = [(resource, field) for resource, document in MINIMAL.items() for field in document]

BAD_CODES = ["", "-leading-dash", ".leading-dot", "has space", "a" * 65, "café", "a/b", "a\nb", "a:b"]


def decode(resource: str, document: dict[str, Any], kind: str = "create") -> Any:
    """Decode ``document`` as JSON into the resource's create or patch struct, as the API does."""
    schema = SCHEMAS[resource]
    target = schema.create if kind == "create" else schema.patch
    return msgspec.json.decode(msgspec.json.encode(document), type=target)


def test_minimal_documents_cover_every_resource() -> None:
    assert sorted(MINIMAL) == sorted(RESOURCES)
    assert sorted(SCHEMAS) == sorted(RESOURCES)


@pytest.mark.parametrize("resource", RESOURCES)
def test_schema_accepts_minimal_document(resource: str) -> None:
    item = decode(resource, MINIMAL[resource])

    assert item.code == MINIMAL[resource]["code"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_required_fields_are_minimal_document(resource: str) -> None:
    assert sorted(SCHEMAS[resource].required) == sorted(MINIMAL[resource])


def test_article_requires_only_code_and_description() -> None:
    assert SCHEMAS["articles"].required == ("code", "description")


@pytest.mark.parametrize(("resource", "field"), REQUIRED_CASES)
def test_schema_rejects_missing_required_field(resource: str, field: str) -> None:
    document = {key: value for key, value in MINIMAL[resource].items() if key != field}

    with pytest.raises(msgspec.ValidationError, match=f"`{field}`"):
        decode(resource, document)


@pytest.mark.parametrize("resource", RESOURCES)
def test_schema_rejects_unknown_field(resource: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown_field"):
        decode(resource, {**MINIMAL[resource], "unknown_field": "x"})


@pytest.mark.parametrize("resource", RESOURCES)
def test_patch_rejects_unknown_field(resource: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown_field"):
        decode(resource, {"unknown_field": "x"}, kind="patch")


@pytest.mark.parametrize(("resource", "field"), REQUIRED_CASES)
def test_schema_rejects_wrong_type(resource: str, field: str) -> None:
    # A JSON object is never valid for a string, number, date, list or enumeration field.
    document = {**MINIMAL[resource], field: {"nested": "object"}}

    with pytest.raises(msgspec.ValidationError, match=f"\\$\\.{field}"):
        decode(resource, document)


@pytest.mark.parametrize("resource", RESOURCES)
def test_schema_rejects_number_as_code(resource: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="code"):
        decode(resource, {**MINIMAL[resource], "code": 1001})


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("code", BAD_CODES)
def test_schema_rejects_bad_code(resource: str, code: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="code"):
        decode(resource, {**MINIMAL[resource], "code": code})


@pytest.mark.parametrize("code", BAD_CODES)
def test_patch_rejects_bad_code(code: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="code"):
        decode("articles", {"code": code}, kind="patch")


@pytest.mark.parametrize("code", ["A", "0", "A-1001", "a.b_c-d", "x" * 64])
def test_schema_accepts_valid_code(code: str) -> None:
    assert decode("articles", {"code": code, "description": "Pen"}).code == code


@pytest.mark.parametrize(
    ("resource", "field", "value"),
    [
        ("articles", "article_group", "bad group"),
        ("articles", "barcode", "12345"),
        ("articles", "barcode", "ABCDEFGHIJ"),
        ("articles", "description", "x" * 256),
        ("payment-conditions", "days", -1),
        ("payment-conditions", "days", 366),
        ("payment-conditions", "days", 1.5),
        ("contacts", "email", "not-an-email"),
        ("relations", "email", "a@b@c"),
        ("relations", "country", "nl"),
        ("relations", "country", "NLD"),
        ("relations", "kind", "partner"),
        ("invoices", "currency", "eur"),
        ("invoices", "invoice_date", "31-01-2026"),
        ("invoices", "status", "unknown"),
        ("orders", "lines", [{"article_code": "A1", "quantity": 1, "colour": "red"}]),
        ("orders", "lines", [{"quantity": 1}]),
        ("orders", "lines", [{"article_code": "bad code", "quantity": 1}]),
        ("dynamic-fields", "entity", "nothing"),
        ("dynamic-fields", "data_type", "blob"),
        ("webhooks", "url", "http://example.com/hook"),
        ("webhooks", "url", "ftp://example.com"),
        ("webhooks", "events", ["Orders.Created"]),
        ("webhooks", "events", "orders.created"),
        ("integrations", "settings", {"key": 1}),
        ("integrations", "settings", {"k" * 65: "value"}),
    ],
)
def test_schema_rejects_invalid_field_value(resource: str, field: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        decode(resource, {**MINIMAL[resource], field: value})


def test_schema_accepts_full_order() -> None:
    document = {
        **MINIMAL["orders"],
        "status": "confirmed",
        "currency": "EUR",
        "lines": [{"article_code": "A-1001", "quantity": "2", "unit_price": 1.25, "description": "Pen"}],
    }

    order = decode("orders", document)

    assert order.order_date == dt.date(2026, 1, 31)
    assert order.lines[0].quantity == Decimal("2")
    assert order.lines[0].unit_price == Decimal("1.25")


def test_dynamic_field_entity_any_resource() -> None:
    for resource in RESOURCES:
        assert decode("dynamic-fields", {**MINIMAL["dynamic-fields"], "entity": resource}).entity == resource


def test_to_document_drops_unset_optionals() -> None:
    item = decode("articles", {"code": "A1", "description": "Pen", "sales_price": "12.50", "blocked": False})

    assert to_document(item) == {"code": "A1", "description": "Pen", "sales_price": "12.50", "blocked": False}


def test_to_document_makes_json_builtins() -> None:
    item = decode("invoices", {**MINIMAL["invoices"], "total_incl_vat": 12.1})

    document = to_document(item)

    assert document["invoice_date"] == "2026-01-31"
    assert document["total_incl_vat"] == "12.1"


def test_record_struct_has_server_fields() -> None:
    fields = SCHEMAS["articles"].record.__struct_fields__

    assert {"id", "code", "description", "created_at", "modified_at"} <= set(fields)


# ------------------------------------------------------------------------------------------------
# apply_patch

STORED = {"code": "A1", "description": "Pen", "unit": "pcs", "sales_price": "1.00"}


def test_patch_unset_fields_keep_values() -> None:
    patch = decode("articles", {}, kind="patch")

    assert apply_patch(STORED, patch) == STORED


def test_patch_null_clears_optional_field() -> None:
    patch = decode("articles", {"unit": None}, kind="patch")

    merged = apply_patch(STORED, patch)

    assert "unit" not in merged
    assert merged["description"] == "Pen"


def test_patch_null_absent_field_noop() -> None:
    patch = decode("articles", {"vat_code": None}, kind="patch")

    assert apply_patch(STORED, patch) == STORED


def test_patch_value_replaces_field() -> None:
    patch = decode("articles", {"description": "Red pen", "code": "A2"}, kind="patch")

    merged = apply_patch(STORED, patch)

    assert merged == {**STORED, "description": "Red pen", "code": "A2"}


def test_patch_adds_new_field_as_builtin() -> None:
    patch = decode("articles", {"purchase_price": 0.5, "stock_tracked": True}, kind="patch")

    merged = apply_patch(STORED, patch)

    assert merged["purchase_price"] == "0.5"
    assert merged["stock_tracked"] is True


def test_patch_converts_nested_lines() -> None:
    patch = decode("orders", {"lines": [{"article_code": "A1", "quantity": 3}]}, kind="patch")

    merged = apply_patch({"code": "O-1"}, patch)

    (line,) = merged["lines"]
    assert line["article_code"] == "A1"
    assert line["quantity"] == "3"


def test_patch_leaves_input_document_unchanged() -> None:
    stored = dict(STORED)
    patch = decode("articles", {"unit": None, "description": "Other"}, kind="patch")

    apply_patch(stored, patch)

    assert stored == STORED


@pytest.mark.parametrize(("resource", "field"), REQUIRED_CASES)
def test_patch_rejects_null_required_field(resource: str, field: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        decode(resource, {field: None}, kind="patch")
