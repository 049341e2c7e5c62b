"""RFC 9457 problem details: the one place where errors become HTTP responses."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from reflexblue.domain.access import Decision
from reflexblue.domain.errors import ConflictError, NotFoundError, ValidationError
from reflexblue.logs import RepeatedEventLog, event
from reflexblue.security.keys import SigningKeyUnavailable
from reflexblue.storage.database import is_unavailable

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:reflexblue:problem:"
#: The Retry-After header, in seconds, of a 503 sent because the database is unavailable.
DATABASE_RETRY_AFTER = 5

_database_outages = RepeatedEventLog(interval=1.0)


class PermissionRef(msgspec.Struct):
    """A permission named by key and by its (Module, Application, Permission) triple."""

    key: str
    module: str
    application: str
    permission: str


class ProblemDetail(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem details object, with this API's extension members."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    administration: str | None = None
    api_version: str | None = None
    missing_permissions: list[PermissionRef] | None = None
    required_permissions: list[PermissionRef] | None = None
    errors: list[dict[str, str]] | None = None
    reason: str | None = None


class Problem(Exception):
    """An error to send as a problem response; raise it anywhere in a request."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_spec(description: str) -> ResponseSpec:
    """Describe a problem response in the OpenAPI document."""
    return ResponseSpec(data_container=ProblemDetail, description=description, media_type=MEDIA_TYPE,
                        generate_examples=False)


AUTH_ERRORS = {
    400: problem_spec("A path parameter or the JSON body is malformed, or more than one Authorization header "
                      "was sent."),
    401: problem_spec("The token is missing, malformed, badly signed, expired, not yet valid or revoked, or its "
                      "user is unknown or inactive. The WWW-Authenticate header and 'reason' say which."),
    403: problem_spec("The user is not linked to an External seat, or lacks a permission: the body names the "
                      "administration and the missing permissions by key and triple."),
    503: problem_spec("The database is unreachable; retry later."),
}


def permission_denied(decision: Decision, method: str, path: str) -> Problem:
    """Build the 403 that names the administration and the missing permissions."""
    missing = [PermissionRef(**permission.as_dict()) for permission in decision.missing]
    required = [PermissionRef(**permission.as_dict()) for permission in decision.required]
    names = ", ".join(f"{ref.key} ({ref.module} / {ref.application} / {ref.permission})" for ref in missing)
    return Problem(
        403,
        "permission-denied",
        "Permission denied",
        f"{method} {path} needs, in administration '{decision.administration}', a role with: {names}. "
        "Ask the administrator of the environment to grant it to your user's role in that administration.",
        administration=decision.administration,
        api_version=decision.version.value,
        missing_permissions=missing,
        required_permissions=required,
    )


def problem_response(problem: Problem, request: Request[Any, Any, Any] | None) -> Response[ProblemDetail]:
    body = ProblemDetail(
        type=TYPE_PREFIX + problem.kind,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=request.url.path if request is not None else None,
        **problem.extensions,
    )
    headers = {"Cache-Control": "no-store", **problem.headers}
    return Response(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=headers)


def handle_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[ProblemDetail]:
    return problem_response(exc, request)


_STATUS_KINDS = {
    400: ("invalid-request", "Invalid request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
    503: ("service-unavailable", "Service unavailable"),
}


_DETAILS = {
    404: "No endpoint at this path: see /schema/openapi.json for the API's paths.",
    405: "This path does not accept this method: the Allow header lists the methods it accepts.",
    413: "The request body is too large: login bodies may have 16 KiB, resource bodies 1 MiB.",
}


def _without_values(message: str) -> str:
    """Drop quoted input from a validator message, e.g. "Invalid enum value 'x'" keeps "Invalid enum value"."""
    return re.sub(r" ?'[^']*'", "", message)


def _safe_errors(extra: Any) -> list[dict[str, str]]:
    """Keep only where and what from validation errors: never the submitted value."""
    errors: list[dict[str, str]] = []
    if isinstance(extra, list):
        for item in extra[:20]:
            if isinstance(item, dict):
                entry = {"message": _without_values(str(item.get("message", "invalid value")))[:300]}
                if item.get("key"):
                    entry["field"] = str(item["key"])[:100]
                source = item.get("source")
                if source:
                    entry["in"] = str(getattr(source, "value", source))[:20]
                errors.append(entry)
    return errors


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemDetail]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        errors = _safe_errors(exc.extra)
        body_error = any(error.get("in") == "body" for error in errors) or not errors
        problem = Problem(
            422 if body_error and request.method in ("POST", "PUT", "PATCH") else 400,
            "invalid-request",
            "Invalid request",
            "The request did not pass validation: see 'errors' for each field and what it expects.",
            errors=errors or None,
        )
        return problem_response(problem, request)
    kind, title = _STATUS_KINDS.get(status, ("http-error", "HTTP error"))
    detail = _DETAILS.get(status) or (exc.detail if isinstance(exc.detail, str) and status != 500 else None)
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="reflexblue"')
    return problem_response(Problem(status, kind, title, detail, headers=headers), request)


def handle_domain_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetail]:
    if isinstance(exc, SigningKeyUnavailable):
        event("keys.unavailable", logging.ERROR, problem=str(exc), path=request.url.path)
        problem = Problem(503, "service-unavailable", "Service unavailable",
                          "The server cannot sign tokens right now; retry later.", headers={"Retry-After": "30"})
    elif isinstance(exc, ConflictError):
        problem = Problem(409, "conflict", "Conflict", str(exc))
    elif isinstance(exc, NotFoundError):
        problem = Problem(404, "not-found", "Not found", str(exc))
    elif isinstance(exc, ValidationError):
        problem = Problem(400, "invalid-request", "Invalid request", str(exc))
    else:
        return handle_internal_error(request, exc)
    return problem_response(problem, request)


def handle_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetail]:
    """Send a 503 for a database outage, or log an unexpected error with its traceback and send a 500.

    Neither problem contains internal details.
    """
    if is_unavailable(exc):
        _database_outages.event("dependency.unavailable", logging.ERROR, dependency="database",
                                error=type(exc).__name__, reason=_first_line(exc), path=request.url.path)
        return problem_response(
            Problem(503, "service-unavailable", "Service unavailable",
                    "The database is unavailable or did not answer in time; retry later.",
                    headers={"Retry-After": str(DATABASE_RETRY_AFTER)}),
            request,
        )
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        Problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal-error", "Internal server error",
                "The server failed to process the request; the error is logged."),
        request,
    )


def _first_line(error: BaseException) -> str:
    """Return the first line of the driver's message, which names the failure without SQL or parameters."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0][:200] if lines else type(original).__name__
