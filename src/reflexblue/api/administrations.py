"""``/api/{v1|v2}/administrations``: the administrations the caller may use."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router, get
from litestar.concurrency import sync_to_thread

from reflexblue.api.auth import require_access, runtime_of
from reflexblue.api.problems import AUTH_ERRORS, problem_spec
from reflexblue.api.resources import AdministrationCode, administration_gone
from reflexblue.domain.access import ApiVersion, decide, reachable_resources
from reflexblue.domain.permissions import resource_permission_key


class AdministrationV1(msgspec.Struct):
    """An administration reachable through API v1."""

    code: str
    name: str


class AdministrationV2(msgspec.Struct):
    """An administration reachable through API v2, with the v2 permissions held there."""

    code: str
    name: str
    permissions: list[str]
    resources: list[str]


class AdministrationsV1(msgspec.Struct):
    items: list[AdministrationV1]


class AdministrationsV2(msgspec.Struct):
    items: list[AdministrationV2]


def _visible(request: Request[Any, Any, Any], version: ApiVersion) -> list[tuple[str, str, frozenset[str]]]:
    runtime = runtime_of(request)
    granted = request.state.principal.snapshot.permissions
    visible = []
    for code in sorted(granted):
        if code in runtime.administrations and decide(granted, code, version, None).allowed:
            visible.append((code, runtime.administrations[code][1], granted[code]))
    return visible


async def _name(request: Request[Any, Any, Any], code: str) -> str:
    """Return the name of an administration the guard admitted the caller to, reloading the list if it is new."""
    runtime = runtime_of(request)
    entry = runtime.administrations.get(code) or await sync_to_thread(runtime.administration, code)
    if entry is None:
        raise administration_gone(code)
    return entry[1]


def _v2_item(code: str, name: str, held: frozenset[str]) -> AdministrationV2:
    resources = list(reachable_resources(held, ApiVersion.V2))
    return AdministrationV2(code, name, [resource_permission_key(resource) for resource in resources], resources)


_COMMON = {"guards": [require_access], "security": [{"BearerToken": []}], "responses": AUTH_ERRORS}
_DETAIL_ERRORS = {**AUTH_ERRORS, 403: problem_spec(
    "No External seat, or the permissions of this API version are missing in the administration (an unknown "
    "code gets the same answer).")}


@get("/administrations", opt={"version": ApiVersion.V1}, tags=["v1 administrations"], operation_id="V1Administrations",
     summary="List administrations reachable with API v1", **_COMMON)
async def list_v1(request: Request[Any, Any, Any]) -> AdministrationsV1:
    return AdministrationsV1([AdministrationV1(code, name) for code, name, _ in _visible(request, ApiVersion.V1)])


@get("/administrations", opt={"version": ApiVersion.V2}, tags=["v2 administrations"], operation_id="V2Administrations",
     summary="List administrations reachable with API v2", **_COMMON)
async def list_v2(request: Request[Any, Any, Any]) -> AdministrationsV2:
    return AdministrationsV2([_v2_item(code, name, held) for code, name, held in _visible(request, ApiVersion.V2)])


@get("/administrations/{code:str}", opt={"version": ApiVersion.V1}, tags=["v1 administrations"],
     operation_id="V1Administration", summary="Read one administration (API v1)",
     guards=[require_access], security=[{"BearerToken": []}], responses=_DETAIL_ERRORS)
async def read_v1(request: Request[Any, Any, Any], code: AdministrationCode) -> AdministrationV1:
    return AdministrationV1(code, await _name(request, code))


@get("/administrations/{code:str}", opt={"version": ApiVersion.V2}, tags=["v2 administrations"],
     operation_id="V2Administration", summary="Read one administration and the v2 permissions held there",
     guards=[require_access], security=[{"BearerToken": []}], responses=_DETAIL_ERRORS)
async def read_v2(request: Request[Any, Any, Any], code: AdministrationCode) -> AdministrationV2:
    held = request.state.principal.snapshot.permissions[code]
    return _v2_item(code, await _name(request, code), held)


def administrations_router(version: ApiVersion) -> Router:
    handlers = [list_v1, read_v1] if version is ApiVersion.V1 else [list_v2, read_v2]
    return Router(path=f"/api/{version.value}", route_handlers=handlers)
