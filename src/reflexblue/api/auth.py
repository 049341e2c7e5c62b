"""Bearer authentication and the one guard that gets access decisions from the domain.

Routes declare ``opt={"version": ApiVersion, "resource": str | None}``; :func:`require_access`
reads those, authenticates the caller and calls :func:`reflexblue.domain.access.decide`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.concurrency import sync_to_thread

from reflexblue.api import metrics
from reflexblue.api.availability import availability_of
from reflexblue.api.problems import Problem, permission_denied
from reflexblue.api.runtime import Runtime
from reflexblue.domain.access import ApiVersion, decide
from reflexblue.logs import event
from reflexblue.security.principal import Principal
from reflexblue.security.tokens import DESCRIPTIONS, InvalidToken, Rejection

log = logging.getLogger(__name__)

# A JWS in compact form: three base64url segments without padding (RFC 7515 section 7.1). This is
# narrower than RFC 6750's b64token, so one token has exactly one accepted spelling.
_B64TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_REALM = 'Bearer realm="reflexblue"'
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def runtime_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Runtime:
    return connection.app.state.runtime  # type: ignore[no-any-return]


def unauthorized(reason: Rejection, *, token_sent: bool = True) -> Problem:
    """Build the 401 for ``reason``, with the RFC 6750 WWW-Authenticate challenge."""
    description = DESCRIPTIONS[reason]
    if token_sent:
        challenge = f'{_REALM}, error="invalid_token", error_description="{description}"'
    else:
        challenge = _REALM
    return Problem(
        401,
        "invalid-token" if token_sent else "missing-token",
        "Invalid token" if token_sent else "Authentication required",
        description,
        headers={"WWW-Authenticate": challenge},
        reason=reason.value,
    )


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """Return the bearer token of the Authorization header, None when none was sent.

    Tokens in the query string, body or cookies are ignored (RFC 6750 allows them, this API does
    not, so they cannot leak through logs and caches).
    """
    values = [value for name, value in connection.scope["headers"] if name == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise Problem(
            400, "invalid-request", "Invalid request", "Send exactly one Authorization header.",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_request"'},
        )
    try:
        header = values[0].decode("ascii")
    except UnicodeDecodeError:
        raise unauthorized(Rejection.MALFORMED) from None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if len(token) > runtime_of(connection).settings.token_max_bytes:
        raise unauthorized(Rejection.TOO_LARGE)  # checked before any parsing
    if not _B64TOKEN.fullmatch(token):
        raise unauthorized(Rejection.MALFORMED)
    return token


def _log_rejection(connection: ASGIConnection[Any, Any, Any, Any], error: InvalidToken) -> None:
    event("token.rejected", logging.INFO, reason=error.reason.value, detail=error.detail[:200],
          path=connection.url.path, client=connection.client.host if connection.client else None)
    metrics.count_token_rejection(error.reason.value)
    runtime = runtime_of(connection)
    if runtime.audit_worker is not None:
        # Only queues the row (rate-limited per reason), so the 401 never waits for the database.
        address = runtime.client_address(connection.client.host if connection.client else None,
                                         connection.headers.get("x-forwarded-for"))
        runtime.audit_worker.token_rejected(error.reason.value, connection.url.path, address)


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Return the caller's principal, or raise a 401 problem naming the reason."""
    runtime = runtime_of(connection)
    token = bearer_token(connection)
    if token is None:
        raise unauthorized(Rejection.MISSING, token_sent=False)
    await availability_of(connection).refresh_access()
    try:
        claims = runtime.tokens.verify(token)
        found, snapshot = runtime.access.cached_snapshot(claims.subject)
        if not found:
            snapshot = await sync_to_thread(runtime.access.load_snapshot, claims.subject)
        principal = runtime.access.check(claims, snapshot)
    except InvalidToken as error:
        _log_rejection(connection, error)
        raise unauthorized(error.reason) from error
    connection.state.principal = principal
    return principal


def require_seat(principal: Principal, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    if not principal.snapshot.external_seat:
        event("permission.denied", logging.INFO, username=principal.snapshot.username, reason="no_external_seat",
              path=connection.url.path)
        metrics.count_permission_denial(connection.route_handler.opt.get("version"))
        raise Problem(
            403, "no-external-seat", "No External seat",
            "Your user is not linked to an External seat, and only users linked to one may use the External "
            "API. Ask the administrator of the environment to link your user to an External seat.",
        )


async def require_access(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: authenticate, require an External seat, then the permissions the route declares."""
    principal = await authenticate(connection)
    require_seat(principal, connection)
    version: ApiVersion | None = handler.opt.get("version")
    code = connection.path_params.get("code")
    if version is not None and code is not None:
        decision = decide(principal.snapshot.permissions, code, version, handler.opt.get("resource"))
        if not decision.allowed:
            event("permission.denied", logging.INFO, username=principal.snapshot.username, administration=code,
                  api_version=version.value, resource=handler.opt.get("resource"),
                  missing=[permission.key for permission in decision.missing])
            metrics.count_permission_denial(version)
            raise permission_denied(decision, connection.scope["method"], connection.url.path)
    if connection.scope["method"] in _BODY_METHODS:
        require_json(connection)


def require_json(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Reject request bodies that are not declared as JSON with 415."""
    content_type = connection.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (media_type.startswith("application/") and media_type.endswith("+json")):
        raise Problem(415, "unsupported-media-type", "Unsupported media type",
                      "Send the request body as JSON with 'Content-Type: application/json'.")
