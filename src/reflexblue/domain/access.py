"""The access decision: which permissions a call needs, and which of them the caller lacks.

This is the only place that compares permission keys. Routes declare the API version and the
resource they serve, and the guard calls :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from reflexblue.domain.permissions import (
    ADMINISTRATION_ACCESS,
    BY_KEY,
    RESOURCES,
    V1_ACCESS,
    Permission,
    resource_permission_key,
)


class ApiVersion(str, Enum):
    V1 = "v1"
    V2 = "v2"


def required_permissions(version: ApiVersion, resource: str | None) -> tuple[str, ...]:
    """Return the permission keys a call needs in the addressed administration.

    ``resource`` is None for calls on the administration itself (listing, detail).
    """
    if version is ApiVersion.V1:
        return (ADMINISTRATION_ACCESS, V1_ACCESS)
    if resource is None:
        return (ADMINISTRATION_ACCESS,)
    if resource not in RESOURCES:
        raise ValueError(f"unknown resource {resource!r}")
    return (ADMINISTRATION_ACCESS, resource_permission_key(resource))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of an access check; ``missing`` is empty exactly when access is allowed."""

    administration: str
    version: ApiVersion
    resource: str | None
    required: tuple[Permission, ...]
    missing: tuple[Permission, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return not self.missing


def decide(
    granted: Mapping[str, frozenset[str]],
    administration: str,
    version: ApiVersion,
    resource: str | None,
) -> Decision:
    """Decide whether a user holding ``granted`` (administration code -> permission keys) may call.

    A user without ``administration.access`` in the administration learns nothing about it: the
    decision then lists every required permission as missing, exactly as for a code that does not
    exist, so administration codes cannot be probed.
    """
    required = required_permissions(version, resource)
    held = granted.get(administration, frozenset())
    if ADMINISTRATION_ACCESS not in held:
        missing_keys: tuple[str, ...] = required
    else:
        missing_keys = tuple(key for key in required if key not in held)
    return Decision(
        administration=administration,
        version=version,
        resource=resource,
        required=tuple(BY_KEY[key] for key in required),
        missing=tuple(BY_KEY[key] for key in missing_keys),
    )


def reachable_resources(held: frozenset[str], version: ApiVersion) -> tuple[str, ...]:
    """List the resources a holder of ``held`` reaches in one administration under ``version``."""
    return tuple(
        resource
        for resource in RESOURCES
        if all(key in held for key in required_permissions(version, resource))
    )


def explain(granted: Mapping[str, frozenset[str]], administrations: list[str]) -> list[dict[str, object]]:
    """Describe, per administration and API version, what is reachable and what is missing.

    Used by ``reflexblue access`` and ``GET /api/security/permissions``; the caller filters the
    administration list to what the audience may see.
    """
    report: list[dict[str, object]] = []
    for code in administrations:
        held = granted.get(code, frozenset())
        v1 = decide(granted, code, ApiVersion.V1, None)
        v2_resources = reachable_resources(held, ApiVersion.V2)
        v2_missing = [
            resource_permission_key(resource)
            for resource in RESOURCES
            if resource not in v2_resources
        ]
        report.append(
            {
                "administration": code,
                "permissions": sorted(held),
                "v1": {
                    "allowed": v1.allowed,
                    "missing": [permission.key for permission in v1.missing],
                },
                "v2": {
                    "administration_access": ADMINISTRATION_ACCESS in held,
                    "resources": list(v2_resources),
                    "missing": ([ADMINISTRATION_ACCESS] if ADMINISTRATION_ACCESS not in held else [])
                    + v2_missing,
                },
            }
        )
    return report
