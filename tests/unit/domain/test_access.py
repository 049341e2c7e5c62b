"""Access decisions for API version 1 and 2, reachable resources and the access report."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reflexblue.domain.access import (
    ApiVersion,
    decide,
    explain,
    reachable_resources,
    required_permissions,
)
from reflexblue.domain.permissions import BY_KEY, RESOURCES

ADMIN = "administration.access"
V1 = "v1.access"
ALL_V2 = frozenset(f"v2.{resource}" for resource in RESOURCES)


def keys_of(permissions: tuple) -> list[str]:
    return [permission.key for permission in permissions]


# ------------------------------------------------------------------------------------------------
# required_permissions


def test_required_v1_is_administration_and_v1() -> None:
    assert required_permissions(ApiVersion.V1, None) == (ADMIN, V1)
    assert required_permissions(ApiVersion.V1, "articles") == (ADMIN, V1)


def test_required_v2_administration_call() -> None:
    assert required_permissions(ApiVersion.V2, None) == (ADMIN,)


@pytest.mark.parametrize("resource", RESOURCES)
def test_required_v2_resource_permission(resource: str) -> None:
    assert required_permissions(ApiVersion.V2, resource) == (ADMIN, f"v2.{resource}")


def test_required_rejects_unknown_resource() -> None:
    with pytest.raises(ValueError, match="'nothing'"):
        required_permissions(ApiVersion.V2, "nothing")


# ------------------------------------------------------------------------------------------------
# decide, API version 1


def test_v1_allowed_with_both_permissions() -> None:
    decision = decide({"acme": frozenset({ADMIN, V1})}, "acme", ApiVersion.V1, "articles")

    assert decision.allowed
    assert decision.missing == ()
    assert keys_of(decision.required) == [ADMIN, V1]


def test_v1_without_v1_access_misses_it() -> None:
    decision = decide({"acme": frozenset({ADMIN} | ALL_V2)}, "acme", ApiVersion.V1, "articles")

    assert not decision.allowed
    assert keys_of(decision.missing) == [V1]


def test_v1_without_administration_access_misses_both() -> None:
    decision = decide({"acme": frozenset({V1})}, "acme", ApiVersion.V1, None)

    assert not decision.allowed
    assert keys_of(decision.missing) == [ADMIN, V1]


def test_decision_records_request() -> None:
    decision = decide({}, "acme", ApiVersion.V2, "orders")

    assert decision.administration == "acme"
    assert decision.version is ApiVersion.V2
    assert decision.resource == "orders"


def test_missing_entries_are_catalogue_permissions() -> None:
    decision = decide({}, "acme", ApiVersion.V2, "orders")

    assert decision.missing == (BY_KEY[ADMIN], BY_KEY["v2.orders"])
    assert decision.missing[1].triple == "Integrations API V2 / External API / Access to orders"


# ------------------------------------------------------------------------------------------------
# decide, API version 2


@pytest.mark.parametrize("resource", RESOURCES)
def test_v2_allowed_with_resource_permission(resource: str) -> None:
    granted = {"acme": frozenset({ADMIN, f"v2.{resource}"})}

    decision = decide(granted, "acme", ApiVersion.V2, resource)

    assert decision.allowed
    assert keys_of(decision.required) == [ADMIN, f"v2.{resource}"]


@pytest.mark.parametrize("resource", RESOURCES)
def test_v2_other_resource_permission_denied(resource: str) -> None:
    others = ALL_V2 - {f"v2.{resource}"}
    granted = {"acme": frozenset({ADMIN, V1} | others)}

    decision = decide(granted, "acme", ApiVersion.V2, resource)

    assert not decision.allowed
    assert keys_of(decision.missing) == [f"v2.{resource}"]


def test_v2_administration_call_allowed() -> None:
    assert decide({"acme": frozenset({ADMIN})}, "acme", ApiVersion.V2, None).allowed


def test_v2_perms_without_administration_access_denied() -> None:
    granted = {"acme": frozenset({V1} | ALL_V2)}

    decision = decide(granted, "acme", ApiVersion.V2, "articles")

    assert not decision.allowed
    assert keys_of(decision.missing) == [ADMIN, "v2.articles"]


def test_v2_no_administration_hides_permissions() -> None:
    # The caller has v2.articles but not administration.access. The decision must not reveal
    # which permissions exist in the administration, so both are listed as missing.
    with_article = decide({"acme": frozenset({"v2.articles"})}, "acme", ApiVersion.V2, "articles")
    without = decide({"acme": frozenset()}, "acme", ApiVersion.V2, "articles")

    assert with_article.missing == without.missing


def test_permissions_do_not_cross_administrations() -> None:
    granted = {"acme": frozenset({ADMIN, V1} | ALL_V2), "beta": frozenset()}

    assert not decide(granted, "beta", ApiVersion.V2, "articles").allowed
    assert not decide(granted, "beta", ApiVersion.V1, None).allowed


@pytest.mark.parametrize(
    ("version", "resource"),
    [(ApiVersion.V1, None), (ApiVersion.V1, "orders"), (ApiVersion.V2, None), (ApiVersion.V2, "orders")],
)
def test_unknown_administration_equals_no_access(version: ApiVersion, resource: str | None) -> None:
    granted = {"acme": frozenset({ADMIN, V1} | ALL_V2), "closed": frozenset({V1, "v2.orders"})}

    unknown = decide(granted, "does-not-exist", version, resource)
    closed = decide(granted, "closed", version, resource)

    assert not unknown.allowed
    assert unknown.missing == closed.missing
    assert unknown.required == closed.required


# ------------------------------------------------------------------------------------------------
# reachable_resources


def test_reachable_v2_exactly_granted_resources() -> None:
    held_keys = frozenset({ADMIN, "v2.orders", "v2.articles", "v2.webhooks"})

    assert reachable_resources(held_keys, ApiVersion.V2) == ("articles", "orders", "webhooks")


def test_reachable_v2_needs_administration_access() -> None:
    assert reachable_resources(frozenset(ALL_V2), ApiVersion.V2) == ()


def test_reachable_v1_all_or_nothing() -> None:
    assert reachable_resources(frozenset({ADMIN, V1}), ApiVersion.V1) == RESOURCES
    assert reachable_resources(frozenset({ADMIN} | ALL_V2), ApiVersion.V1) == ()


def test_reachable_empty_for_no_permissions() -> None:
    assert reachable_resources(frozenset(), ApiVersion.V2) == ()


# ------------------------------------------------------------------------------------------------
# explain


def test_explain_reports_per_administration() -> None:
    granted = {"acme": frozenset({ADMIN, V1, "v2.articles"}), "beta": frozenset({"v2.orders"})}

    report = explain(granted, ["acme", "beta", "gamma"])

    assert [entry["administration"] for entry in report] == ["acme", "beta", "gamma"]


def test_explain_full_access_administration() -> None:
    granted = {"acme": frozenset({ADMIN, V1, "v2.articles"})}

    (entry,) = explain(granted, ["acme"])

    assert entry["permissions"] == sorted({ADMIN, V1, "v2.articles"})
    assert entry["v1"] == {"allowed": True, "missing": []}
    assert entry["v2"]["administration_access"] is True
    assert entry["v2"]["resources"] == ["articles"]
    assert entry["v2"]["missing"] == [f"v2.{resource}" for resource in RESOURCES if resource != "articles"]


def test_explain_without_administration_access() -> None:
    granted = {"beta": frozenset({"v2.orders"})}

    (entry,) = explain(granted, ["beta"])

    assert entry["v1"] == {"allowed": False, "missing": [ADMIN, V1]}
    assert entry["v2"]["administration_access"] is False
    assert entry["v2"]["resources"] == []
    assert entry["v2"]["missing"] == [ADMIN] + [f"v2.{resource}" for resource in RESOURCES]


def test_explain_unknown_administration_lists_nothing_held() -> None:
    (entry,) = explain({}, ["gamma"])

    assert entry["permissions"] == []
    assert entry["v1"]["allowed"] is False
    assert entry["v2"]["resources"] == []


# ------------------------------------------------------------------------------------------------
# Property test against a reference model


ADMINISTRATIONS = ["acme", "beta", "gamma"]
PERMISSION_KEYS = sorted(BY_KEY)


def reference_missing(
    roles: dict[str, tuple[str, frozenset[str]]],
    assigned: frozenset[str],
    administration: str,
    version: ApiVersion,
    resource: str | None,
) -> list[str]:
    """Compute the missing permissions directly from the access rules.

    Version 1 needs administration.access and v1.access, version 2 needs administration.access and
    the resource's permission, and without administration.access every required permission is missing.
    """
    held_keys: set[str] = set()
    for role_name in assigned:
        role_administration, role_permissions = roles[role_name]
        if role_administration == administration:
            held_keys |= role_permissions

    if version is ApiVersion.V1:
        needed = [ADMIN, V1]
    elif resource is None:
        needed = [ADMIN]
    else:
        needed = [ADMIN, f"v2.{resource}"]

    if ADMIN not in held_keys:
        return needed
    return [key for key in needed if key not in held_keys]


def granted_from_roles(
    roles: dict[str, tuple[str, frozenset[str]]], assigned: frozenset[str]
) -> dict[str, frozenset[str]]:
    """Merge the assigned roles' permissions per administration, as the access snapshot does."""
    merged: dict[str, set[str]] = {}
    for role_name in assigned:
        administration, permissions = roles[role_name]
        merged.setdefault(administration, set()).update(permissions)
    return {code: frozenset(keys) for code, keys in merged.items()}


role_catalogues = st.dictionaries(
    keys=st.text(alphabet="abcdefgh", min_size=1, max_size=4),
    values=st.tuples(st.sampled_from(ADMINISTRATIONS), st.frozensets(st.sampled_from(PERMISSION_KEYS))),
    max_size=8,
)


@st.composite
def access_cases(draw: st.DrawFn) -> tuple:
    roles = draw(role_catalogues)
    assigned = draw(st.frozensets(st.sampled_from(sorted(roles)))) if roles else frozenset()
    administration = draw(st.sampled_from([*ADMINISTRATIONS, "unknown"]))
    version = draw(st.sampled_from(list(ApiVersion)))
    resource = draw(st.one_of(st.none(), st.sampled_from(RESOURCES)))
    return roles, assigned, administration, version, resource


@settings(max_examples=400, database=None, deadline=None)
@given(access_cases())
def test_decide_matches_reference_model(case: tuple) -> None:
    roles, assigned, administration, version, resource = case
    granted = granted_from_roles(roles, assigned)

    decision = decide(granted, administration, version, resource)
    expected = reference_missing(roles, assigned, administration, version, resource)

    assert keys_of(decision.missing) == expected
    assert decision.allowed == (expected == [])


@settings(max_examples=200, database=None, deadline=None)
@given(st.frozensets(st.sampled_from(PERMISSION_KEYS)), st.sampled_from(list(ApiVersion)))
def test_reachable_matches_decide(held_keys: frozenset[str], version: ApiVersion) -> None:
    granted = {"acme": held_keys}
    allowed = tuple(resource for resource in RESOURCES if decide(granted, "acme", version, resource).allowed)

    assert reachable_resources(held_keys, version) == allowed
