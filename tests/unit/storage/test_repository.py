"""Repository rules on a real database: seats, users, roles, access snapshots, epoch and audit."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from reflexblue.domain.errors import (
    ConflictError,
    NotFoundError,
    SeatLimitError,
    UnknownPermissionError,
    ValidationError,
)
from reflexblue.security.keys import PREVIOUS, create_key, retire_key
from reflexblue.storage import repository as repo
from reflexblue.storage.database import Database
from reflexblue.storage.models import AuditEvent, Role, RoleAssignment, RolePermission, SigningKey, User

# The repository stores any hash it is given, so a well-formed PHC string without a real password is enough.
HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
ACTOR = "unit-test"


def add_user(session: Session, name: str, *, seat: bool = False, active: bool = True) -> User:
    return repo.create_user(session, name, HASH, actor=ACTOR, external_seat=seat, active=active)


def add_role(session: Session, administration: str, name: str, keys: list[str]) -> Role:
    role = repo.create_role(session, administration, name, actor=ACTOR)
    repo.set_role_permissions(session, role, keys, actor=ACTOR)
    return role


def set_seats(database: Database, seats: int) -> None:
    with database.write() as session:
        repo.set_external_seats(session, seats, actor=ACTOR)


def linked_usernames(database: Database) -> list[str]:
    with database.read() as session:
        return sorted(user.username for user in repo.list_users(session) if user.external_seat)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: dt.datetime
    event: str
    actor: str
    username: str | None
    administration: str | None
    detail: dict[str, Any]


def audit_events(database: Database) -> list[AuditRow]:
    """Return the audit trail, oldest first, as plain rows that outlive the session."""
    columns = [getattr(AuditEvent, name) for name in AuditRow.__dataclass_fields__]
    with database.read() as session:
        return [AuditRow(*row) for row in session.execute(select(*columns).order_by(AuditEvent.id))]


def epoch(database: Database) -> int:
    with database.read() as session:
        return repo.read_access_epoch(session)


@pytest.fixture
def database(sqlite_database: Database) -> Database:
    """The SQLite database with two administrations, acme and beta."""
    with sqlite_database.write() as session:
        repo.upsert_administration(session, "acme", "Acme Wholesale", actor=ACTOR)
        repo.upsert_administration(session, "beta", "Beta Retail", actor=ACTOR)
    return sqlite_database


# ------------------------------------------------------------------------------------------------
# External seats


def test_link_within_plan_succeeds(database: Database) -> None:
    set_seats(database, 2)
    with database.write() as session:
        add_user(session, "first", seat=True)
        add_user(session, "second", seat=True)

    assert linked_usernames(database) == ["first", "second"]


def test_link_beyond_plan_raises_seat_limit(database: Database) -> None:
    set_seats(database, 2)
    with database.write() as session:
        add_user(session, "first", seat=True)
        add_user(session, "second", seat=True)
        third = add_user(session, "third")

    with pytest.raises(SeatLimitError) as caught, database.write() as session:
        repo.link_seat(session, repo.get_user(session, "third"), actor=ACTOR)

    assert (caught.value.used, caught.value.limit) == (2, 2)
    assert "all 2 External seats" in str(caught.value)
    assert third.external_seat is False
    assert linked_usernames(database) == ["first", "second"]


def test_zero_seat_plan_message_mentions_plan(database: Database) -> None:
    with database.write() as session:
        add_user(session, "shop-api")

    with pytest.raises(SeatLimitError) as caught, database.write() as session:
        repo.link_seat(session, repo.get_user(session, "shop-api"), actor=ACTOR)

    message = str(caught.value)
    assert "plan has no External seats" in message
    assert "External Seats / API" in message
    assert caught.value.limit == 0


def test_seat_on_zero_plan_rolls_back(database: Database) -> None:
    with pytest.raises(SeatLimitError), database.write() as session:
        add_user(session, "shop-api", seat=True)

    with database.read() as session:
        assert repo.find_user(session, "shop-api") is None


def test_link_twice_uses_one_seat(database: Database) -> None:
    set_seats(database, 1)
    with database.write() as session:
        user = add_user(session, "shop-api", seat=True)
        repo.link_seat(session, user, actor=ACTOR)
        used = repo.seats_used(session)

    assert used == 1


def test_unlink_frees_seat(database: Database) -> None:
    set_seats(database, 1)
    with database.write() as session:
        first = add_user(session, "first", seat=True)
        second = add_user(session, "second")
        repo.unlink_seat(session, first, actor=ACTOR)
        repo.link_seat(session, second, actor=ACTOR)

    assert linked_usernames(database) == ["second"]


def test_inactive_user_still_holds_seat(database: Database) -> None:
    set_seats(database, 1)
    with database.write() as session:
        user = add_user(session, "first", seat=True)
        repo.set_active(session, user, False, actor=ACTOR)

    with pytest.raises(SeatLimitError), database.write() as session:
        add_user(session, "second", seat=True)


def test_deleting_user_frees_seat(database: Database) -> None:
    set_seats(database, 1)
    with database.write() as session:
        repo.delete_user(session, add_user(session, "first", seat=True), actor=ACTOR)
        add_user(session, "second", seat=True)

    assert linked_usernames(database) == ["second"]


def test_seats_below_used_rejected(database: Database) -> None:
    set_seats(database, 3)
    with database.write() as session:
        add_user(session, "first", seat=True)
        add_user(session, "second", seat=True)

    with pytest.raises(ValidationError) as caught, database.write() as session:
        repo.set_external_seats(session, 1, actor=ACTOR)

    assert "2 users are linked" in str(caught.value)
    with database.read() as session:
        assert repo.get_environment(session).external_seats == 3


def test_seats_equal_to_used_accepted(database: Database) -> None:
    set_seats(database, 3)
    with database.write() as session:
        add_user(session, "first", seat=True)
        add_user(session, "second", seat=True)
    set_seats(database, 2)

    with database.read() as session:
        assert repo.get_environment(session).external_seats == 2


def test_seats_beyond_column_range_rejected(any_database: Database) -> None:
    # The column is a 32-bit integer on PostgreSQL, so 2**31 seats cannot be stored on either backend.
    with pytest.raises(ValidationError, match="invalid external_seats"), any_database.write() as session:
        repo.set_external_seats(session, 2**31, actor=ACTOR)


@pytest.mark.parametrize("seats", [-1, True, 2.5, "5", None])
def test_seats_invalid_value_rejected(database: Database, seats: Any) -> None:
    with pytest.raises(ValidationError, match="invalid external_seats"), database.write() as session:
        repo.set_external_seats(session, seats, actor=ACTOR)


# ------------------------------------------------------------------------------------------------
# Concurrent changes


def run_at_once(
    database: Database, count: int, change: Callable[[Session, int], object]
) -> list[BaseException | None]:
    """Call ``change(session, index)`` in ``count`` threads released together, each in its own transaction.

    Returns one entry per thread: None for a commit, or the exception that ended the transaction.
    """
    barrier = threading.Barrier(count)
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        barrier.wait()
        outcome: BaseException | None = None
        try:
            with database.write() as session:
                change(session, index)
        except BaseException as error:  # noqa: BLE001 - collected and checked by the test
            outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def failure_types(outcomes: list[BaseException | None]) -> list[str]:
    return sorted(type(outcome).__name__ for outcome in outcomes if outcome is not None)


def test_concurrent_links_respect_plan(any_database: Database) -> None:
    usernames = [f"user-{index:02d}" for index in range(20)]
    set_seats(any_database, 5)
    with any_database.write() as session:
        for name in usernames:
            add_user(session, name)

    def link(session: Session, index: int) -> None:
        repo.link_seat(session, repo.get_user(session, usernames[index]), actor=ACTOR)

    outcomes = run_at_once(any_database, 20, link)

    assert outcomes.count(None) == 5
    assert failure_types(outcomes) == ["SeatLimitError"] * 15
    assert len(linked_usernames(any_database)) == 5


def test_concurrent_duplicate_users_conflict(any_database: Database) -> None:
    outcomes = run_at_once(any_database, 8, lambda session, _index: add_user(session, "Shop-API"))

    assert outcomes.count(None) == 1
    assert failure_types(outcomes) == ["ConflictError"] * 7


def test_concurrent_duplicate_roles_conflict(any_database: Database) -> None:
    with any_database.write() as session:
        repo.upsert_administration(session, "acme", "Acme Wholesale", actor=ACTOR)

    outcomes = run_at_once(
        any_database, 8, lambda session, _index: repo.create_role(session, "acme", "Shop", actor=ACTOR)
    )

    assert outcomes.count(None) == 1
    assert failure_types(outcomes) == ["ConflictError"] * 7


def test_concurrent_administration_upserts_agree(any_database: Database) -> None:
    outcomes = run_at_once(
        any_database, 8, lambda session, _index: repo.upsert_administration(session, "gamma", "Gamma", actor=ACTOR)
    )

    # An upsert of the same administration either succeeds or reports a conflict, never a driver error.
    assert set(failure_types(outcomes)) <= {"ConflictError"}
    with any_database.read() as session:
        assert [administration.code for administration in repo.list_administrations(session)] == ["gamma"]


# ------------------------------------------------------------------------------------------------
# Users


@pytest.mark.parametrize("duplicate", ["SHOP-API", "shop-api", "  Shop-Api ", "ｓｈｏｐ-ａｐｉ"])
def test_duplicate_username_conflicts(database: Database, duplicate: str) -> None:
    with database.write() as session:
        add_user(session, "Shop-API")

    with pytest.raises(ConflictError, match="already exists"), database.write() as session:
        add_user(session, duplicate)


def test_sharp_s_username_conflicts(database: Database) -> None:
    with database.write() as session:
        add_user(session, "Straße")

    with pytest.raises(ConflictError), database.write() as session:
        add_user(session, "STRASSE")


def test_confusable_username_is_distinct(database: Database) -> None:
    with database.write() as session:
        add_user(session, "shop-api")
        add_user(session, "shop-\u0430pi")

    with database.read() as session:
        assert len(repo.list_users(session)) == 2


def test_find_user_by_variant(database: Database) -> None:
    with database.write() as session:
        created = add_user(session, "Shop-API")

    with database.read() as session:
        found = repo.find_user(session, " SHOP-api ")
        found_id, found_name = (found.id, found.username) if found else (None, None)

    assert found_id == created.id
    assert found_name == "Shop-API"


@pytest.mark.parametrize("username", ["", "   ", "bad\x00name", "a" * 151])
def test_invalid_username_rejected(database: Database, username: str) -> None:
    with pytest.raises(ValidationError, match="invalid username"), database.write() as session:
        add_user(session, username)


def test_get_unknown_user_not_found(database: Database) -> None:
    with pytest.raises(NotFoundError, match="'ghost'"), database.read() as session:
        repo.get_user(session, "ghost")


def test_user_ids_are_random_uuids(database: Database) -> None:
    with database.write() as session:
        ids = [add_user(session, f"user-{index}").id for index in range(3)]

    assert len(set(ids)) == 3
    assert all(len(user_id) == 36 and user_id[14] == "4" for user_id in ids)


def test_password_change_rotates_stamp(database: Database) -> None:
    with database.write() as session:
        user = add_user(session, "shop-api")
        before = user.credential_stamp
        repo.set_password_hash(session, user, HASH + "x", actor=ACTOR)

    assert user.credential_stamp != before
    assert user.password_hash == HASH + "x"


def test_revoke_tokens_rotates_stamp(database: Database) -> None:
    with database.write() as session:
        user = add_user(session, "shop-api")
        before = user.credential_stamp
        repo.revoke_tokens(session, user, actor=ACTOR)

    assert user.credential_stamp != before


def test_rehash_keeps_stamp(database: Database) -> None:
    with database.write() as session:
        user = add_user(session, "shop-api")
        stamp = user.credential_stamp
        user_id = user.id
    with database.write() as session:
        repo.rehash_password(session, user_id, HASH, HASH + "new")

    with database.read() as session:
        stored = session.get(User, user_id)
        assert stored.password_hash == HASH + "new"
        assert stored.credential_stamp == stamp


def test_rehash_skips_changed_hash(database: Database) -> None:
    with database.write() as session:
        user_id = add_user(session, "shop-api").id
    with database.write() as session:
        repo.rehash_password(session, user_id, "stale-hash", HASH + "new")

    with database.read() as session:
        assert session.get(User, user_id).password_hash == HASH


def test_delete_user_removes_assignments(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access"])
        user = add_user(session, "shop-api")
        repo.assign(session, user, role, actor=ACTOR)
        repo.delete_user(session, user, actor=ACTOR)

    with database.read() as session:
        assert session.scalars(select(RoleAssignment)).all() == []


# ------------------------------------------------------------------------------------------------
# Administrations


@pytest.mark.parametrize("code", ["", "Acme", "acme_1", "-acme", "acme corp", "a" * 65, "acmé"])
def test_invalid_administration_code_rejected(database: Database, code: str) -> None:
    with pytest.raises(ValidationError, match="invalid administration code"), database.write() as session:
        repo.upsert_administration(session, code, "Name", actor=ACTOR)


def test_upsert_administration_renames(database: Database) -> None:
    with database.write() as session:
        repo.upsert_administration(session, "acme", "Acme Renamed", actor=ACTOR)

    with database.read() as session:
        assert repo.get_administration(session, "acme").name == "Acme Renamed"
        assert len(repo.list_administrations(session)) == 2


def test_administration_name_required(database: Database) -> None:
    with pytest.raises(ValidationError, match="invalid name"), database.write() as session:
        repo.upsert_administration(session, "gamma", "   ", actor=ACTOR)


def test_delete_administration_removes_roles(database: Database) -> None:
    with database.write() as session:
        add_role(session, "acme", "Shop", ["administration.access"])
        repo.delete_administration(session, "acme", actor=ACTOR)

    with database.read() as session:
        assert repo.list_roles(session) == []
        assert session.scalars(select(RolePermission)).all() == []


# ------------------------------------------------------------------------------------------------
# Roles and permissions


def test_role_permissions_become_exact(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        changed = repo.set_role_permissions(session, role, ["v2.articles", "v2.orders"], actor=ACTOR)
        role_keys = repo.role_permissions(session, role)

    assert changed is True
    assert role_keys == ["v2.articles", "v2.orders"]


def test_role_permissions_same_set_unchanged(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        changed = repo.set_role_permissions(session, role, ["v2.articles", "administration.access"], actor=ACTOR)

    assert changed is False


def test_role_permissions_empty_clears(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        repo.set_role_permissions(session, role, [], actor=ACTOR)
        role_keys = repo.role_permissions(session, role)

    assert role_keys == []


def test_role_permissions_duplicates_collapse(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["v2.articles", "v2.articles"])
        role_keys = repo.role_permissions(session, role)

    assert role_keys == ["v2.articles"]


def test_unknown_permission_changes_nothing(database: Database) -> None:
    with database.write() as session:
        role_id = add_role(session, "acme", "Shop", ["administration.access"]).id

    with pytest.raises(UnknownPermissionError, match="'v2.nothing'"), database.write() as session:
        role = session.get(Role, role_id)
        repo.set_role_permissions(session, role, ["v2.articles", "v2.nothing"], actor=ACTOR)

    with database.read() as session:
        assert repo.role_permissions(session, session.get(Role, role_id)) == ["administration.access"]


def test_grant_and_revoke_single_permission(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access"])
        repo.grant(session, role, "v2.orders", actor=ACTOR)
        repo.revoke(session, role, "administration.access", actor=ACTOR)
        role_keys = repo.role_permissions(session, role)

    assert role_keys == ["v2.orders"]


def test_duplicate_role_name_conflicts(database: Database) -> None:
    with database.write() as session:
        repo.create_role(session, "acme", "Shop connector", actor=ACTOR)

    with pytest.raises(ConflictError), database.write() as session:
        repo.create_role(session, "acme", "SHOP CONNECTOR", actor=ACTOR)


def test_same_role_name_in_other_administration(database: Database) -> None:
    with database.write() as session:
        repo.create_role(session, "acme", "Shop connector", actor=ACTOR)
        repo.create_role(session, "beta", "Shop connector", actor=ACTOR)

    with database.read() as session:
        assert len(repo.list_roles(session)) == 2


def test_role_in_unknown_administration_not_found(database: Database) -> None:
    with pytest.raises(NotFoundError), database.write() as session:
        repo.create_role(session, "gamma", "Shop", actor=ACTOR)


def test_user_roles_become_exact(database: Database) -> None:
    with database.write() as session:
        first = add_role(session, "acme", "First", [])
        second = add_role(session, "acme", "Second", [])
        third = add_role(session, "beta", "Third", [])
        user = add_user(session, "shop-api")
        repo.set_user_roles(session, user, [first, second], actor=ACTOR)
        changed = repo.set_user_roles(session, user, [second, third], actor=ACTOR)
        names = [role.name for role in repo.user_roles(session, user)]

    assert changed is True
    assert names == ["Second", "Third"]


def test_user_roles_same_set_unchanged(database: Database) -> None:
    with database.write() as session:
        first = add_role(session, "acme", "First", [])
        second = add_role(session, "beta", "Second", [])
        user = add_user(session, "shop-api")
        repo.set_user_roles(session, user, [first, second], actor=ACTOR)
        changed = repo.set_user_roles(session, user, [second, first], actor=ACTOR)

    assert changed is False


def test_user_roles_empty_clears(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "First", [])
        user = add_user(session, "shop-api")
        repo.set_user_roles(session, user, [role], actor=ACTOR)
        repo.set_user_roles(session, user, [], actor=ACTOR)
        roles = repo.user_roles(session, user)

    assert roles == []


def test_assign_twice_returns_false(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "First", [])
        user = add_user(session, "shop-api")

        assert repo.assign(session, user, role, actor=ACTOR) is True
        assert repo.assign(session, user, role, actor=ACTOR) is False


# ------------------------------------------------------------------------------------------------
# Access snapshot


def test_snapshot_merges_roles_per_administration(database: Database) -> None:
    set_seats(database, 1)
    with database.write() as session:
        shop = add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        orders = add_role(session, "acme", "Orders", ["v2.orders"])
        legacy = add_role(session, "beta", "Legacy", ["administration.access", "v1.access"])
        user = add_user(session, "shop-api", seat=True)
        repo.set_user_roles(session, user, [shop, orders, legacy], actor=ACTOR)
        user_id = user.id

    with database.read() as session:
        snapshot = repo.load_access_snapshot(session, user_id)

    assert snapshot is not None
    assert snapshot.permissions == {
        "acme": frozenset({"administration.access", "v2.articles", "v2.orders"}),
        "beta": frozenset({"administration.access", "v1.access"}),
    }


def test_snapshot_user_fields(database: Database) -> None:
    set_seats(database, 1)
    with database.write() as session:
        user = add_user(session, "Shop-API", seat=True, active=False)
        expected = (user.id, user.credential_stamp)

    with database.read() as session:
        snapshot = repo.load_access_snapshot(session, expected[0])

    assert snapshot.user_id == expected[0]
    assert snapshot.username == "Shop-API"
    assert snapshot.active is False
    assert snapshot.external_seat is True
    assert snapshot.credential_stamp == expected[1]


def test_snapshot_without_roles_is_empty(database: Database) -> None:
    with database.write() as session:
        user_id = add_user(session, "shop-api").id

    with database.read() as session:
        assert repo.load_access_snapshot(session, user_id).permissions == {}


def test_snapshot_ignores_unassigned_roles(database: Database) -> None:
    with database.write() as session:
        add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        user_id = add_user(session, "shop-api").id

    with database.read() as session:
        assert repo.load_access_snapshot(session, user_id).permissions == {}


def test_snapshot_unknown_user_is_none(database: Database) -> None:
    with database.read() as session:
        assert repo.load_access_snapshot(session, "00000000-0000-4000-8000-000000000000") is None


def test_snapshot_follows_permission_change(database: Database) -> None:
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        user = add_user(session, "shop-api")
        repo.assign(session, user, role, actor=ACTOR)
        repo.set_role_permissions(session, role, ["administration.access"], actor=ACTOR)
        user_id = user.id

    with database.read() as session:
        assert repo.load_access_snapshot(session, user_id).permissions == {"acme": frozenset({"administration.access"})}


# ------------------------------------------------------------------------------------------------
# Access epoch and audit trail


def change_plan(session: Session) -> None:
    repo.set_external_seats(session, 3, actor=ACTOR)


def create_administration(session: Session) -> None:
    repo.upsert_administration(session, "gamma", "Gamma", actor=ACTOR)


def rename_administration(session: Session) -> None:
    repo.upsert_administration(session, "acme", "Acme Renamed", actor=ACTOR)


def delete_administration(session: Session) -> None:
    repo.delete_administration(session, "beta", actor=ACTOR)


def create_user(session: Session) -> None:
    add_user(session, "new-user")


def change_password(session: Session) -> None:
    repo.set_password_hash(session, repo.get_user(session, "existing"), HASH + "x", actor=ACTOR)


def revoke_tokens(session: Session) -> None:
    repo.revoke_tokens(session, repo.get_user(session, "existing"), actor=ACTOR)


def deactivate_user(session: Session) -> None:
    repo.set_active(session, repo.get_user(session, "existing"), False, actor=ACTOR)


def activate_user(session: Session) -> None:
    repo.set_active(session, repo.get_user(session, "dormant"), True, actor=ACTOR)


def link_seat(session: Session) -> None:
    repo.link_seat(session, repo.get_user(session, "existing"), actor=ACTOR)


def unlink_seat(session: Session) -> None:
    repo.unlink_seat(session, repo.get_user(session, "linked"), actor=ACTOR)


def delete_user(session: Session) -> None:
    repo.delete_user(session, repo.get_user(session, "existing"), actor=ACTOR)


def create_role(session: Session) -> None:
    repo.create_role(session, "acme", "New role", actor=ACTOR)


def delete_role(session: Session) -> None:
    repo.delete_role(session, repo.get_role(session, "acme", "Shop"), actor=ACTOR)


def grant_permission(session: Session) -> None:
    repo.grant(session, repo.get_role(session, "acme", "Shop"), "v2.orders", actor=ACTOR)


def revoke_permission(session: Session) -> None:
    repo.revoke(session, repo.get_role(session, "acme", "Shop"), "v2.articles", actor=ACTOR)


def assign_role(session: Session) -> None:
    repo.assign(session, repo.get_user(session, "existing"), repo.get_role(session, "acme", "Shop"), actor=ACTOR)


def unassign_role(session: Session) -> None:
    repo.unassign(session, repo.get_user(session, "linked"), repo.get_role(session, "acme", "Shop"), actor=ACTOR)


def rotate_key(session: Session) -> None:
    create_key(session, "EdDSA", secret="", actor=ACTOR)


def retire_previous_key(session: Session) -> None:
    create_key(session, "EdDSA", secret="", actor=ACTOR)
    for key in session.scalars(select(SigningKey).where(SigningKey.state == PREVIOUS)):
        retire_key(session, key.kid, actor=ACTOR)


# change -> the audit event it must write
CHANGES: dict[Callable[[Session], None], str] = {
    change_plan: "plan.changed",
    create_administration: "administration.created",
    rename_administration: "administration.renamed",
    delete_administration: "administration.deleted",
    create_user: "user.created",
    change_password: "user.password_changed",
    revoke_tokens: "user.tokens_revoked",
    deactivate_user: "user.deactivated",
    activate_user: "user.activated",
    link_seat: "seat.linked",
    unlink_seat: "seat.unlinked",
    delete_user: "user.deleted",
    create_role: "role.created",
    delete_role: "role.deleted",
    grant_permission: "role.permission_granted",
    revoke_permission: "role.permission_revoked",
    assign_role: "role.assigned",
    unassign_role: "role.unassigned",
    rotate_key: "key.created",
    retire_previous_key: "key.retired",
}
CHANGE_IDS = [change.__name__ for change in CHANGES]


@pytest.fixture
def populated(database: Database) -> Database:
    """Users 'existing', 'dormant' (inactive) and 'linked' (seat, role Shop), and role Shop in acme."""
    set_seats(database, 2)
    with database.write() as session:
        role = add_role(session, "acme", "Shop", ["administration.access", "v2.articles"])
        add_user(session, "existing")
        add_user(session, "dormant", active=False)
        linked = add_user(session, "linked", seat=True)
        repo.assign(session, linked, role, actor=ACTOR)
    return database


@pytest.mark.parametrize("change", list(CHANGES), ids=CHANGE_IDS)
def test_change_bumps_access_epoch(populated: Database, change: Callable[[Session], None]) -> None:
    before = epoch(populated)
    with populated.write() as session:
        change(session)

    assert epoch(populated) > before


@pytest.mark.parametrize("change", list(CHANGES), ids=CHANGE_IDS)
def test_change_writes_audit_event(populated: Database, change: Callable[[Session], None]) -> None:
    seen = {event.id for event in audit_events(populated)}
    with populated.write() as session:
        change(session)

    new_events = [event for event in audit_events(populated) if event.id not in seen]

    assert CHANGES[change] in [event.event for event in new_events]
    assert all(event.actor == ACTOR for event in new_events)


def test_create_role_writes_audit_event(populated: Database) -> None:
    with populated.write() as session:
        create_role(session)

    (event,) = [event for event in audit_events(populated) if event.event == "role.created"][-1:]
    assert event.administration == "acme"
    assert event.detail == {"role": "New role"}


@pytest.mark.parametrize(
    "change",
    [
        lambda session: repo.set_active(session, repo.get_user(session, "existing"), True, actor=ACTOR),
        lambda session: repo.link_seat(session, repo.get_user(session, "linked"), actor=ACTOR),
        lambda session: repo.unlink_seat(session, repo.get_user(session, "existing"), actor=ACTOR),
        lambda session: repo.set_external_seats(session, 2, actor=ACTOR),
        lambda session: repo.upsert_administration(session, "acme", "Acme Wholesale", actor=ACTOR),
        lambda session: repo.set_role_permissions(
            session, repo.get_role(session, "acme", "Shop"), ["administration.access", "v2.articles"], actor=ACTOR
        ),
    ],
    ids=["same-active", "link-linked", "unlink-unlinked", "same-seats", "same-name", "same-permissions"],
)
def test_noop_change_writes_nothing(populated: Database, change: Callable[[Session], None]) -> None:
    before_epoch = epoch(populated)
    before_events = len(audit_events(populated))
    with populated.write() as session:
        change(session)

    assert epoch(populated) == before_epoch
    assert len(audit_events(populated)) == before_events


def test_audit_names_user_and_administration(populated: Database) -> None:
    with populated.write() as session:
        assign_role(session)

    event = audit_events(populated)[-1]

    assert event.event == "role.assigned"
    assert event.username == "existing"
    assert event.administration == "acme"
    assert event.detail == {"role": "Shop"}
    assert event.at is not None


def test_audit_permission_events_name_permission(populated: Database) -> None:
    with populated.write() as session:
        repo.set_role_permissions(session, repo.get_role(session, "acme", "Shop"), ["v2.orders"], actor=ACTOR)

    events = [(event.event, event.detail["permission"]) for event in audit_events(populated)[-3:]]

    assert events == [
        ("role.permission_granted", "v2.orders"),
        ("role.permission_revoked", "administration.access"),
        ("role.permission_revoked", "v2.articles"),
    ]


def test_audit_never_stores_password_hash(populated: Database) -> None:
    with populated.write() as session:
        change_password(session)

    for event in audit_events(populated):
        assert HASH not in str(event.detail)


def test_failed_change_writes_no_audit(database: Database) -> None:
    before = len(audit_events(database))

    with pytest.raises(SeatLimitError), database.write() as session:
        add_user(session, "shop-api", seat=True)

    assert len(audit_events(database)) == before
