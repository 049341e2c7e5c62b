"""Property tests of the provisioning reader: any document gives a plan or ProvisioningError, never a leak.

Generated passwords start with ``7!%``, draw their letters from a-m (either case), digits and
``!#%+``, and end with ``Zq``, while usernames use only n-z and ``-``. So a well-formed password
passes the policy: it is not on the common list, not a repeated unit or a run, and cannot contain
a username of four or more characters. It is also distinctive enough that finding it in a
message means the message leaked it.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reflexblue.domain.permissions import CATALOGUE
from reflexblue.provisioning.reader import ProvisioningError, ProvisioningSpec, load_text, parse_spec

FUZZ_SETTINGS = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOURCE = "fuzz.yaml"

password_bodies = st.text(alphabet="abcdefghijklmABCDEFGHIJKLM0123456789!#%+", min_size=7, max_size=40)
passwords = password_bodies.map(lambda body: f"7!%{body}Zq")
usernames = st.text(alphabet="nopqrstuvwxyz-", min_size=1, max_size=20).filter(lambda name: name.strip("-"))
administration_codes = st.from_regex(r"[a-z0-9][a-z0-9-]{0,15}", fullmatch=True)
role_names = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1,
                     max_size=30).filter(lambda name: name.strip())
permission_texts = st.sampled_from(
    [permission.key for permission in CATALOGUE]
    + [f"{permission.module} / {permission.application} / {permission.name}" for permission in CATALOGUE]
)
PHC_HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=15), children, max_size=4),
    max_leaves=20,
)


@st.composite
def administrations(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(role_names, max_size=3, unique_by=lambda name: name.strip().casefold()))
    roles = []
    for name in names:
        role: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            role["permissions"] = draw(st.lists(permission_texts, max_size=5))
        roles.append(role)
    entry: dict[str, Any] = {"code": draw(administration_codes), "name": draw(role_names), "roles": roles}
    return entry


@st.composite
def users(draw: st.DrawFn, codes: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"username": draw(usernames)}
    if draw(st.booleans()):
        entry["password"] = draw(passwords)
    else:
        entry["password_hash"] = PHC_HASH
    for flag in ("active", "external_seat"):
        if draw(st.booleans()):
            entry[flag] = draw(st.booleans())
    if codes and draw(st.booleans()):
        entry["roles"] = [{"administration": draw(st.sampled_from(codes)), "role": draw(role_names)}
                          for _ in range(draw(st.integers(0, 3)))]
    return entry


@st.composite
def well_formed_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["plan"] = {"external_seats": draw(st.integers(0, 1000))}
    entries = draw(st.lists(administrations(), max_size=3, unique_by=lambda entry: entry["code"]))
    if entries or draw(st.booleans()):
        document["administrations"] = entries
    codes = [entry["code"] for entry in entries]
    user_entries = draw(st.lists(users(codes), max_size=4, unique_by=lambda entry: entry["username"]))
    if user_entries or draw(st.booleans()):
        document["users"] = user_entries
    return document


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every value below ``value`` (dictionary keys and list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _bad_passwords(username: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        password_bodies.map(lambda body: f"7!%{body[:5]}"),  # too short
        password_bodies.map(lambda body: "7!%" + body * (1030 // len(body) + 1)),  # too long
        st.sampled_from(["password1234", "Qwertyuiop12", "123456789012"]),  # on the common list
        password_bodies.map(lambda body: f"7!%{body}-{username}-Zq"),  # contains the username
        json_values.filter(lambda value: not isinstance(value, str)),
    )


@st.composite
def malformed_documents(draw: st.DrawFn) -> dict[str, Any] | Any:
    """A well-formed document with one value replaced, one unknown field added, or a bad password."""
    document = draw(well_formed_documents())
    choice = draw(st.sampled_from(["replace", "unknown-field", "bad-password", "anything"]))
    if choice == "anything":
        return draw(json_values)
    if choice == "bad-password" and document.get("users"):
        user = draw(st.sampled_from(document["users"]))
        user.pop("password_hash", None)
        user["password"] = draw(_bad_passwords(user["username"]))
        return document
    paths = _paths(document)
    path = draw(st.sampled_from(paths))
    if not path:
        return draw(json_values)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if choice == "unknown-field" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    else:
        parent[path[-1]] = draw(json_values)
    return document


def _passwords_in(document: Any) -> list[str]:
    """Return every string stored under a "password" key anywhere in ``document``."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "password" and isinstance(value, str):
                found.append(value)
            found.extend(_passwords_in(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(_passwords_in(item))
    return found


def _parse(document: Any) -> ProvisioningSpec | ProvisioningError:
    """Parse a copy of ``document``; any exception other than ProvisioningError fails the test."""
    try:
        return parse_spec(copy.deepcopy(document), SOURCE)
    except ProvisioningError as error:
        return error


@FUZZ_SETTINGS
@given(document=well_formed_documents())
def test_well_formed_document_gives_plan(document: dict[str, Any]) -> None:
    result = _parse(document)

    assert isinstance(result, ProvisioningSpec), f"{result}\n{json.dumps(document, ensure_ascii=False)[:2000]}"
    assert len(result.users) == len(document.get("users", []))
    assert len(result.administrations) == len(document.get("administrations", []))


@FUZZ_SETTINGS
@given(document=malformed_documents())
def test_malformed_document_gives_plan_or_error(document: Any) -> None:
    result = _parse(document)

    assert isinstance(result, ProvisioningSpec | ProvisioningError)


@FUZZ_SETTINGS
@given(document=malformed_documents())
def test_errors_never_contain_passwords(document: Any) -> None:
    result = _parse(document)

    if isinstance(result, ProvisioningError):
        for password in _passwords_in(document):
            if password.startswith("7!%") or len(password) >= 12:
                assert password not in str(result)


@FUZZ_SETTINGS
@given(document=well_formed_documents())
def test_plan_repr_never_contains_passwords(document: dict[str, Any]) -> None:
    result = _parse(document)

    for password in _passwords_in(document):
        assert password not in repr(result)


@FUZZ_SETTINGS
@given(text=st.text(max_size=300), suffix=st.sampled_from(["", ".json", ".yaml"]))
def test_load_text_gives_data_or_error(text: str, suffix: str) -> None:
    try:
        load_text(text, SOURCE, suffix)
    except ProvisioningError:
        pass


# Values that the YAML and JSON parsers themselves reject with errors other than syntax errors.
def test_load_text_impossible_yaml_date() -> None:
    with pytest.raises(ProvisioningError):
        load_text("administrations:\n  - code: acme\n    name: 2024-13-45\n", SOURCE, ".yaml")


def test_load_text_deeply_nested_json() -> None:
    with pytest.raises(ProvisioningError):
        load_text("[" * 100_000, SOURCE, ".json")


def test_load_text_deeply_nested_yaml() -> None:
    with pytest.raises(ProvisioningError):
        load_text("[" * 100_000, SOURCE, ".yaml")
