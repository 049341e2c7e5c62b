"""``reflexblue audit``: read the audit trail, and purge events older than the retention period."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from reflexblue.cli.context import CliState, pass_state
from reflexblue.cli.output import console, format_cell, json_option, print_json, say
from reflexblue.storage.audit import DEFAULT_LIMIT, MAX_LIMIT, list_events, purge_and_audit

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_TIME_HELP = "an RFC 3339 time such as 2024-03-01T12:00:00Z or 2024-03-01, or a duration ago such as 30m, 24h or 7d"


def parse_duration(text: str) -> dt.timedelta:
    """Parse a duration such as ``90s``, ``30m``, ``24h``, ``7d`` or ``2w``; raise ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError("not a duration: use a whole number and one of the units s, m, h, d, w, such as 7d")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_time(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """Parse an RFC 3339 time, a date (midnight UTC) or a duration before ``now``; raise ValueError otherwise."""
    now = now or dt.datetime.now(dt.UTC)
    stripped = text.strip()
    if _DURATION.fullmatch(stripped.lower()):
        return now - parse_duration(stripped)
    try:
        parsed = dt.datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"not a time: use {_TIME_HELP}") from None
    if parsed.tzinfo is None:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", stripped):
            return parsed.replace(tzinfo=dt.UTC)
        raise ValueError("the time has no UTC offset: add Z or an offset such as +01:00")
    return parsed.astimezone(dt.UTC)


class TimeType(click.ParamType):
    """A click parameter type for :func:`parse_time`."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return parse_time(str(value))
        except (ValueError, OverflowError) as error:
            self.fail(f"{value!r}: {error}", param, ctx)


class DurationType(click.ParamType):
    """A click parameter type for :func:`parse_duration`, longer than zero."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            duration = parse_duration(str(value))
        except (ValueError, OverflowError) as error:
            self.fail(f"{value!r}: {error}", param, ctx)
        if duration <= dt.timedelta(0):
            self.fail(f"{value!r}: use a duration longer than zero, such as 90d", param, ctx)
        return duration


def _print_events(rows: list[dict[str, Any]]) -> None:
    """Print events as a table whose time and event columns never wrap, so each row stays scannable."""
    table = Table(title="Audit events (newest first)", title_justify="left")
    table.add_column("At", no_wrap=True)
    table.add_column("Event", no_wrap=True)
    for name in ("Actor", "User", "Administration", "Detail"):
        table.add_column(name, overflow="fold")
    for row in rows:
        cells = [row["at"], row["event"], row["actor"], row["username"], row["administration"],
                 _format_detail(row["detail"])]
        table.add_row(*(Text(format_cell(cell)) for cell in cells))
    console().print(table)


def _format_detail(detail: dict[str, Any]) -> str:
    parts = []
    for key, value in sorted(detail.items()):
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


@click.group(invoke_without_command=True)
@click.option("--user", "username", metavar="NAME", help="Only events about this username (any case).")
@click.option("--administration", "administration_code", metavar="CODE", help="Only events in this administration.")
@click.option("--event", "event_prefix", metavar="PREFIX",
              help="Only this event or the events below it: 'login' or 'login.' matches login.failed and "
                   "login.succeeded; a trailing '*' matches any continuation.")
@click.option("--since", type=TimeType(), metavar="TIME", help=f"Only events at or after TIME: {_TIME_HELP}.")
@click.option("--until", type=TimeType(), metavar="TIME", help=f"Only events at or before TIME: {_TIME_HELP}.")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=DEFAULT_LIMIT, show_default=True,
              help="Show at most this many events, the newest ones.")
@json_option
@click.pass_context
def audit(
    ctx: click.Context,
    username: str | None,
    administration_code: str | None,
    event_prefix: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List audit events, newest first: logins, token rejections and changes to users, roles, seats and keys.

    Times are shown in UTC. Run 'reflexblue audit purge' to delete events older than the retention period.
    """
    if ctx.invoked_subcommand is not None:
        return
    state = ctx.ensure_object(CliState)
    with state.database().read() as session:
        events = list_events(session, username=username, administration=administration_code, event=event_prefix,
                             since=since, until=until, limit=limit)
        rows = [
            {
                "id": item.id,
                "at": item.at,
                "event": item.event,
                "actor": item.actor,
                "username": item.username,
                "administration": item.administration,
                "detail": item.detail,
            }
            for item in events
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        say("No audit events match these filters.")
        return
    _print_events(rows)
    if len(rows) == limit:
        say(f"Showing the newest {limit} matching events; raise --limit or narrow --since to see others.")


@audit.command("purge")
@click.option("--older-than", type=DurationType(), metavar="DURATION",
              help="Delete events older than this, such as 90d or 12w (units s, m, h, d, w). "
                   "Default: REFLEXBLUE_AUDIT_RETENTION_DAYS days.")
@pass_state
def audit_purge(state: CliState, older_than: dt.timedelta | None) -> None:
    """Delete audit events older than the retention period, and record the purge as an audit event."""
    if older_than is None:
        retention_days = state.settings().audit_retention_days
        if retention_days == 0:
            say("REFLEXBLUE_AUDIT_RETENTION_DAYS is 0, so audit events are kept forever and nothing was deleted. "
                "Pass --older-than DURATION to purge anyway.")
            return
        older_than = dt.timedelta(days=retention_days)
    cutoff = dt.datetime.now(dt.UTC) - older_than
    with state.database().write() as session:
        deleted = purge_and_audit(session, cutoff, actor=state.actor)
    noun = "audit event" if deleted == 1 else "audit events"
    say(f"Deleted {deleted} {noun} recorded before {format_cell(cutoff)}.")
