"""The permission catalogue and parsing permissions given as keys or display triples."""

from __future__ import annotations

import pytest

from reflexblue.domain.errors import UnknownPermissionError, ValidationError
from reflexblue.domain.permissions import (
    BY_KEY,
    CATALOGUE,
    RESOURCES,
    parse_permission,
    resource_permission_key,
)

V2 = "Integrations API V2"
APP = "External API"

# Every permission the product offers: key -> (Module, Application, Permission) display triple.
EXPECTED_CATALOGUE = {
    "administration.access": ("Administrations", APP, "Access to administration"),
    "v1.access": ("Integrations", APP, "External API access"),
    "v2.articles": (V2, APP, "Access to articles"),
    "v2.article-groups": (V2, APP, "Access to article groups"),
    "v2.order-patterns": (V2, APP, "Access to order patterns"),
    "v2.payment-conditions": (V2, APP, "Access to payment conditions"),
    "v2.contacts": (V2, APP, "Access to contacts"),
    "v2.dynamic-fields": (V2, APP, "Access to dynamic fields"),
    "v2.invoices": (V2, APP, "Access to invoices"),
    "v2.integrations": (V2, APP, "Access to integrations"),
    "v2.orders": (V2, APP, "Access to orders"),
    "v2.delivery-notes": (V2, APP, "Access to delivery notes"),
    "v2.relations": (V2, APP, "Access to relations"),
    "v2.relation-groups": (V2, APP, "Access to relation groups"),
    "v2.languages": (V2, APP, "Access to languages"),
    "v2.webhooks": (V2, APP, "Access to webhooks"),
}


def test_catalogue_has_sixteen_entries() -> None:
    assert len(CATALOGUE) == 16
    assert len(BY_KEY) == 16


def test_catalogue_keys_match_contract() -> None:
    assert [permission.key for permission in CATALOGUE] == list(EXPECTED_CATALOGUE)


@pytest.mark.parametrize("key", list(EXPECTED_CATALOGUE))
def test_catalogue_triple_matches_contract(key: str) -> None:
    permission = BY_KEY[key]
    module, application, name = EXPECTED_CATALOGUE[key]

    assert permission.module == module
    assert permission.application == application
    assert permission.name == name
    assert permission.triple == f"{module} / {application} / {name}"


def test_permission_as_dict_fields() -> None:
    assert BY_KEY["v2.order-patterns"].as_dict() == {
        "key": "v2.order-patterns",
        "module": V2,
        "application": APP,
        "permission": "Access to order patterns",
    }


def test_resources_have_v2_permissions() -> None:
    assert len(RESOURCES) == 14
    for resource in RESOURCES:
        assert resource_permission_key(resource) in BY_KEY


@pytest.mark.parametrize("key", list(EXPECTED_CATALOGUE))
def test_parse_accepts_every_key(key: str) -> None:
    assert parse_permission(key).key == key


@pytest.mark.parametrize("key", list(EXPECTED_CATALOGUE))
def test_parse_accepts_every_triple(key: str) -> None:
    module, application, name = EXPECTED_CATALOGUE[key]

    assert parse_permission(f"{module} / {application} / {name}").key == key


@pytest.mark.parametrize("resource", RESOURCES)
def test_parse_accepts_alternative_v2_reading(resource: str) -> None:
    label = resource.replace("-", " ")

    assert parse_permission(f"Integrations / API V2 External API / Access to {label}").key == f"v2.{resource}"


@pytest.mark.parametrize(
    "text",
    [
        "Integrations API V2 / External API / Access to articles",
        "Integrations / API V2 External API / Access to articles",
        "integrations api v2 / external api / access to articles",
        "INTEGRATIONS API V2/EXTERNAL API/ACCESS TO ARTICLES",
        "  Integrations   API  V2 /External API/   Access to   articles  ",
        "Integrations\tAPI V2 / External API / Access to articles",
        "Ｉｎｔｅｇｒａｔｉｏｎｓ API V2 / External API / Access to articles",
        "integrations / api v2 external api / access to articles",
        " v2.articles ",
        "V2.Articles",
    ],
)
def test_parse_accepts_case_and_space_variants(text: str) -> None:
    assert parse_permission(text).key == "v2.articles"


def test_parse_distinguishes_v1_from_v2_module() -> None:
    assert parse_permission("Integrations / External API / External API access").key == "v1.access"
    with pytest.raises(UnknownPermissionError):
        parse_permission("Integrations API V2 / External API / External API access")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v2.unknown",
        "v3.articles",
        "articles",
        "administration",
        "Integrations API V2 / External API / Access to nothing",
        "Integrations API V2 / External API",
        "Integrations API V2 / External API / Access to articles / extra",
        "Administrations / API V2 External API / Access to administration",
        "v2.articles; drop table",
    ],
)
def test_parse_rejects_unknown_permission(text: str) -> None:
    with pytest.raises(UnknownPermissionError) as caught:
        parse_permission(text)

    assert repr(text.strip()) in str(caught.value)


def test_unknown_permission_is_validation_error() -> None:
    with pytest.raises(ValidationError):
        parse_permission("v2.nothing")


def test_unknown_permission_message_suggests_key() -> None:
    with pytest.raises(UnknownPermissionError) as caught:
        parse_permission("v2.nothing")

    message = str(caught.value)
    assert "'v2.nothing'" in message
    assert "v2.articles" in message
    assert caught.value.text == "v2.nothing"


@pytest.mark.parametrize("value", [None, 3, ["v2.articles"]])
def test_parse_rejects_non_string(value: object) -> None:
    with pytest.raises(UnknownPermissionError) as caught:
        parse_permission(value)  # type: ignore[arg-type]

    assert repr(value) in str(caught.value)
