"""The fixed permission catalogue.

Each permission has a stable key, used by code, files and URLs, and the
(Module, Application, Permission) triple that the product's screens show.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from reflexblue.domain.errors import UnknownPermissionError


@dataclass(frozen=True, slots=True)
class Permission:
    """A catalogue entry: key plus its display triple."""

    key: str
    module: str
    application: str
    name: str

    @property
    def triple(self) -> str:
        return f"{self.module} / {self.application} / {self.name}"

    def as_dict(self) -> dict[str, str]:
        return {
            "key": self.key,
            "module": self.module,
            "application": self.application,
            "permission": self.name,
        }


ADMINISTRATION_ACCESS = "administration.access"
V1_ACCESS = "v1.access"

#: The fourteen v2 resources, in the order the vendor guide lists them.
RESOURCES: tuple[str, ...] = (
    "articles",
    "article-groups",
    "order-patterns",
    "payment-conditions",
    "contacts",
    "dynamic-fields",
    "invoices",
    "integrations",
    "orders",
    "delivery-notes",
    "relations",
    "relation-groups",
    "languages",
    "webhooks",
)


def _v2(resource: str) -> Permission:
    label = resource.replace("-", " ")
    return Permission(f"v2.{resource}", "Integrations API V2", "External API", f"Access to {label}")


CATALOGUE: tuple[Permission, ...] = (
    Permission(ADMINISTRATION_ACCESS, "Administrations", "External API", "Access to administration"),
    Permission(V1_ACCESS, "Integrations", "External API", "External API access"),
    *(_v2(resource) for resource in RESOURCES),
)

BY_KEY: dict[str, Permission] = {permission.key: permission for permission in CATALOGUE}


def resource_permission_key(resource: str) -> str:
    """Return the key of the v2 permission that guards ``resource``."""
    return f"v2.{resource}"


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


# Both readings of the vendor guide's triple are accepted: "Integrations API V2 / External API / X"
# and "Integrations / API V2 External API / X".
_BY_TRIPLE: dict[tuple[str, str, str], Permission] = {}
for _permission in CATALOGUE:
    _BY_TRIPLE[(_fold(_permission.module), _fold(_permission.application), _fold(_permission.name))] = _permission
    if _permission.module == "Integrations API V2":
        _BY_TRIPLE[(_fold("Integrations"), _fold("API V2 External API"), _fold(_permission.name))] = _permission


def parse_permission(text: str) -> Permission:
    """Resolve a permission given as a key (``v2.articles``) or a triple (``Module / Application / Permission``).

    Raises UnknownPermissionError naming the input when it matches nothing in the catalogue.
    """
    if not isinstance(text, str):
        raise UnknownPermissionError(repr(text))
    stripped = text.strip()
    if stripped in BY_KEY:
        return BY_KEY[stripped]
    lowered = stripped.lower()
    if lowered in BY_KEY:
        return BY_KEY[lowered]
    parts = [part for part in (piece.strip() for piece in stripped.split("/"))]
    if len(parts) == 3:
        found = _BY_TRIPLE.get((_fold(parts[0]), _fold(parts[1]), _fold(parts[2])))
        if found is not None:
            return found
    raise UnknownPermissionError(stripped)
