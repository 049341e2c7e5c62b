"""``reflexblue audit`` and ``reflexblue audit purge`` against real SQLite files."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reflexblue.cli.audit import parse_duration, parse_time
from reflexblue.cli.main import cli
from reflexblue.storage.database import Database
from reflexblue.storage.repository import audit

PASSWORD = "Tq7-vRm2#pLw-9xe"
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

Run = Callable[..., Result]


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REFLEXBLUE_ARGON2_MEMORY_COST", "8192")
    monkeypatch.setenv("REFLEXBLUE_ARGON2_TIME_COST", "1")
    monkeypatch.delenv("REFLEXBLUE_DATABASE_URL", raising=False)
    monkeypatch.delenv("REFLEXBLUE_AUDIT_RETENTION_DAYS", raising=False)
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path}/audit.db"


@pytest.fixture
def run(database_url: str) -> Run:
    """Invoke ``reflexblue --database-url URL ARGS...`` in-process and return the result."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--database-url", database_url, *args], input=input)

    return invoke


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def add_event(database_url: str, event: str, *, days_ago: float, username: str | None = None,
              administration: str | None = None) -> None:
    database = Database(database_url)
    try:
        with database.write() as session:
            audit(session, event, "unit-test", username=username, administration=administration,
                  detail={"note": event}, at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago))
    finally:
        database.dispose()


def listed(run: Run, *args: str) -> list[dict[str, Any]]:
    return json.loads(ok(run("audit", "--json", *args)).stdout)  # type: ignore[no-any-return]


@pytest.fixture
def trail(run: Run, database_url: str) -> Run:
    """The database with a user, an administration, a role assignment and two old events."""
    ok(run("administrations", "create", "acme", "Acme Wholesale"))
    ok(run("users", "create", "shop-api", "--password-stdin", input=f"{PASSWORD}\n"))
    ok(run("roles", "create", "acme", "Shop connector"))
    ok(run("roles", "assign", "shop-api", "acme", "Shop connector"))
    add_event(database_url, "login.failed", days_ago=10)
    add_event(database_url, "login.succeeded", days_ago=400, username="shop-api")
    return run


# ------------------------------------------------------------------------------------------------
# Time and duration parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:00:00Z", dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)),
        ("2024-03-01T13:00:00+01:00", dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)),
        ("2024-03-01", dt.datetime(2024, 3, 1, tzinfo=dt.UTC)),
        ("24h", NOW - dt.timedelta(hours=24)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        (" 90S ", NOW - dt.timedelta(seconds=90)),
    ],
)
def test_parse_time_accepts(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "not a time"),
        ("7 days", "not a time"),
        ("-7d", "not a time"),
        ("2024-03-01T12:00:00", "no UTC offset"),
        ("2024-13-01", "not a time"),
    ],
)
def test_parse_time_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text, NOW)


def test_parse_duration_rejects_time() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("2024-03-01")


# ------------------------------------------------------------------------------------------------
# Listing


def test_audit_lists_newest_first(trail: Run) -> None:
    events = [row["event"] for row in listed(trail)]

    assert events[:4] == ["role.assigned", "role.created", "user.created", "administration.created"]
    assert events[-1] == "login.succeeded"


def test_audit_json_has_every_field(trail: Run) -> None:
    row = listed(trail, "--event", "user.created")[0]

    assert set(row) == {"id", "at", "event", "actor", "username", "administration", "detail"}
    assert row["actor"].startswith("cli:")
    assert row["username"] == "shop-api"
    assert dt.datetime.fromisoformat(row["at"]).tzinfo is not None


def test_audit_table_shows_events(trail: Run) -> None:
    result = ok(trail("audit", "--event", "role.assigned"))

    assert "Audit events" in result.stdout
    assert "role.assigned" in result.stdout
    assert " UTC " in result.stdout


def test_audit_filters_user_any_case(trail: Run) -> None:
    events = {row["event"] for row in listed(trail, "--user", "SHOP-API")}

    assert events == {"user.created", "role.assigned", "login.succeeded"}


def test_audit_filters_administration(trail: Run) -> None:
    events = {row["event"] for row in listed(trail, "--administration", "acme")}

    assert events == {"administration.created", "role.created", "role.assigned"}


def test_audit_filters_event_prefix(trail: Run) -> None:
    events = [row["event"] for row in listed(trail, "--event", "login.")]

    assert events == ["login.failed", "login.succeeded"]


def test_audit_filters_relative_since(trail: Run) -> None:
    events = {row["event"] for row in listed(trail, "--since", "30d")}

    assert "login.failed" in events
    assert "login.succeeded" not in events


def test_audit_filters_until(trail: Run) -> None:
    events = [row["event"] for row in listed(trail, "--until", "1d")]

    assert events == ["login.failed", "login.succeeded"]


def test_audit_limit_keeps_newest(trail: Run) -> None:
    events = [row["event"] for row in listed(trail, "--limit", "1")]

    assert events == ["role.assigned"]


def test_audit_table_says_when_limit_reached(trail: Run) -> None:
    result = ok(trail("audit", "--limit", "1"))

    assert "Showing the newest 1 matching events" in result.stdout


def test_audit_reports_no_match(trail: Run) -> None:
    result = ok(trail("audit", "--user", "nobody"))

    assert result.stdout.strip() == "No audit events match these filters."


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_audit_invalid_time_names_value(run: Run, option: str) -> None:
    result = run("audit", option, "last-tuesday")

    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert "'last-tuesday'" in result.stderr
    assert "RFC 3339" in result.stderr


def test_audit_time_without_offset_explains_fix(run: Run) -> None:
    result = run("audit", "--since", "2024-03-01T12:00:00")

    assert result.exit_code == 2
    assert "add Z or an offset" in result.stderr


@pytest.mark.parametrize("limit", ["0", "100001", "many"])
def test_audit_invalid_limit_is_usage_error(run: Run, limit: str) -> None:
    result = run("audit", "--limit", limit)

    assert result.exit_code == 2
    assert "--limit" in result.stderr


def test_audit_listed_in_main_help(run: Run) -> None:
    result = ok(run("--help"))

    assert "audit" in result.stdout


# ------------------------------------------------------------------------------------------------
# Purge


def test_purge_uses_retention_setting(trail: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXBLUE_AUDIT_RETENTION_DAYS", "30")

    result = ok(trail("audit", "purge"))

    assert result.stdout.startswith("Deleted 1 audit event recorded before ")
    assert [row["event"] for row in listed(trail, "--event", "login")] == ["login.failed"]


def test_purge_default_retention_is_365_days(trail: Run) -> None:
    ok(trail("audit", "purge"))

    assert [row["event"] for row in listed(trail, "--event", "login")] == ["login.failed"]


def test_purge_older_than_overrides_setting(trail: Run) -> None:
    result = ok(trail("audit", "purge", "--older-than", "7d"))

    assert result.stdout.startswith("Deleted 2 audit events")
    assert listed(trail, "--event", "login") == []


def test_purge_records_audit_event(trail: Run) -> None:
    ok(trail("audit", "purge", "--older-than", "7d"))

    (row,) = listed(trail, "--event", "audit.purged")
    assert row["actor"].startswith("cli:")
    assert row["detail"]["deleted"] == 2


def test_purge_zero_retention_deletes_nothing(trail: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXBLUE_AUDIT_RETENTION_DAYS", "0")

    result = ok(trail("audit", "purge"))

    assert "kept forever" in result.stdout
    assert len(listed(trail, "--event", "login")) == 2


@pytest.mark.parametrize("value", ["0d", "soon", "90"])
def test_purge_invalid_duration_names_value(run: Run, value: str) -> None:
    result = run("audit", "purge", "--older-than", value)

    assert result.exit_code == 2
    assert f"'{value}'" in result.stderr
    assert "--older-than" in result.stderr


def test_invalid_retention_setting_is_reported(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLEXBLUE_AUDIT_RETENTION_DAYS", "-1")

    result = run("audit", "purge")

    assert result.exit_code == 1
    assert "REFLEXBLUE_AUDIT_RETENTION_DAYS=-1" in result.stderr
