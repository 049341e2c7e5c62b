"""``/api/security/...``: login, logout and the caller's permissions."""

from __future__ import annotations

import asyncio
import json
import logging
import unicodedata
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.concurrency import sync_to_thread
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from reflexblue.api import metrics
from reflexblue.api.auth import authenticate, bearer_token, require_json, require_seat, runtime_of
from reflexblue.api.problems import AUTH_ERRORS, Problem, problem_spec
from reflexblue.api.runtime import Runtime
from reflexblue.domain.access import explain
from reflexblue.domain.permissions import BY_KEY
from reflexblue.domain.usernames import MAX_USERNAME_LENGTH, normalise_username
from reflexblue.logs import event
from reflexblue.security.passwords import MAX_PASSWORD_LENGTH
from reflexblue.security.throttle import Verdict, wait_delays
from reflexblue.security.tokens import InvalidToken
from reflexblue.storage import repository

log = logging.getLogger(__name__)

LOGIN_MAX_BODY = 16 * 1024

_INVALID_CREDENTIALS = Problem(
    401, "invalid-credentials", "Invalid credentials", "The username or password is incorrect.",
    headers={"WWW-Authenticate": 'Bearer realm="reflexblue"'},
)


class TokenResponse(msgspec.Struct):
    """The login result: a signed JWT to send as ``Authorization: Bearer <token>``."""

    token: str


@dataclass
class _LoginOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="The credentials of a ReflexBlue user linked to an External seat.",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["username", "password"],
                        properties={
                            "username": Schema(type=OpenAPIType.STRING, max_length=MAX_USERNAME_LENGTH,
                                               min_length=1),
                            "password": Schema(type=OpenAPIType.STRING, max_length=MAX_PASSWORD_LENGTH,
                                               min_length=1),
                        },
                        additional_properties=False,
                    ),
                    example={"username": "shop-api", "password": "change-me-now"},
                )
            },
        )


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Problem(400, "invalid-request", "Invalid request",
                          f"The JSON object contains the member {key[:40]!r} twice: send each member once.")
        result[key] = value
    return result


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_login_body(raw: bytes) -> tuple[str, str]:
    """Return (username, password) from a login body, or raise a problem that never echoes values."""
    try:
        text = raw.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError includes JSONDecodeError and huge ints
        raise Problem(400, "invalid-request", "Invalid request",
                      'The request body is not valid UTF-8 JSON: send {"username": "...", "password": "..."}.') from None
    if not isinstance(document, dict):
        raise Problem(422, "invalid-request", "Invalid request",
                      'The request body must be a JSON object: {"username": "...", "password": "..."}.')
    errors = []
    for name, limit in (("username", MAX_USERNAME_LENGTH), ("password", MAX_PASSWORD_LENGTH)):
        value = document.get(name)
        if name not in document or value is None:
            errors.append({"field": name, "message": "missing: give a string"})
        elif not isinstance(value, str):
            errors.append({"field": name, "message": f"must be a string, not {type(value).__name__}"})
        elif not value:
            errors.append({"field": name, "message": "empty: give a non-empty string"})
        elif len(value) > limit:
            errors.append({"field": name, "message": f"longer than {limit} characters"})
        elif not _is_utf8(value):
            errors.append({"field": name, "message": "contains a lone surrogate: send valid Unicode text"})
        elif name == "username" and any(unicodedata.category(char) == "Cc" for char in value):
            errors.append({"field": name, "message": "contains control characters, which no username has"})
    unknown = sorted(set(document) - {"username", "password"})
    if unknown:
        errors.append({"field": unknown[0][:40], "message": "unknown member: send only username and password"})
    if errors:
        raise Problem(422, "invalid-request", "Invalid request",
                      "The login body is invalid: see 'errors' for each field.", errors=errors)
    return document["username"], document["password"]


def _check_credentials(runtime: Runtime, username_key: str, password: str) -> tuple[str, str, Any]:
    """Verify the password; returns (outcome, user id, user) with equal work for unknown users. Blocking."""
    with runtime.database.read() as session:
        user = repository.find_user_by_key(session, username_key)
        stored = user.password_hash if user is not None else None
        user_id = user.id if user is not None else ""
        state = (user.active, user.external_seat, user.credential_stamp, user.username) if user else None
    verification = runtime.passwords.verify(stored, password)
    if not verification.ok or state is None:
        return "invalid_credentials", user_id, None
    if verification.new_hash is not None and stored is not None:
        with runtime.database.write() as session:
            repository.rehash_password(session, user_id, stored, verification.new_hash)
    active, seat, stamp, display = state
    if not active:
        return "user_inactive", user_id, display
    if not seat:
        return "no_external_seat", user_id, display
    return "ok", user_id, (stamp, display)


async def _reserve_login(runtime: Runtime, username_key: str, address: str) -> Verdict:
    """Reserve a password check, waiting on the event loop (not in a worker thread) while slots are in flight."""
    verdict = await sync_to_thread(runtime.throttle.attempt, username_key, address)
    for delay in wait_delays():
        if verdict.allowed or not verdict.busy:
            break
        await asyncio.sleep(delay)
        verdict = await sync_to_thread(runtime.throttle.attempt, username_key, address)
    return verdict


async def _check_and_settle(runtime: Runtime, username_key: str, address: str, password: str) -> tuple[str, str, Any]:
    """Check the credentials, then settle the throttle's reservation with the outcome, whatever happens."""
    try:
        result = await sync_to_thread(_check_credentials, runtime, username_key, password)
    except BaseException:
        try:
            await sync_to_thread(partial(runtime.throttle.finish, username_key, address, outcome="aborted"))
        except Exception as error:  # noqa: BLE001 - the reservation expires by itself; keep the first error
            log.warning("could not release a login reservation: %s", type(error).__name__)
        raise
    failed = result[0] == "invalid_credentials"
    await sync_to_thread(partial(runtime.throttle.finish, username_key, address,
                                 outcome="failed" if failed else "succeeded"))
    return result


def _audit_login(runtime: Runtime, outcome: str, username: str | None, address: str) -> None:
    with runtime.database.write() as session:
        repository.audit(session, "login.succeeded" if outcome == "ok" else "login.failed", f"address:{address}",
                         username=username, detail={"reason": outcome, "client_address": address})


@post(
    "/api/security/login",
    operation_class=_LoginOperation,
    request_max_body_size=LOGIN_MAX_BODY,
    summary="Log in and get a token",
    description="Exchange a username and password for a signed JWT, valid for the configured lifetime "
    "(one day by default). Send it as 'Authorization: Bearer <token>' on every other call.",
    tags=["Security"],
    status_code=200,
    responses={
        400: problem_spec("The body is not valid JSON, or repeats a member."),
        401: problem_spec("The username or password is incorrect (the same body for both)."),
        403: problem_spec("The credentials are right, but the user is inactive or not linked to an External seat."),
        413: problem_spec("The body is larger than 16 KiB."),
        415: problem_spec("The body is not sent as application/json."),
        422: problem_spec("A field is missing, not a string, empty or too long."),
        429: problem_spec("Too many failed logins for this username or client address: retry after the "
                           "Retry-After header's seconds."),
        503: problem_spec("The database is unreachable; retry later."),
    },
)
async def login(request: Request[Any, Any, Any]) -> Response[TokenResponse]:
    runtime = runtime_of(request)
    require_json(request)
    username, password = parse_login_body(await request.body())
    username_key = normalise_username(username)
    address = runtime.client_address(request.client.host if request.client else None,
                                     request.headers.get("x-forwarded-for"))
    verdict = await _reserve_login(runtime, username_key, address)
    if not verdict.allowed:
        event("login.throttled", logging.WARNING, client=address, retry_after=verdict.retry_after)
        metrics.count_throttled(verdict.kind)
        await sync_to_thread(_audit_login, runtime, "throttled", None, address)
        seconds = f"{verdict.retry_after} second{'s' if verdict.retry_after != 1 else ''}"
        reason = ("Too many logins for this username or address are being checked at once" if verdict.busy
                  else "Too many failed logins")
        raise Problem(429, "too-many-attempts", "Too many login attempts", f"{reason}: retry in {seconds}.",
                      headers={"Retry-After": str(verdict.retry_after)})
    outcome, user_id, info = await _check_and_settle(runtime, username_key, address, password)
    if outcome == "invalid_credentials":
        event("login.failed", logging.INFO, reason="invalid_credentials", client=address)
        metrics.count_login("invalid_credentials")
        await sync_to_thread(_audit_login, runtime, outcome, None, address)
        raise _INVALID_CREDENTIALS
    if outcome != "ok":
        event("login.failed", logging.INFO, reason=outcome, username=info, client=address)
        metrics.count_login(outcome)
        await sync_to_thread(_audit_login, runtime, outcome, info, address)
        if outcome == "user_inactive":
            raise Problem(403, "user-inactive", "User inactive",
                          "The credentials are correct, but the user is inactive: ask the administrator of the "
                          "environment to activate it.")
        raise Problem(403, "no-external-seat", "No External seat",
                      "The credentials are correct, but the user is not linked to an External seat, and only such "
                      "users may use the External API: ask the administrator of the environment to link it.")
    stamp, display = info
    if runtime.access.refresh_due:
        await sync_to_thread(runtime.refresh)  # sign with the newest key after a rotation elsewhere
    token, claims = runtime.tokens.issue(user_id, stamp)
    event("login.succeeded", logging.INFO, username=display, client=address, jti=claims.token_id, kid=claims.kid)
    metrics.count_login("succeeded")
    await sync_to_thread(_audit_login, runtime, outcome, display, address)
    return Response(TokenResponse(token), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@post(
    "/api/security/logout",
    summary="Log out",
    description="Succeeds with or without a token. By default it has no effect, as the token stays valid until "
    "it expires; with REFLEXBLUE_REVOKE_ON_LOGOUT=true the presented token is revoked on every instance.",
    tags=["Security"],
    status_code=204,
    responses={503: problem_spec("The database is unreachable; retry later.")},
)
async def logout(request: Request[Any, Any, Any]) -> None:
    runtime = runtime_of(request)
    if not runtime.settings.revoke_on_logout:
        return
    try:
        token = bearer_token(request)
    except Problem:
        return
    if token is None:
        return
    try:
        claims = runtime.tokens.verify(token)
    except InvalidToken:
        return
    await sync_to_thread(runtime.access.revoke, claims)
    event("token.revoked", logging.INFO, jti=claims.token_id, subject=claims.subject, via="logout")


class AdministrationAccess(msgspec.Struct):
    """The caller's permissions and reachable API versions and resources in one administration."""

    administration: str
    name: str
    permissions: list[dict[str, str]]
    v1: dict[str, Any]
    v2: dict[str, Any]


class PermissionsResponse(msgspec.Struct):
    """The caller's access: user state, and the access in each administration where it has a role."""

    username: str
    external_seat: bool
    active: bool
    administrations: list[AdministrationAccess]


@get(
    "/api/security/permissions",
    summary="What may this token do?",
    description="Lists, per administration where the user has a permission, the permissions (key and triple), "
    "whether API v1 is allowed, and which v2 resources are reachable, with what is missing for the rest.",
    tags=["Security"],
    responses=AUTH_ERRORS,
    security=[{"BearerToken": []}],
)
async def permissions(request: Request[Any, Any, Any]) -> PermissionsResponse:
    principal = await authenticate(request)
    require_seat(principal, request)
    runtime = runtime_of(request)
    snapshot = principal.snapshot
    codes = sorted(code for code in snapshot.permissions if code in runtime.administrations)
    items = []
    for report in explain(snapshot.permissions, codes):
        code = str(report["administration"])
        items.append(
            AdministrationAccess(
                administration=code,
                name=runtime.administrations[code][1],
                permissions=[BY_KEY[key].as_dict() for key in report["permissions"]],  # type: ignore[union-attr]
                v1=report["v1"],  # type: ignore[arg-type]
                v2=report["v2"],  # type: ignore[arg-type]
            )
        )
    return PermissionsResponse(snapshot.username, snapshot.external_seat, snapshot.active, items)


