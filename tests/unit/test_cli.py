"""The ``reflexblue`` command against real SQLite files: output, exit codes, messages, secrecy."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select

from reflexblue.cli.main import cli
from reflexblue.demo import DEMO_ADMINISTRATIONS, DEMO_RECORDS, DEMO_USERS
from reflexblue.domain.permissions import CATALOGUE, RESOURCES
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import repository
from reflexblue.storage.database import Database
from reflexblue.storage.models import AuditEvent, Record

PASSWORD = "correct-horse-battery"
REFLEXBLUE_BIN = Path(sys.executable).with_name("reflexblue")

Run = Callable[..., Result]


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REFLEXBLUE_ARGON2_MEMORY_COST", "8192")
    monkeypatch.setenv("REFLEXBLUE_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("REFLEXBLUE_LOG_FORMAT", "text")
    monkeypatch.delenv("REFLEXBLUE_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/x.db"


@pytest.fixture
def run(database_url: str) -> Run:
    """Invoke ``reflexblue --database-url URL ARGS...`` in-process and return the result."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--database-url", database_url, *args], input=input)

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def loads(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def assert_error(result: Result, *fragments: str) -> str:
    """Check for exit code 1 and one ``error: ...`` line on stderr containing ``fragments``."""
    assert result.exit_code == 1, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    return result.stderr


def stored_user(database_url: str, username: str) -> dict[str, Any]:
    database = Database(database_url)
    try:
        with database.read() as session:
            user = repository.get_user(session, username)
            return {"password_hash": user.password_hash, "credential_stamp": user.credential_stamp}
    finally:
        database.dispose()


def audit_count(database_url: str) -> int:
    database = Database(database_url)
    try:
        with database.read() as session:
            return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
    finally:
        database.dispose()


def set_up_shop(run: Run, seats: int = 2) -> None:
    """Create plan, administration acme, role "Shop connector" and user shop-api with a seat and the role."""
    ok(run("plan", "set", "--external-seats", str(seats)))
    ok(run("administrations", "create", "acme", "Acme Wholesale"))
    ok(run("roles", "create", "acme", "Shop connector", "--permission", "administration.access",
           "--permission", "v2.articles"))
    ok(run("users", "create", "shop-api", "--password-stdin", "--external-seat", input=PASSWORD + "\n"))
    ok(run("roles", "assign", "shop-api", "acme", "Shop connector"))


# ---------------------------------------------------------------------------------------------
# General behaviour


def test_migrate_prints_revision(run: Run) -> None:
    result = ok(run("migrate"))

    assert "schema revision 0003" in result.stdout


def test_usage_error_exits_2(run: Run) -> None:
    result = run("users", "create")

    assert result.exit_code == 2
    assert "Missing argument 'USERNAME'" in result.stderr


def test_invalid_database_url(run: Run) -> None:
    result = CliRunner().invoke(cli, ["--database-url", "mysql://db/x", "plan", "show"])

    assert_error(result, "unsupported database 'mysql'")


def test_invalid_setting_from_environment(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXBLUE_TOKEN_LIFETIME", "a day")

    assert_error(run("plan", "show"), "invalid REFLEXBLUE_TOKEN_LIFETIME='a day'", "whole number")


def test_unreachable_postgresql(run: Run) -> None:
    result = CliRunner().invoke(
        cli, ["--database-url", "postgresql://nobody:hidden-secret@127.0.0.1:1/none", "plan", "show"]
    )

    message = assert_error(result, "is unreachable or failed", "127.0.0.1:1")
    assert "hidden-secret" not in message


def test_entry_point_runs(database_url: str) -> None:
    completed = subprocess.run(
        [str(REFLEXBLUE_BIN), "--database-url", database_url, "permissions", "--json"],
        capture_output=True, text=True, check=False, timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    assert len(json.loads(completed.stdout)) == len(CATALOGUE)


def test_entry_point_error_line(database_url: str) -> None:
    completed = subprocess.run(
        [str(REFLEXBLUE_BIN), "--database-url", database_url, "users", "show", "ghost"],
        capture_output=True, text=True, check=False, timeout=60,
    )

    assert completed.returncode == 1
    assert completed.stderr == "error: user 'ghost' not found: run 'reflexblue users list'\n"


# ---------------------------------------------------------------------------------------------
# Plan and administrations


def test_plan_set_and_show(run: Run) -> None:
    assert loads(run("plan", "show", "--json"))["external_seats"] == 0

    result = ok(run("plan", "set", "--external-seats", "3"))

    assert "now has 3 External seats (was 0)" in result.stdout
    plan = loads(run("plan", "show", "--json"))
    assert plan["external_seats"] == 3
    assert plan["seats_used"] == 0
    assert plan["seats_free"] == 3


def test_plan_cannot_drop_below_seats_in_use(run: Run) -> None:
    set_up_shop(run, seats=1)

    assert_error(run("plan", "set", "--external-seats", "0"), "cannot set external_seats to 0", "unlink-seat")


def test_administrations_lifecycle(run: Run) -> None:
    ok(run("administrations", "create", "acme", "Acme Wholesale"))
    ok(run("administrations", "rename", "acme", "Acme Holding"))

    listed = loads(run("administrations", "list", "--json"))
    assert [(item["code"], item["name"]) for item in listed] == [("acme", "Acme Holding")]
    table = ok(run("administrations", "list")).stdout
    assert "Acme Holding" in table

    ok(run("administrations", "delete", "acme", "--yes"))
    assert loads(run("administrations", "list", "--json")) == []


def test_administration_errors(run: Run) -> None:
    ok(run("administrations", "create", "acme", "Acme Wholesale"))

    assert_error(run("administrations", "create", "acme", "Other"), "already exists", "administrations rename")
    assert_error(run("administrations", "create", "Not Valid", "X"), "invalid administration code 'Not Valid'")
    assert_error(run("administrations", "rename", "acmee", "X"),
                 "administration 'acmee' not found: run 'reflexblue administrations list'")


def test_administration_delete_asks(run: Run) -> None:
    ok(run("administrations", "create", "acme", "Acme Wholesale"))

    declined = run("administrations", "delete", "acme", input="n\n")

    assert declined.exit_code == 1
    assert len(loads(run("administrations", "list", "--json"))) == 1
    ok(run("administrations", "delete", "acme", input="y\n"))
    assert loads(run("administrations", "list", "--json")) == []


# ---------------------------------------------------------------------------------------------
# Users


def test_user_create_from_stdin(run: Run, database_url: str) -> None:
    ok(run("plan", "set", "--external-seats", "1"))

    result = ok(run("users", "create", "Shop-API", "--password-stdin", "--external-seat", input=PASSWORD + "\n"))

    assert "Created user 'Shop-API' (active, linked to an External seat)" in result.stdout
    assert PASSWORD not in result.output
    stored = stored_user(database_url, "shop-api")
    passwords = Passwords(Settings(database_url=database_url, argon2_memory_cost=8192, argon2_time_cost=1))
    assert passwords.verify(stored["password_hash"], PASSWORD).ok
    users = loads(run("users", "list", "--json"))
    assert [(u["username"], u["active"], u["external_seat"]) for u in users] == [("Shop-API", True, True)]


def test_stdin_password_keeps_inner_whitespace(run: Run, database_url: str) -> None:
    ok(run("users", "create", "spacey", "--password-stdin", input=f" {PASSWORD} \n\n"))

    stored = stored_user(database_url, "spacey")
    passwords = Passwords(Settings(database_url=database_url, argon2_memory_cost=8192, argon2_time_cost=1))
    assert passwords.verify(stored["password_hash"], f" {PASSWORD} \n").ok


def test_user_create_with_prompt(run: Run) -> None:
    result = ok(run("users", "create", "prompted", "--inactive", input=f"{PASSWORD}\n{PASSWORD}\n"))

    assert PASSWORD not in result.output
    assert "Created user 'prompted' (inactive, not linked to an External seat)" in result.stdout
    assert "users link-seat prompted" in result.stdout


def test_user_create_prompt_rejects_short_password(run: Run) -> None:
    result = run("users", "create", "prompted", input="Tiny7!\n")

    assert result.exit_code != 0
    assert "password has fewer than 12 characters" in result.output
    assert "Tiny7!" not in result.output
    assert loads(run("users", "list", "--json")) == []


def test_user_create_short_password_from_stdin(run: Run) -> None:
    message = assert_error(run("users", "create", "weak", "--password-stdin", input="Secr3t!\n"),
                           "password has fewer than 12 characters: use a longer one")

    assert "Secr3t!" not in message
    assert loads(run("users", "list", "--json")) == []


def test_user_create_duplicate(run: Run) -> None:
    ok(run("users", "create", "shop-api", "--password-stdin", input=PASSWORD))

    assert_error(run("users", "create", "SHOP-api", "--password-stdin", input=PASSWORD),
                 "user 'SHOP-api' already exists", "users set-password")


def test_user_create_seat_without_plan(run: Run) -> None:
    assert_error(run("users", "create", "seated", "--password-stdin", "--external-seat", input=PASSWORD),
                 "the plan has no External seats", "plan set --external-seats")
    assert loads(run("users", "list", "--json")) == []


def test_set_password_rotates_stamp(run: Run, database_url: str) -> None:
    ok(run("users", "create", "shop-api", "--password-stdin", input=PASSWORD))
    before = stored_user(database_url, "shop-api")

    result = ok(run("users", "set-password", "shop-api", "--password-stdin", input="another-long-password\n"))

    after = stored_user(database_url, "shop-api")
    assert "another-long-password" not in result.output
    assert after["credential_stamp"] != before["credential_stamp"]
    assert after["password_hash"] != before["password_hash"]


def test_activate_and_deactivate(run: Run) -> None:
    ok(run("users", "create", "shop-api", "--password-stdin", input=PASSWORD))

    assert "is now inactive" in ok(run("users", "deactivate", "shop-api")).stdout
    assert "already inactive" in ok(run("users", "deactivate", "shop-api")).stdout
    assert loads(run("users", "show", "shop-api", "--json"))["active"] is False
    assert "is now active" in ok(run("users", "activate", "shop-api")).stdout
    assert loads(run("users", "show", "shop-api", "--json"))["active"] is True


def test_seat_link_and_cap(run: Run) -> None:
    ok(run("plan", "set", "--external-seats", "1"))
    ok(run("users", "create", "first", "--password-stdin", input=PASSWORD))
    ok(run("users", "create", "second", "--password-stdin", input=PASSWORD))

    assert "(1 of 1 seats in use)" in ok(run("users", "link-seat", "first")).stdout
    assert_error(run("users", "link-seat", "second"), "the plan's only External seat is in use")
    assert "(0 of 1 seats in use)" in ok(run("users", "unlink-seat", "first")).stdout
    ok(run("users", "link-seat", "second"))
    assert loads(run("plan", "show", "--json"))["seats_used"] == 1


def test_revoke_tokens_rotates_stamp(run: Run, database_url: str) -> None:
    ok(run("users", "create", "shop-api", "--password-stdin", input=PASSWORD))
    before = stored_user(database_url, "shop-api")

    ok(run("users", "revoke-tokens", "shop-api"))

    after = stored_user(database_url, "shop-api")
    assert after["credential_stamp"] != before["credential_stamp"]
    assert after["password_hash"] == before["password_hash"]


def test_user_delete(run: Run) -> None:
    ok(run("users", "create", "shop-api", "--password-stdin", input=PASSWORD))

    ok(run("users", "delete", "shop-api", "--yes"))

    assert loads(run("users", "list", "--json")) == []
    assert_error(run("users", "delete", "shop-api", "--yes"), "user 'shop-api' not found")


def test_user_show(run: Run) -> None:
    set_up_shop(run)

    details = loads(run("users", "show", "shop-api", "--json"))

    assert details["external_seat"] is True
    assert details["roles"] == [{"administration": "acme", "role": "Shop connector",
                               "permissions": ["administration.access", "v2.articles"]}]
    assert "Shop connector" in ok(run("users", "show", "shop-api")).stdout


def test_cli_changes_are_audited(run: Run, database_url: str) -> None:
    ok(run("users", "create", "shop-api", "--password-stdin", input=PASSWORD))
    before = audit_count(database_url)

    ok(run("users", "deactivate", "shop-api"))

    assert audit_count(database_url) == before + 1


# ---------------------------------------------------------------------------------------------
# Roles and permissions


def test_permissions_catalogue(run: Run) -> None:
    listed = loads(run("permissions", "--json"))

    assert len(listed) == 16
    assert listed[0] == {"key": "administration.access", "module": "Administrations",
                         "application": "External API", "permission": "Access to administration"}
    assert "v2.webhooks" in ok(run("permissions")).stdout


def test_roles_grant_revoke_with_key_or_triple(run: Run) -> None:
    ok(run("administrations", "create", "acme", "Acme Wholesale"))
    ok(run("roles", "create", "acme", "Shop connector", "--permission", "administration.access"))

    ok(run("roles", "grant", "acme", "Shop connector", "v2.articles",
           "Integrations API V2 / External API / Access to orders"))
    roles = loads(run("roles", "list", "--json"))
    assert roles[0]["permissions"] == ["administration.access", "v2.articles", "v2.orders"]

    ok(run("roles", "revoke", "acme", "shop connector", "Integrations / API V2 External API / Access to articles"))
    roles = loads(run("roles", "list", "--administration", "acme", "--json"))
    assert roles[0]["permissions"] == ["administration.access", "v2.orders"]
    assert "nothing changed" in ok(run("roles", "revoke", "acme", "Shop connector", "v2.articles")).stdout


def test_roles_unknown_permission_changes_nothing(run: Run) -> None:
    ok(run("administrations", "create", "acme", "Acme Wholesale"))
    ok(run("roles", "create", "acme", "Shop connector", "--permission", "administration.access"))

    assert_error(run("roles", "grant", "acme", "Shop connector", "v2.orders", "v2.artcles"),
                 "unknown permission 'v2.artcles'", "reflexblue permissions")
    assert_error(run("roles", "create", "acme", "Other", "--permission", "v2.artcles"), "unknown permission")

    roles = loads(run("roles", "list", "--json"))
    assert [(r["role"], r["permissions"]) for r in roles] == [("Shop connector", ["administration.access"])]


def test_roles_errors_name_the_fix(run: Run) -> None:
    ok(run("administrations", "create", "acme", "Acme Wholesale"))

    assert_error(run("roles", "list", "--administration", "acmee"), "administration 'acmee' not found")
    assert_error(run("roles", "grant", "acme", "Missing", "v2.articles"),
                 "role 'Missing' not found in administration 'acme'", "roles list --administration acme")
    ok(run("roles", "create", "acme", "Shop connector"))
    assert_error(run("roles", "create", "acme", "SHOP connector"), "already exists")


def test_roles_assign_and_unassign(run: Run) -> None:
    set_up_shop(run)

    assert "already had role" in ok(run("roles", "assign", "shop-api", "acme", "Shop connector")).stdout
    assert "no longer has role" in ok(run("roles", "unassign", "shop-api", "acme", "Shop connector")).stdout
    assert loads(run("users", "show", "shop-api", "--json"))["roles"] == []
    assert_error(run("roles", "assign", "ghost", "acme", "Shop connector"), "user 'ghost' not found")


def test_role_delete(run: Run) -> None:
    set_up_shop(run)

    ok(run("roles", "delete", "acme", "Shop connector", "--yes"))

    assert loads(run("roles", "list", "--json")) == []
    assert loads(run("users", "show", "shop-api", "--json"))["roles"] == []


# ---------------------------------------------------------------------------------------------
# Access explanation


def test_access_lists_missing_permissions(run: Run) -> None:
    set_up_shop(run)
    ok(run("administrations", "create", "globex", "Globex Retail"))

    report = loads(run("access", "shop-api", "--json"))

    assert report["can_log_in"] is True
    assert report["problems"] == []
    [acme] = report["administrations"]
    assert acme["administration"] == "acme"
    assert acme["v1"]["allowed"] is False
    assert acme["v1"]["missing"] == [
        {"key": "v1.access", "triple": "Integrations / External API / External API access"}
    ]
    resources = {item["resource"]: item for item in acme["v2"]["resources"]}
    assert set(resources) == set(RESOURCES)
    assert resources["articles"]["allowed"] is True
    assert resources["orders"]["missing"] == [
        {"key": "v2.orders", "triple": "Integrations API V2 / External API / Access to orders"}
    ]
    assert report["administrations_without_roles"] == ["globex"]

    text = ok(run("access", "shop-api")).stdout
    assert "v2.orders" in text
    assert "no roles in the other 1 administrations (globex)" in text


def test_access_reports_seat_and_inactive(run: Run) -> None:
    ok(run("users", "create", "idle", "--password-stdin", "--inactive", input=PASSWORD))

    report = loads(run("access", "idle", "--json"))
    text = ok(run("access", "idle")).stdout

    assert report["can_log_in"] is False
    assert any("inactive" in problem for problem in report["problems"])
    assert any("External seat" in problem for problem in report["problems"])
    assert "users activate idle" in text
    assert "users link-seat idle" in text
    assert "has no roles in any administration" in text


# ---------------------------------------------------------------------------------------------
# Keys


def test_keys_list_empty_before_first_server(run: Run) -> None:
    # Administration commands never create keys: only a server start (or keys rotate) does.
    assert loads(run("keys", "list", "--json")) == []


def test_keys_rotate_and_retire(run: Run) -> None:
    ok(run("keys", "rotate"))
    [first] = loads(run("keys", "list", "--json"))
    assert first["state"] == "active"

    assert_error(run("keys", "retire", first["kid"]), "is the active signing key", "keys rotate")
    ok(run("keys", "rotate"))
    states = {key["kid"]: key["state"] for key in loads(run("keys", "list", "--json"))}
    assert states[first["kid"]] == "previous"
    assert sorted(states.values()) == ["active", "previous"]

    ok(run("keys", "retire", first["kid"]))
    states = {key["kid"]: key["state"] for key in loads(run("keys", "list", "--json"))}
    assert states[first["kid"]] == "retired"
    assert_error(run("keys", "retire", "no-such-kid"), "signing key 'no-such-kid' not found", "keys list")


# ---------------------------------------------------------------------------------------------
# Provisioning


def test_provision_applies_then_reports_no_changes(run: Run, tmp_path: Path, database_url: str) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(
        "plan: {external_seats: 2}\n"
        "administrations:\n"
        "  - code: acme\n    name: Acme Wholesale\n"
        "    roles: [{name: Shop connector, permissions: [administration.access, v2.articles]}]\n"
        "users:\n"
        f"  - {{username: shop-api, password: {PASSWORD}, external_seat: true,\n"
        "     roles: [{administration: acme, role: Shop connector}]}\n",
        encoding="utf-8",
    )

    first = ok(run("provision", str(path)))
    stamp = stored_user(database_url, "shop-api")["credential_stamp"]
    second = ok(run("provision", str(path)))

    assert "Applied shop.yaml" in first.stdout
    assert "users created: 1" in first.stdout
    assert PASSWORD not in first.output
    assert "no changes" in second.stdout
    assert stored_user(database_url, "shop-api")["credential_stamp"] == stamp


def test_provision_dry_run_and_error(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "shop.json"
    path.write_text(json.dumps({"plan": {"external_seats": 4}}), encoding="utf-8")

    dry = ok(run("provision", str(path), "--dry-run"))
    assert "dry run, nothing was changed" in dry.stdout
    assert loads(run("plan", "show", "--json"))["external_seats"] == 0

    path.write_text(json.dumps({"plan": {"external_seats": 4},
                                "users": [{"username": "x", "pasword": PASSWORD}]}), encoding="utf-8")
    message = assert_error(run("provision", str(path)), 'shop.json: users[0] ("x"): unknown field "pasword"')
    assert PASSWORD not in message
    assert loads(run("plan", "show", "--json"))["external_seats"] == 0


def test_provision_summary_json(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"plan": {"external_seats": 4}}), encoding="utf-8")

    summary = loads(run("provision", str(path), "--json"))

    assert summary["changed"] is True
    assert summary["plan_changed"] == 1


# ---------------------------------------------------------------------------------------------
# Serve and demo


def test_serve_rejects_invalid_settings(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXBLUE_TOKEN_LEEWAY", "600")

    assert_error(run("serve", "--port", "18080"), "invalid REFLEXBLUE_TOKEN_LEEWAY=600")


def test_serve_rejects_bad_port(run: Run) -> None:
    assert run("serve", "--port", "70000").exit_code == 2


def test_demo_installs_and_is_idempotent(run: Run, database_url: str) -> None:
    first = ok(run("demo", "--no-serve", "--port", "18080"))

    for user in DEMO_USERS:
        assert f"{user.username} / {user.password}" in first.stdout
    assert "curl -s -X POST http://127.0.0.1:18080/api/security/login" in first.stdout
    assert "/api/v2/administrations/acme/articles" in first.stdout

    database = Database(database_url)
    try:
        with database.read() as session:
            for code in DEMO_ADMINISTRATIONS:
                administration = repository.get_administration(session, code)
                for resource in RESOURCES:
                    count = session.scalar(
                        select(func.count()).select_from(Record).where(
                            Record.administration_id == administration.id, Record.resource == resource
                        )
                    )
                    assert count == len(DEMO_RECORDS[resource]), (code, resource)
            total = session.scalar(select(func.count()).select_from(Record))
    finally:
        database.dispose()
    stamps = {user.username: stored_user(database_url, user.username)["credential_stamp"] for user in DEMO_USERS}
    events = audit_count(database_url)

    ok(run("demo", "--no-serve", "--port", "18080"))

    database = Database(database_url)
    try:
        with database.read() as session:
            assert session.scalar(select(func.count()).select_from(Record)) == total
    finally:
        database.dispose()
    for user in DEMO_USERS:
        assert stored_user(database_url, user.username)["credential_stamp"] == stamps[user.username]
    assert audit_count(database_url) == events


def test_demo_access_matches_banner(run: Run) -> None:
    ok(run("demo", "--no-serve"))

    shop = loads(run("access", "demo-shop", "--json"))
    full = loads(run("access", "demo-full", "--json"))
    no_seat = loads(run("access", "demo-no-seat", "--json"))
    inactive = loads(run("access", "demo-inactive", "--json"))

    [acme] = shop["administrations"]
    allowed = sorted(item["resource"] for item in acme["v2"]["resources"] if item["allowed"])
    assert allowed == ["articles", "orders", "relations"]
    assert [item["administration"] for item in full["administrations"]] == ["acme", "globex"]
    assert all(item["v1"]["allowed"] for item in full["administrations"])
    assert no_seat["external_seat"] is False
    assert inactive["active"] is False
    assert loads(run("plan", "show", "--json"))["external_seats"] == 10


def test_demo_uses_demo_database_by_default(database_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--no-serve"])

    ok(result)
    assert (tmp_path / "reflexblue-demo.db").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_passes_options_to_app(run: Run, database_url: str) -> None:
    set_up_shop(run)
    port = _free_port()
    server = subprocess.Popen(
        [str(REFLEXBLUE_BIN), "--database-url", database_url, "serve", "--port", str(port), "--token-lifetime", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "server did not answer /healthz within 30 s"
            time.sleep(0.2)

        response = httpx.post(f"{base}/api/security/login", json={"username": "shop-api", "password": PASSWORD})
        assert response.status_code == 200, response.text
        payload = response.json()["token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["exp"] - claims["iat"] == 600
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert "server.starting" in stderr
    assert "server.secret_key_unset" in stderr
    assert PASSWORD not in stderr


# ------------------------------------------------------------------------------------------------
# Announcing changes through Redis


def test_unreachable_redis_warns_but_changes(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    from reflexblue.notifications import uninstall_publisher

    monkeypatch.setenv("REFLEXBLUE_REDIS_URL", "redis://127.0.0.1:1/0")
    try:
        result = ok(run("plan", "set", "--external-seats", "3"))
    finally:
        uninstall_publisher()

    assert "The plan now has 3 External seats" in result.stdout
    assert result.stderr.startswith("warning: could not notify running servers through Redis at redis://127.0.0.1:1/0")
    assert result.stderr.count("\n") == 1
