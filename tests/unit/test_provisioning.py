"""Provisioning files: reading, validation errors, applying, idempotence, seats and rollback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from reflexblue.bootstrap import prepare
from reflexblue.provisioning import ProvisioningError, provision_file, read_file
from reflexblue.provisioning.reader import MAX_FILE_BYTES
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import repository
from reflexblue.storage.database import Database
from reflexblue.storage.models import (
    Administration,
    AuditEvent,
    Environment,
    Role,
    RoleAssignment,
    RolePermission,
    User,
)

PASSWORD = "change-me-now"


def spec_example() -> dict[str, Any]:
    """The example file of the product contract."""
    return {
        "plan": {"external_seats": 5},
        "administrations": [
            {"code": "acme", "name": "Acme Wholesale",
             "roles": [{"name": "Shop connector",
                        "permissions": ["administration.access", "v2.articles", "v2.orders"]}]},
        ],
        "users": [
            {"username": "shop-api", "password": PASSWORD, "external_seat": True, "active": True,
             "roles": [{"administration": "acme", "role": "Shop connector"}]},
        ],
    }


@pytest.fixture
def settings(sqlite_url: str, cheap_settings: Callable[..., Settings]) -> Settings:
    """Settings of a migrated, empty SQLite database."""
    settings = cheap_settings(sqlite_url)
    prepare(settings).dispose()
    return settings


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a provisioning document to a file; the name's extension picks JSON or YAML."""

    def write_file(document: Any, name: str = "provision.json") -> Path:
        path = tmp_path / name
        if name.endswith((".yaml", ".yml")):
            path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        else:
            path.write_text(json.dumps(document), encoding="utf-8")
        return path

    return write_file


def database_state(settings: Settings) -> dict[str, Any]:
    """Everything provisioning can change, in a comparable form."""
    database = Database(settings.database_url)
    try:
        with database.read() as session:
            return {
                "environment": [(e.external_seats,) for e in session.scalars(select(Environment))],
                "administrations": sorted((a.code, a.name) for a in session.scalars(select(Administration))),
                "roles": sorted((r.administration.code, r.name) for r in session.scalars(select(Role))),
                "permissions": sorted((p.role_id, p.permission_key) for p in session.scalars(select(RolePermission))),
                "users": sorted(
                    (u.username, u.password_hash, u.active, u.external_seat, u.credential_stamp)
                    for u in session.scalars(select(User))
                ),
                "assignments": sorted((a.user_id, a.role_id) for a in session.scalars(select(RoleAssignment))),
                "audit_events": session.scalar(select(func.count()).select_from(AuditEvent)),
            }
    finally:
        database.dispose()


def load_user(settings: Settings, username: str) -> dict[str, Any]:
    database = Database(settings.database_url)
    try:
        with database.read() as session:
            user = repository.get_user(session, username)
            return {
                "password_hash": user.password_hash,
                "credential_stamp": user.credential_stamp,
                "active": user.active,
                "external_seat": user.external_seat,
                "roles": [(role.administration.code, role.name) for role in repository.user_roles(session, user)],
            }
    finally:
        database.dispose()


def role_permissions(settings: Settings, code: str, name: str) -> list[str]:
    database = Database(settings.database_url)
    try:
        with database.read() as session:
            return repository.role_permissions(session, repository.get_role(session, code, name))
    finally:
        database.dispose()


def seats(settings: Settings) -> tuple[int, int]:
    database = Database(settings.database_url)
    try:
        with database.read() as session:
            return repository.get_environment(session).external_seats, repository.seats_used(session)
    finally:
        database.dispose()


# ---------------------------------------------------------------------------------------------
# Applying


@pytest.mark.parametrize("name", ["provision.json", "provision.yaml", "provision.yml", "provision.txt"])
def test_apply_contract_example(settings: Settings, write: Callable[..., Path], name: str) -> None:
    summary = provision_file(settings, write(spec_example(), name))

    assert summary.plan_changed == 1
    assert summary.administrations_created == 1
    assert summary.roles_created == 1
    assert summary.users_created == 1
    assert summary.seats_linked == 1
    assert summary.user_roles_changed == 1
    assert seats(settings) == (5, 1)
    assert role_permissions(settings, "acme", "Shop connector") == ["administration.access", "v2.articles", "v2.orders"]
    user = load_user(settings, "shop-api")
    assert user["active"] is True
    assert user["external_seat"] is True
    assert user["roles"] == [("acme", "Shop connector")]
    assert Passwords(settings).verify(user["password_hash"], PASSWORD).ok


def test_apply_twice_changes_nothing(settings: Settings, write: Callable[..., Path]) -> None:
    path = write(spec_example())
    provision_file(settings, path)
    before = database_state(settings)

    second = provision_file(settings, path)

    assert not second.changed
    assert second.describe() == []
    assert database_state(settings) == before


def test_changed_password_rotates_stamp(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    provision_file(settings, write(document))
    before = load_user(settings, "shop-api")

    document["users"][0]["password"] = "a-brand-new-password"
    summary = provision_file(settings, write(document))

    after = load_user(settings, "shop-api")
    assert summary.passwords_changed == 1
    assert after["credential_stamp"] != before["credential_stamp"]
    assert Passwords(settings).verify(after["password_hash"], "a-brand-new-password").ok


def test_password_hash_is_stored_as_given(settings: Settings, write: Callable[..., Path]) -> None:
    password_hash = Passwords(settings).hash("hashed-elsewhere-password")
    document = spec_example()
    del document["users"][0]["password"]
    document["users"][0]["password_hash"] = password_hash
    provision_file(settings, write(document))

    assert load_user(settings, "shop-api")["password_hash"] == password_hash
    assert not provision_file(settings, write(document)).changed


def test_password_hash_rehashed_at_login_stays(settings: Settings, write: Callable[..., Path]) -> None:
    # A login re-hashes a provisioned hash made with other argon2 parameters; the file still applies cleanly.
    from argon2 import PasswordHasher

    foreign_hash = PasswordHasher(memory_cost=9216, time_cost=1, parallelism=1).hash("hashed-elsewhere-password")
    document = spec_example()
    del document["users"][0]["password"]
    document["users"][0]["password_hash"] = foreign_hash
    provision_file(settings, write(document))
    stamp = load_user(settings, "shop-api")["credential_stamp"]
    database = Database(settings.database_url)
    with database.write() as session:
        user = repository.get_user(session, "shop-api")
        repository.rehash_password(session, user.id, foreign_hash, Passwords(settings).hash("hashed-elsewhere-password"))
    database.dispose()

    assert not provision_file(settings, write(document)).changed
    assert load_user(settings, "shop-api")["credential_stamp"] == stamp


def test_permission_triples_are_accepted(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["administrations"][0]["roles"][0]["permissions"] = [
        "Administrations / External API / Access to administration",
        "Integrations / API V2 External API / Access to articles",
        "v2.articles",
    ]
    provision_file(settings, write(document))

    assert role_permissions(settings, "acme", "Shop connector") == ["administration.access", "v2.articles"]


def test_listed_roles_and_permissions_become_exact(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["administrations"][0]["roles"].append({"name": "Reporting", "permissions": ["v2.invoices"]})
    document["users"][0]["roles"].append({"administration": "acme", "role": "Reporting"})
    provision_file(settings, write(document))
    assert len(load_user(settings, "shop-api")["roles"]) == 2

    document["administrations"][0]["roles"][0]["permissions"] = ["administration.access", "v2.relations"]
    document["users"][0]["roles"] = [{"administration": "acme", "role": "Reporting"}]
    summary = provision_file(settings, write(document))

    assert summary.role_permissions_changed == 1
    assert summary.user_roles_changed == 1
    assert role_permissions(settings, "acme", "Shop connector") == ["administration.access", "v2.relations"]
    assert load_user(settings, "shop-api")["roles"] == [("acme", "Reporting")]


def test_unnamed_entities_and_omitted_fields_stay(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["users"].append({"username": "other", "password": PASSWORD, "external_seat": True,
                              "roles": [{"administration": "acme", "role": "Shop connector"}]})
    provision_file(settings, write(document))
    other_before = load_user(settings, "other")

    # The second file names neither "other" nor the role's permissions nor the user's roles.
    second = {
        "administrations": [{"code": "acme", "roles": [{"name": "Shop connector"}]}],
        "users": [{"username": "SHOP-API", "active": False}],
    }
    summary = provision_file(settings, write(second, "second.yaml"))

    assert summary.users_deactivated == 1
    assert summary.users_created == 0
    assert load_user(settings, "other") == other_before
    shop = load_user(settings, "shop-api")
    assert shop["active"] is False
    assert shop["external_seat"] is True
    assert shop["roles"] == [("acme", "Shop connector")]
    assert role_permissions(settings, "acme", "Shop connector") == ["administration.access", "v2.articles", "v2.orders"]
    assert seats(settings) == (5, 2)


def test_empty_roles_list_removes_all_roles(settings: Settings, write: Callable[..., Path]) -> None:
    provision_file(settings, write(spec_example()))

    summary = provision_file(settings, write({"users": [{"username": "shop-api", "roles": []}]}))

    assert summary.user_roles_changed == 1
    assert load_user(settings, "shop-api")["roles"] == []


def test_administration_rename(settings: Settings, write: Callable[..., Path]) -> None:
    provision_file(settings, write(spec_example()))

    summary = provision_file(settings, write({"administrations": [{"code": "acme", "name": "Acme Holding"}]}))

    assert summary.administrations_renamed == 1
    assert database_state(settings)["administrations"] == [("acme", "Acme Holding")]


def test_seat_swap_within_plan(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["plan"]["external_seats"] = 1
    provision_file(settings, write(document))

    swap = {
        "users": [
            {"username": "shop-api", "external_seat": False},
            {"username": "newcomer", "password": PASSWORD, "external_seat": True},
        ]
    }
    summary = provision_file(settings, write(swap))

    assert summary.seats_unlinked == 1
    assert summary.seats_linked == 1
    assert load_user(settings, "shop-api")["external_seat"] is False
    assert load_user(settings, "newcomer")["external_seat"] is True
    assert seats(settings) == (1, 1)


def test_plan_lowered_with_unlinks(settings: Settings, write: Callable[..., Path]) -> None:
    provision_file(settings, write(spec_example()))

    summary = provision_file(settings, write({"plan": {"external_seats": 0},
                                              "users": [{"username": "shop-api", "external_seat": False}]}))

    assert summary.plan_changed == 1
    assert summary.seats_unlinked == 1
    assert seats(settings) == (0, 0)


def test_dry_run_changes_nothing(settings: Settings, write: Callable[..., Path]) -> None:
    provision_file(settings, write({"plan": {"external_seats": 1}}))
    before = database_state(settings)

    summary = provision_file(settings, write(spec_example()), dry_run=True)

    assert summary.users_created == 1
    assert summary.plan_changed == 1
    assert database_state(settings) == before


# ---------------------------------------------------------------------------------------------
# Files rejected as a whole


def assert_rejected(
    settings: Settings, path: Path, *expected: str, forbidden: tuple[str, ...] = ()
) -> str:
    """Apply ``path``, expect ProvisioningError containing ``expected``, and check nothing changed."""
    before = database_state(settings)
    with pytest.raises(ProvisioningError) as caught:
        provision_file(settings, path)
    message = str(caught.value)
    for fragment in expected:
        assert fragment in message
    for fragment in forbidden:
        assert fragment not in message
    assert database_state(settings) == before
    return message


@pytest.fixture
def provisioned(settings: Settings, write: Callable[..., Path]) -> Settings:
    """Settings of a database where the contract example has been applied (plan of 5 seats)."""
    provision_file(settings, write(spec_example(), "base.json"))
    return settings


def test_reject_unknown_field(provisioned: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["users"].insert(0, {"username": "first", "password": PASSWORD})
    document["users"].insert(1, {"username": "second", "password": PASSWORD})
    document["users"][2]["pasword"] = document["users"][2].pop("password")

    assert_rejected(provisioned, write(document), 'users[2] ("shop-api"): unknown field "pasword"',
                    'did you mean "password"?', forbidden=(PASSWORD,))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["administrations"][0]["roles"][0]["permissions"].append("v2.artcles"),
         ['administrations[0].roles[0] ("Shop connector")', "unknown permission 'v2.artcles'"]),
        (lambda d: d["users"].append({"username": "Shop-API", "password": PASSWORD}),
         ['users[1] ("Shop-API")', "duplicate username", 'users[0] ("shop-api")']),
        (lambda d: d["administrations"].append({"code": "acme", "name": "Again"}),
         ['administrations[1] ("acme")', "duplicate administration code"]),
        (lambda d: d["administrations"][0]["roles"].append({"name": "shop CONNECTOR", "permissions": []}),
         ['administrations[0].roles[1] ("shop CONNECTOR")', "duplicate role name"]),
        (lambda d: d["users"][0].update(password_hash="$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"),
         ['users[0] ("shop-api")', 'either "password" or "password_hash"']),
        (lambda d: d["users"][0].update(password="short"),
         ['users[0] ("shop-api")', "password has fewer than 12 characters"]),
        (lambda d: d["users"][0].update(password=None, password_hash="plaintext-not-a-hash"),
         ['users[0] ("shop-api")', "invalid password_hash"]),
        (lambda d: d["users"][0].update(active="yes"),
         ['users[0] ("shop-api")', '"active" must be true or false, not a string']),
        (lambda d: d["plan"].update(external_seats=-1),
         ["plan.external_seats", "invalid value -1"]),
        (lambda d: d["plan"].update(external_seats="5"),
         ["plan.external_seats", "expected a whole number"]),
        (lambda d: d["administrations"][0].update(code="Acme Corp"),
         ['administrations[0] ("Acme Corp")', "invalid administration code"]),
        (lambda d: d["users"][0].update(username="  "),
         ["users[0]", "username is empty"]),
        (lambda d: d["users"][0]["roles"].append({"administration": "acme"}),
         ['users[0] ("shop-api").roles[1]', 'missing field "role"']),
        (lambda d: d.update(extra=1),
         ['unknown field "extra"', "allowed fields are plan, administrations, users"]),
        (lambda d: d.update(users={"username": "x"}),
         ["users", "expected a list of users, not a mapping"]),
    ],
    ids=[
        "unknown-permission", "duplicate-username", "duplicate-administration", "duplicate-role",
        "password-and-hash", "short-password", "bad-hash", "active-not-bool", "negative-seats",
        "seats-not-int", "bad-code", "empty-username", "reference-without-role", "unknown-top-field",
        "users-not-list",
    ],
)
def test_reject_invalid_entry(
    provisioned: Settings, write: Callable[..., Path], mutate: Callable[[dict[str, Any]], Any], expected: list[str]
) -> None:
    document = spec_example()
    document["users"][0]["password"] = "a-new-password-that-is-long"
    mutate(document)

    assert_rejected(provisioned, write(document), *expected, forbidden=("a-new-password-that-is-long",))


def test_short_password_not_echoed(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["users"][0]["password"] = "Secr3t!"

    message = assert_rejected(settings, write(document), "password has fewer than 12 characters")

    assert "Secr3t!" not in message


def test_reject_unknown_administration_reference(provisioned: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["administrations"].append({"code": "globex", "name": "Globex", "roles": [{"name": "Any"}]})
    document["users"].append({"username": "new-user", "password": PASSWORD,
                              "roles": [{"administration": "acmee", "role": "Shop connector"}]})

    assert_rejected(provisioned, write(document), 'users[1] ("new-user").roles[0]',
                    "administration 'acmee' not found", "reflexblue administrations list")


def test_reject_unknown_role_reference(provisioned: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["plan"]["external_seats"] = 7
    document["users"][0]["roles"].append({"administration": "acme", "role": "Shop conector"})

    assert_rejected(provisioned, write(document), 'users[0] ("shop-api").roles[1]',
                    "role 'Shop conector' not found in administration 'acme'")


def test_reject_new_administration_without_name(settings: Settings, write: Callable[..., Path]) -> None:
    assert_rejected(settings, write({"administrations": [{"code": "newco"}]}),
                    'administrations[0] ("newco")', 'missing field "name"')


def test_reject_new_user_without_password(provisioned: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["users"].append({"username": "nopass", "external_seat": False})

    assert_rejected(provisioned, write(document), 'users[1] ("nopass")', '"password" or "password_hash"')


def test_reject_more_seats_than_plan(provisioned: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    document["plan"]["external_seats"] = 2
    document["users"] += [
        {"username": f"user-{index}", "password": PASSWORD, "external_seat": True} for index in range(2)
    ]

    assert_rejected(provisioned, write(document), "the file needs 3 External seats but the plan allows 2")


def test_reject_seat_held_by_unlisted_user(provisioned: Settings, write: Callable[..., Path]) -> None:
    document = {"plan": {"external_seats": 1},
                "users": [{"username": "another", "password": PASSWORD, "external_seat": True}]}

    assert_rejected(provisioned, write(document), "needs 2 External seats but the plan allows 1",
                    "1 of them are held by users the file does not list")


def test_reject_seat_when_plan_has_none(settings: Settings, write: Callable[..., Path]) -> None:
    document = spec_example()
    del document["plan"]

    assert_rejected(settings, write(document), 'users[0] ("shop-api")', "the plan has no External seats")


def test_reject_lowering_plan_below_unlisted_seats(provisioned: Settings, write: Callable[..., Path]) -> None:
    assert_rejected(provisioned, write({"plan": {"external_seats": 0}}),
                    "needs 1 External seats but the plan allows 0")


# ---------------------------------------------------------------------------------------------
# Reading files


def test_read_yaml_and_json_alike(write: Callable[..., Path]) -> None:
    from_json = read_file(write(spec_example(), "a.json"))
    from_yaml = read_file(write(spec_example(), "a.yaml"))

    assert from_json.users == from_yaml.users
    assert from_json.administrations == from_yaml.administrations
    assert from_json.external_seats == 5


def test_read_rejects_invalid_syntax(tmp_path: Path) -> None:
    json_file = tmp_path / "broken.json"
    json_file.write_text('{"users": [}', encoding="utf-8")
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text("users: [\n  - {username: a\n", encoding="utf-8")

    with pytest.raises(ProvisioningError, match=r"broken.json: invalid JSON at line 1"):
        read_file(json_file)
    with pytest.raises(ProvisioningError, match=r"broken.yaml: invalid YAML at line"):
        read_file(yaml_file)


def test_read_rejects_duplicate_json_keys(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    path.write_text('{"users": [], "users": []}', encoding="utf-8")

    with pytest.raises(ProvisioningError, match='duplicate key "users"'):
        read_file(path)


def test_read_rejects_unsafe_yaml_tags(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.yaml"
    path.write_text("plan: !!python/object/apply:os.system ['true']\n", encoding="utf-8")

    with pytest.raises(ProvisioningError, match="invalid YAML"):
        read_file(path)


def test_read_rejects_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")

    with pytest.raises(ProvisioningError, match="file is empty"):
        read_file(path)


def test_read_rejects_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)

    with pytest.raises(ProvisioningError, match="larger than the limit"):
        read_file(path)


def test_read_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="not found"):
        read_file(tmp_path / "absent.yaml")


def test_broken_file_creates_no_database(
    tmp_path: Path, cheap_settings: Callable[..., Settings], write: Callable[..., Path]
) -> None:
    settings = cheap_settings(f"sqlite:///{tmp_path}/never.db")

    with pytest.raises(ProvisioningError):
        provision_file(settings, write({"users": [{"username": "x", "pasword": PASSWORD}]}))

    assert not (tmp_path / "never.db").exists()


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.mark.postgres
def test_apply_on_postgresql(
    postgres_url: str, cheap_settings: Callable[..., Settings], write: Callable[..., Path]
) -> None:
    settings = cheap_settings(postgres_url)
    path = write(spec_example())

    first = provision_file(settings, path)
    before = database_state(settings)
    second = provision_file(settings, path)

    assert first.users_created == 1
    assert not second.changed
    assert database_state(settings) == before
    document = spec_example()
    document["plan"]["external_seats"] = 0
    assert_rejected(settings, write(document), "the plan has no External seats")
