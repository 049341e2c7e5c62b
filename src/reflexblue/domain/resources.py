"""Typed schemas of the fourteen resource collections.

Each resource is declared once as a list of fields. From that list this module builds three
msgspec structs: the body of POST and PUT (``create``), the body of PATCH (``patch``, every field
optional) and the record the API returns (``record``). The HTTP layer serves all fourteen
resources through these structs, so no resource has hand-written routes.
"""

from __future__ import annotations

import datetime as dt
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from reflexblue.domain.permissions import RESOURCES

CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Code = Annotated[
    str,
    msgspec.Meta(
        pattern=CODE_PATTERN,
        description="Business code, unique within the administration and resource (1-64 characters: "
        "letters, digits, '.', '_' and '-', starting with a letter or digit).",
        examples=["A-1001"],
    ),
]
# Text fields reject C0 control characters and DEL (tab and newline included): they are single-line values.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Text = Annotated[str, msgspec.Meta(max_length=255, pattern=_NO_CONTROL)]
Amount = Annotated[
    Decimal,
    msgspec.Meta(
        description="Decimal amount of 0 or more, at most 6 decimal places and below 10^15; send it as a "
        "string such as \"12.50\" (a JSON number keeps only about 15 significant digits); returned as a string.",
        extra={"non_negative": True},
    ),
]
Quantity = Annotated[
    Decimal,
    msgspec.Meta(description="Decimal quantity, at most 6 decimal places and below 10^15 in size; returned as a "
                 "JSON string."),
]
MAX_DECIMAL = Decimal(10) ** 15
MAX_DECIMAL_PLACES = 6
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.")]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code.")]
Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$", max_length=320)]
HttpsUrl = Annotated[str, msgspec.Meta(pattern=r"^https://[^\s]{1,2040}$", description="An https:// URL.")]


class OrderLine(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One line of an order or order pattern."""

    article_code: Code
    quantity: Quantity
    description: Text | None = None
    unit_price: Amount | None = None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a resource: name, type, whether create/replace requires it, and its documentation."""

    name: str
    type: Any
    required: bool = False
    doc: str = ""


def _f(name: str, type_: Any, doc: str, required: bool = False) -> FieldSpec:
    return FieldSpec(name, type_, required, doc)


_COMMON_TITLE = _f("description", Text, "Human-readable description.", required=True)

FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "articles": (
        _COMMON_TITLE,
        _f("article_group", Code, "Code of the article group."),
        _f("unit", Text, "Sales unit, e.g. 'pcs' or 'kg'."),
        _f("sales_price", Amount, "Sales price excluding VAT."),
        _f("purchase_price", Amount, "Purchase price excluding VAT."),
        _f("vat_code", Text, "VAT code applied on sale."),
        _f("barcode", Annotated[str, msgspec.Meta(pattern=r"^[0-9]{8,14}$")], "EAN/GTIN barcode."),
        _f("stock_tracked", bool, "Whether stock is kept for the article."),
        _f("blocked", bool, "Blocked articles cannot be sold."),
    ),
    "article-groups": (
        _COMMON_TITLE,
        _f("parent_code", Code, "Code of the parent group."),
    ),
    "order-patterns": (
        _COMMON_TITLE,
        _f("relation_code", Code, "Relation the pattern is for."),
        _f("lines", list[OrderLine], "Lines copied into a new order."),
    ),
    "payment-conditions": (
        _COMMON_TITLE,
        _f("days", Annotated[int, msgspec.Meta(ge=0, le=365)], "Payment term in days.", required=True),
        _f("discount_percentage", Quantity, "Early payment discount in percent."),
        _f("discount_days", Annotated[int, msgspec.Meta(ge=0, le=365)], "Days within which the discount applies."),
    ),
    "contacts": (
        _f("name", Text, "Full name of the contact person.", required=True),
        _f("relation_code", Code, "Relation the contact works for."),
        _f("email", Email, "E-mail address."),
        _f("phone", Text, "Phone number."),
        _f("job_title", Text, "Job title."),
    ),
    "dynamic-fields": (
        _f("label", Text, "Label shown on screens.", required=True),
        _f("entity", Literal[RESOURCES], "Resource the field extends.", required=True),  # type: ignore[valid-type]
        _f("data_type", Literal["text", "number", "date", "boolean", "choice"], "Type of the value.", required=True),
        _f("choices", list[Text], "Allowed values when data_type is 'choice'."),
        _f("mandatory", bool, "Whether a value must be entered."),
    ),
    "invoices": (
        _f("relation_code", Code, "Invoiced relation.", required=True),
        _f("invoice_date", dt.date, "Invoice date (YYYY-MM-DD).", required=True),
        _f("due_date", dt.date, "Due date (YYYY-MM-DD)."),
        _f("currency", Currency, "Currency, default EUR when omitted by the ERP."),
        _f("order_code", Code, "Order the invoice bills."),
        _f("total_excl_vat", Amount, "Total excluding VAT."),
        _f("total_vat", Amount, "VAT amount."),
        _f("total_incl_vat", Amount, "Total including VAT."),
        _f("status", Literal["draft", "open", "paid", "cancelled"], "Invoice status."),
    ),
    "integrations": (
        _f("name", Text, "Name of the connected system.", required=True),
        _f("kind", Literal["webshop", "edi", "bi", "other"], "Kind of external system."),
        _f("enabled", bool, "Whether the integration is active."),
        _f("settings", dict[Annotated[str, msgspec.Meta(max_length=64)], Text], "Free key/value settings."),
    ),
    "orders": (
        _f("relation_code", Code, "Ordering relation.", required=True),
        _f("order_date", dt.date, "Order date (YYYY-MM-DD).", required=True),
        _f("status", Literal["open", "confirmed", "shipped", "invoiced", "cancelled"], "Order status."),
        _f("reference", Text, "The customer's own reference."),
        _f("currency", Currency, "Currency of the prices."),
        _f("lines", list[OrderLine], "Order lines."),
    ),
    "delivery-notes": (
        _f("order_code", Code, "Order being delivered.", required=True),
        _f("delivery_date", dt.date, "Delivery date (YYYY-MM-DD).", required=True),
        _f("status", Literal["planned", "shipped", "delivered"], "Delivery status."),
        _f("carrier", Text, "Carrier name."),
        _f("tracking_code", Text, "Carrier tracking code."),
    ),
    "relations": (
        _f("name", Text, "Company or person name.", required=True),
        _f("kind", Literal["customer", "supplier", "both"], "Whether the relation buys, sells or both."),
        _f("relation_group", Code, "Code of the relation group."),
        _f("email", Email, "E-mail address."),
        _f("phone", Text, "Phone number."),
        _f("vat_number", Text, "VAT identification number."),
        _f("street", Text, "Street and number."),
        _f("postal_code", Text, "Postal code."),
        _f("city", Text, "City."),
        _f("country", Country, "Country."),
        _f("payment_condition", Code, "Code of the payment condition."),
        _f("language", Code, "Code of the correspondence language."),
    ),
    "relation-groups": (
        _COMMON_TITLE,
    ),
    "languages": (
        _COMMON_TITLE,
    ),
    "webhooks": (
        _f("url", HttpsUrl, "Endpoint that receives the events.", required=True),
        _f("events", list[Annotated[str, msgspec.Meta(pattern=r"^[a-z-]+\.[a-z]+$")]],
           "Events to send, e.g. 'orders.created'.", required=True),
        _f("enabled", bool, "Whether events are sent."),
        _f("description", Text, "Note for operators."),
    ),
}


@dataclass(frozen=True, slots=True)
class ResourceSchema:
    """The three structs of one resource and its field list."""

    resource: str
    fields: tuple[FieldSpec, ...]
    create: type[msgspec.Struct]
    patch: type[msgspec.Struct]
    record: type[msgspec.Struct]

    @property
    def required(self) -> tuple[str, ...]:
        return ("code", *(spec.name for spec in self.fields if spec.required))


def _struct_name(resource: str, suffix: str) -> str:
    return "".join(part.capitalize() for part in resource.split("-")) + suffix


def _annotated(spec: FieldSpec) -> Any:
    return Annotated[spec.type, msgspec.Meta(description=spec.doc)] if spec.doc else spec.type


def _build(resource: str, fields: tuple[FieldSpec, ...]) -> ResourceSchema:
    code_field = ("code", Code)
    required = [code_field] + [(s.name, _annotated(s)) for s in fields if s.required]
    optional = [(s.name, _annotated(s) | None, None) for s in fields if not s.required]
    create = msgspec.defstruct(
        _struct_name(resource, "Input"), required + optional, kw_only=True, forbid_unknown_fields=True,
    )
    patch = msgspec.defstruct(
        _struct_name(resource, "Patch"),
        [("code", Code | msgspec.UnsetType, msgspec.UNSET)]
        + [(s.name, (_annotated(s) if s.required else _annotated(s) | None) | msgspec.UnsetType, msgspec.UNSET)
           for s in fields],
        kw_only=True,
        forbid_unknown_fields=True,
    )
    record = msgspec.defstruct(
        _struct_name(resource, ""),
        [
            ("id", Annotated[str, msgspec.Meta(description="Opaque server-assigned identifier.")]),
            *required,
            ("created_at", dt.datetime),
            ("modified_at", dt.datetime),
            *optional,
        ],
        kw_only=True,
    )
    return ResourceSchema(resource, fields, create, patch, record)


SCHEMAS: dict[str, ResourceSchema] = {resource: _build(resource, FIELDS[resource]) for resource in RESOURCES}


def _non_negative(annotation: Any) -> bool:
    """Tell whether a field's annotation (possibly inside ``| None``) is marked non-negative."""
    for argument in typing.get_args(annotation):
        if isinstance(argument, msgspec.Meta) and (argument.extra or {}).get("non_negative"):
            return True
        if _non_negative(argument):
            return True
    return False


def decimal_errors(item: msgspec.Struct, prefix: str = "") -> list[tuple[str, str]]:
    """List (field, message) for decimals that are not finite, too large, too precise or wrongly negative.

    msgspec has no constraints for Decimal, so these checks run after decoding.
    """
    errors: list[tuple[str, str]] = []
    for field in msgspec.structs.fields(item):
        value = getattr(item, field.name)
        name = f"{prefix}{field.name}"
        if isinstance(value, Decimal):
            if not value.is_finite():
                errors.append((name, "must be a finite number"))
            elif abs(value) >= MAX_DECIMAL:
                errors.append((name, "must be below 10^15 in size"))
            elif value.as_tuple().exponent < -MAX_DECIMAL_PLACES:  # type: ignore[operator]
                errors.append((name, f"has more than {MAX_DECIMAL_PLACES} decimal places"))
            elif value < 0 and _non_negative(field.type):
                errors.append((name, "must be 0 or more"))
        elif isinstance(value, list):
            for index, element in enumerate(value):
                if isinstance(element, msgspec.Struct):
                    errors.extend(decimal_errors(element, f"{name}[{index}]."))
    return errors


def to_document(item: msgspec.Struct) -> dict[str, Any]:
    """Convert a validated input struct to the JSON-compatible document that storage keeps."""
    document = msgspec.to_builtins(item)
    return {key: value for key, value in document.items() if value is not None}


def apply_patch(document: dict[str, Any], patch: msgspec.Struct) -> dict[str, Any]:
    """Return ``document`` with the fields set in ``patch`` replaced; an explicit null clears a field."""
    merged = dict(document)
    for name in patch.__struct_fields__:
        value = getattr(patch, name)
        if value is msgspec.UNSET:
            continue
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = msgspec.to_builtins(value)
    return merged
