"""``reflexblue access USERNAME``: what a user reaches per administration and API version, and why not."""

from __future__ import annotations

from typing import Any

import click

from reflexblue.cli import lookup
from reflexblue.cli.context import CliState, pass_state
from reflexblue.cli.output import json_option, print_json, print_table, say
from reflexblue.domain.access import ApiVersion, decide, explain
from reflexblue.domain.permissions import RESOURCES, Permission
from reflexblue.storage import repository


def _missing(permissions: tuple[Permission, ...]) -> list[dict[str, str]]:
    return [{"key": permission.key, "triple": permission.triple} for permission in permissions]


def build_report(state: CliState, username: str) -> dict[str, Any]:
    """Collect the access report of ``username`` from one read transaction."""
    with state.database().read() as session:
        user = lookup.user(session, username)
        snapshot = repository.load_access_snapshot(session, user.id)
        granted = snapshot.permissions if snapshot is not None else {}
        roles_by_administration: dict[str, list[str]] = {}
        for role in repository.user_roles(session, user):
            roles_by_administration.setdefault(role.administration.code, []).append(role.name)
        all_administrations = {item.code: item.name for item in repository.list_administrations(session)}
        display = user.username
        active = user.active
        external_seat = user.external_seat

    problems: list[str] = []
    if not active:
        problems.append(f"the user is inactive, so login is refused and tokens get 401: "
                        f"run 'reflexblue users activate {display}'")
    if not external_seat:
        problems.append(f"the user is not linked to an External seat, so login and API calls get 403: "
                        f"run 'reflexblue users link-seat {display}'")

    codes = sorted(roles_by_administration)
    summaries = {item["administration"]: item for item in explain(granted, codes)}
    administrations = []
    for code in codes:
        v1 = decide(granted, code, ApiVersion.V1, None)
        resources = []
        for resource in RESOURCES:
            decision = decide(granted, code, ApiVersion.V2, resource)
            resources.append({"resource": resource, "allowed": decision.allowed, "missing": _missing(decision.missing)})
        administrations.append(
            {
                "administration": code,
                "name": all_administrations.get(code, ""),
                "roles": roles_by_administration[code],
                "permissions": summaries[code]["permissions"],
                "v1": {"allowed": v1.allowed, "missing": _missing(v1.missing)},
                "v2": {"resources": resources},
            }
        )
    return {
        "username": display,
        "active": active,
        "external_seat": external_seat,
        "can_log_in": active and external_seat,
        "problems": problems,
        "administrations": administrations,
        "administrations_without_roles": sorted(code for code in all_administrations if code not in codes),
    }


def _missing_text(missing: list[dict[str, str]]) -> str:
    return "; ".join(f"{item['key']} ({item['triple']})" for item in missing) or "-"


@click.command("access")
@click.argument("username")
@json_option
@pass_state
def access_command(state: CliState, username: str, as_json: bool) -> None:
    """Explain what USERNAME can reach per administration and API version, and which permissions are missing."""
    report = build_report(state, username)
    if as_json:
        print_json(report)
        return
    name = report["username"]
    if report["problems"]:
        say(f"{name} cannot use the External API at all:")
        for problem in report["problems"]:
            say(f"  - {problem}")
        say("The permissions below apply only once these problems are fixed.")
    else:
        say(f"{name} is active and linked to an External seat.")

    for item in report["administrations"]:
        say("")
        rows: list[list[Any]] = [["v1", "all resources", item["v1"]["allowed"], _missing_text(item["v1"]["missing"])]]
        for resource in item["v2"]["resources"]:
            rows.append(["v2", resource["resource"], resource["allowed"], _missing_text(resource["missing"])])
        title = f"Administration {item['administration']} ({item['name']}), roles: {', '.join(item['roles'])}"
        print_table(title, ["API", "Resource", "Allowed", "Missing permissions"], rows)

    others = report["administrations_without_roles"]
    if not report["administrations"]:
        say(f"{name} has no roles in any administration, so it reaches nothing: "
            f"run 'reflexblue roles assign {name} ADMINISTRATION ROLE'.")
    elif others:
        say(f"\n{name} has no roles in the other {len(others)} administrations ({', '.join(others)}), "
            "so it reaches nothing there.")
    else:
        say(f"\n{name} has roles in every administration.")
