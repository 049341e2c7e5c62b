"""Demo data for ``reflexblue demo``: a plan, two administrations, roles, users and records.

Users, roles and the plan go through the same provisioning code as ``reflexblue provision``, so
installing the demo twice changes nothing. Records are created only for codes that do not exist
yet in their administration and resource, so records edited through the API survive a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import select

from reflexblue.domain.permissions import RESOURCES, resource_permission_key
from reflexblue.domain.resources import SCHEMAS, to_document
from reflexblue.provisioning.apply import ApplySummary, apply_in_session
from reflexblue.provisioning.reader import ProvisioningSpec, parse_spec
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import records, repository
from reflexblue.storage.database import Database
from reflexblue.storage.models import Record

DEMO_DATABASE_URL = "sqlite:///reflexblue-demo.db"
DEMO_EXTERNAL_SEATS = 10
DEMO_ADMINISTRATIONS = {"acme": "Acme Wholesale", "globex": "Globex Retail"}
SHOP_RESOURCES = ("articles", "orders", "relations")

_ROLES: dict[str, list[str]] = {
    "API v1": ["administration.access", "v1.access"],
    "Shop connector": ["administration.access", *(resource_permission_key(r) for r in SHOP_RESOURCES)],
    "Full v2": ["administration.access", *(resource_permission_key(r) for r in RESOURCES)],
}


@dataclass(frozen=True, slots=True)
class DemoUser:
    """A demo login and the banner's description of its access."""

    username: str
    password: str
    external_seat: bool
    active: bool
    roles: tuple[tuple[str, str], ...]
    description: str


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("demo-v1", "v1-sample-access", True, True, (("acme", "API v1"),),
             "API v1 on every resource of acme; no v2, nothing in globex"),
    DemoUser("demo-shop", "shop-sample-access", True, True, (("acme", "Shop connector"),),
             "API v2 articles, orders and relations of acme only; 403 on other resources and in globex"),
    DemoUser("demo-full", "full-sample-access", True, True,
             (("acme", "API v1"), ("acme", "Full v2"), ("globex", "API v1"), ("globex", "Full v2")),
             "API v1 and every API v2 resource in acme and globex"),
    DemoUser("demo-no-seat", "seatless-sample-access", False, True, (("acme", "Full v2"),),
             "has the Full v2 role in acme but no External seat: login gets 403"),
    DemoUser("demo-inactive", "inactive-sample-access", True, False, (("acme", "Full v2"),),
             "inactive: login gets 403"),
)

#: Sample records, the same codes in both administrations; fields follow domain.resources.FIELDS.
DEMO_RECORDS: dict[str, list[dict[str, Any]]] = {
    "articles": [
        {"code": "A-1001", "description": "Espresso beans 1 kg", "article_group": "COFFEE", "unit": "kg",
         "sales_price": "18.50", "purchase_price": "11.20", "vat_code": "low", "barcode": "8712345678906",
         "stock_tracked": True},
        {"code": "A-1002", "description": "Paper filters, box of 100", "article_group": "SUPPLIES", "unit": "pcs",
         "sales_price": "3.95", "vat_code": "high"},
        {"code": "A-1003", "description": "Milk frother", "article_group": "EQUIPMENT", "unit": "pcs",
         "sales_price": "49.00", "vat_code": "high", "blocked": False},
    ],
    "article-groups": [
        {"code": "COFFEE", "description": "Coffee"},
        {"code": "SUPPLIES", "description": "Supplies"},
        {"code": "EQUIPMENT", "description": "Equipment"},
    ],
    "order-patterns": [
        {"code": "WEEKLY", "description": "Weekly café restock", "relation_code": "R-100",
         "lines": [{"article_code": "A-1001", "quantity": "5"}, {"article_code": "A-1002", "quantity": "10"}]},
        {"code": "MONTHLY", "description": "Monthly equipment check", "relation_code": "R-100",
         "lines": [{"article_code": "A-1003", "quantity": "1"}]},
    ],
    "payment-conditions": [
        {"code": "NET30", "description": "Net 30 days", "days": 30},
        {"code": "NET14-2", "description": "14 days, 2% discount within 7 days", "days": 14,
         "discount_percentage": "2", "discount_days": 7},
    ],
    "contacts": [
        {"code": "C-100", "name": "Jane Doe", "relation_code": "R-100", "email": "jane.doe@example.com",
         "job_title": "Purchasing manager"},
        {"code": "C-200", "name": "John Smith", "relation_code": "R-200", "phone": "+31 20 123 4567"},
    ],
    "dynamic-fields": [
        {"code": "DF-ROAST", "label": "Roast level", "entity": "articles", "data_type": "choice",
         "choices": ["light", "medium", "dark"]},
        {"code": "DF-LOYALTY", "label": "Loyalty number", "entity": "relations", "data_type": "text"},
    ],
    "invoices": [
        {"code": "INV-2024-0001", "relation_code": "R-100", "invoice_date": "2024-03-01", "due_date": "2024-03-31",
         "currency": "EUR", "order_code": "SO-1001", "total_excl_vat": "92.50", "total_vat": "8.33",
         "total_incl_vat": "100.83", "status": "open"},
        {"code": "INV-2024-0002", "relation_code": "R-100", "invoice_date": "2024-03-08", "currency": "EUR",
         "total_excl_vat": "49.00", "total_vat": "10.29", "total_incl_vat": "59.29", "status": "paid"},
    ],
    "integrations": [
        {"code": "WEBSHOP", "name": "Demo web shop", "kind": "webshop", "enabled": True,
         "settings": {"store": "demo-store"}},
        {"code": "BI", "name": "Sales dashboard", "kind": "bi", "enabled": False},
    ],
    "orders": [
        {"code": "SO-1001", "relation_code": "R-100", "order_date": "2024-02-27", "status": "invoiced",
         "currency": "EUR", "reference": "PO-7781",
         "lines": [{"article_code": "A-1001", "quantity": "5", "unit_price": "18.50"}]},
        {"code": "SO-1002", "relation_code": "R-200", "order_date": "2024-03-05", "status": "open",
         "currency": "EUR", "lines": [{"article_code": "A-1002", "quantity": "20"}]},
    ],
    "delivery-notes": [
        {"code": "DN-1001", "order_code": "SO-1001", "delivery_date": "2024-02-28", "status": "delivered",
         "carrier": "DHL", "tracking_code": "JVGL0123456789"},
        {"code": "DN-1002", "order_code": "SO-1002", "delivery_date": "2024-03-07", "status": "planned"},
    ],
    "relations": [
        {"code": "R-100", "name": "Corner Café", "kind": "customer", "relation_group": "RETAIL",
         "email": "orders@cornercafe.example", "city": "Amsterdam", "country": "NL",
         "payment_condition": "NET30", "language": "EN"},
        {"code": "R-200", "name": "Bean Traders BV", "kind": "supplier", "relation_group": "WHOLESALE",
         "city": "Rotterdam", "country": "NL", "payment_condition": "NET14-2", "language": "NL"},
    ],
    "relation-groups": [
        {"code": "RETAIL", "description": "Retail customers"},
        {"code": "WHOLESALE", "description": "Wholesale partners"},
    ],
    "languages": [
        {"code": "EN", "description": "English"},
        {"code": "NL", "description": "Dutch"},
        {"code": "DE", "description": "German"},
    ],
    "webhooks": [
        {"code": "WH-ORDERS", "url": "https://hooks.example.com/reflexblue/orders",
         "events": ["orders.created", "orders.updated"], "enabled": True, "description": "Order sync"},
    ],
}


def demo_spec() -> ProvisioningSpec:
    """Return the demo's plan, administrations, roles and users as a validated provisioning spec."""
    document = {
        "plan": {"external_seats": DEMO_EXTERNAL_SEATS},
        "administrations": [
            {"code": code, "name": name,
             "roles": [{"name": role, "permissions": permissions} for role, permissions in _ROLES.items()]}
            for code, name in DEMO_ADMINISTRATIONS.items()
        ],
        "users": [
            {"username": user.username, "password": user.password, "external_seat": user.external_seat,
             "active": user.active,
             "roles": [{"administration": code, "role": role} for code, role in user.roles]}
            for user in DEMO_USERS
        ],
    }
    return parse_spec(document, "demo")


@dataclass(frozen=True, slots=True)
class DemoInstallation:
    """Counts of the changes made by installing the demo."""

    summary: ApplySummary
    records_created: int


def install_demo(database: Database, settings: Settings, *, actor: str = "demo") -> DemoInstallation:
    """Provision the demo users and roles and add the missing sample records, in one transaction."""
    passwords = Passwords(settings)
    spec = demo_spec()
    with database.write() as session:
        summary = apply_in_session(session, spec, passwords, actor=actor)
        created = 0
        for code in DEMO_ADMINISTRATIONS:
            administration = repository.get_administration(session, code)
            for resource, items in DEMO_RECORDS.items():
                existing = set(
                    session.scalars(
                        select(Record.code).where(
                            Record.administration_id == administration.id, Record.resource == resource
                        )
                    )
                )
                for item in items:
                    validated = msgspec.convert(item, SCHEMAS[resource].create)
                    document = to_document(validated)
                    if document["code"] in existing:
                        continue
                    records.create_record(session, administration.id, resource, document["code"], document)
                    created += 1
    return DemoInstallation(summary, created)
