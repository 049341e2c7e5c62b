"""One generic, typed mechanism that serves the fourteen resource collections for v1 and v2.

For each (version, resource) pair this module builds list/create/read/replace/update/delete
handlers whose signatures carry the resource's msgspec structs, so validation and the OpenAPI
document come from the schemas in :mod:`reflexblue.domain.resources`. Access is checked by the
guard before a handler runs; handlers only see administrations the caller may use.
"""

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, delete, get, patch, post, put
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from reflexblue.api.auth import require_access, runtime_of
from reflexblue.api.problems import AUTH_ERRORS, Problem, problem_spec
from reflexblue.domain.access import ApiVersion
from reflexblue.domain.permissions import RESOURCES
from reflexblue.domain.resources import SCHEMAS, ResourceSchema, apply_patch, decimal_errors, to_document
from reflexblue.storage import records
from reflexblue.storage.models import Record

MAX_BODY = 1024 * 1024

Limit = Annotated[int, QueryParameter(ge=1, le=1000, description="Page size, 1-1000.")]
Cursor = Annotated[
    str | None, QueryParameter(max_length=200, description="The next_cursor of the previous page; omit for the first page.")
]
ModifiedSince = Annotated[
    dt.datetime | None,
    QueryParameter(description="Only records modified at or after this RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z."),
]
RecordId = Annotated[str, PathParameter(max_length=64, description="The record's opaque id.")]
AdministrationCode = Annotated[str, PathParameter(description="The administration's code, e.g. acme.")]


def _record_errors(extra: dict[int, Any]) -> dict[int, Any]:
    return {400: problem_spec("The body is not valid JSON, or a path or query parameter is invalid."),
            **AUTH_ERRORS, **extra}


def _administration_id(request: Request[Any, Any, Any], code: str) -> str:
    """Return the id of an administration the guard has already admitted the caller to."""
    entry = runtime_of(request).administration(code)
    if entry is None:
        raise administration_gone(code)
    return entry[0]


def _as_utc(value: dt.datetime) -> dt.datetime:
    """Return a modified_since value in UTC, or raise a 400 for values without offset or out of range."""
    if value.tzinfo is None:
        raise Problem(400, "invalid-request", "Invalid request",
                      "modified_since needs a time zone offset, e.g. 2026-01-31T12:00:00Z (RFC 3339).")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise Problem(400, "invalid-request", "Invalid request",
                      "modified_since is out of range: use a time between years 1 and 9999 in UTC.") from None


def administration_gone(code: str) -> Problem:
    """Build the 404 for an administration deleted after the guard admitted the caller."""
    return Problem(404, "not-found", "Not found", f"Administration {code!r} no longer exists.")


def _not_found(resource: str, record_id: str) -> Problem:
    return Problem(404, "record-not-found", "Record not found",
                   f"No record with this id in {resource} of this administration: take ids from the list.")


def _checked(item: Any) -> Any:
    """Return a decoded body, or raise a 422 naming each decimal field msgspec cannot constrain."""
    errors = decimal_errors(item)
    if errors:
        raise Problem(422, "invalid-request", "Invalid request", "The request body does not match the schema.",
                      errors=[{"field": field, "message": message, "in": "body"} for field, message in errors])
    return item


def build_handlers(version: ApiVersion, schema: ResourceSchema) -> list[Any]:
    """Build the six handlers of one resource under one API version."""
    resource = schema.resource
    record_type = schema.record
    page_type = msgspec.defstruct(
        f"{record_type.__name__}Page",
        [("items", list[record_type]), ("next_cursor", str | None)],  # type: ignore[valid-type]
    )
    prefix = f"{version.value.upper()}{record_type.__name__}"
    base = f"/administrations/{{code:str}}/{resource}"
    options = {"version": version, "resource": resource}
    tags = [f"{version.value} {resource}"]
    common = {"guards": [require_access], "opt": options, "tags": tags, "security": [{"BearerToken": []}]}

    def to_record(row: Record) -> Any:
        document = {**row.data, "id": row.id, "code": row.code, "created_at": row.created_at,
                    "modified_at": row.modified_at}
        return msgspec.convert(document, record_type, strict=False)

    def list_items(request: Request[Any, Any, Any], code: AdministrationCode, limit: Limit = 100, cursor: Cursor = None,
                   modified_since: ModifiedSince = None) -> Any:
        if modified_since is not None:
            modified_since = _as_utc(modified_since)
        administration_id = _administration_id(request, code)
        with runtime_of(request).database.read() as session:
            page = records.list_records(session, administration_id, resource, limit=limit, cursor=cursor,
                                        modified_since=modified_since)
            return page_type(items=[to_record(row) for row in page.items], next_cursor=page.next_cursor)

    def create_item(request: Request[Any, Any, Any], code: AdministrationCode, data: Any) -> Any:
        administration_id = _administration_id(request, code)
        with runtime_of(request).database.write() as session:
            _checked(data)
            row = records.create_record(session, administration_id, resource, data.code, to_document(data))
            return to_record(row)

    def read_item(request: Request[Any, Any, Any], code: AdministrationCode, record_id: RecordId) -> Any:
        administration_id = _administration_id(request, code)
        with runtime_of(request).database.read() as session:
            row = records.get_record(session, administration_id, resource, record_id)
            if row is None:
                raise _not_found(resource, record_id)
            return to_record(row)

    def replace_item(request: Request[Any, Any, Any], code: AdministrationCode, record_id: RecordId, data: Any) -> Any:
        administration_id = _administration_id(request, code)
        with runtime_of(request).database.write() as session:
            row = records.get_record(session, administration_id, resource, record_id)
            if row is None:
                raise _not_found(resource, record_id)
            _checked(data)
            return to_record(records.update_record(session, row, data.code, to_document(data)))

    def update_item(request: Request[Any, Any, Any], code: AdministrationCode, record_id: RecordId, data: Any) -> Any:
        administration_id = _administration_id(request, code)
        with runtime_of(request).database.write() as session:
            row = records.get_record(session, administration_id, resource, record_id)
            if row is None:
                raise _not_found(resource, record_id)
            current = {**row.data, "code": row.code}
            merged = apply_patch(current, data)
            # The merged document must still satisfy the full schema (e.g. required fields kept).
            validated = _checked(msgspec.convert(merged, schema.create, strict=False))
            return to_record(records.update_record(session, row, validated.code, to_document(validated)))

    def delete_item(request: Request[Any, Any, Any], code: AdministrationCode, record_id: RecordId) -> None:
        administration_id = _administration_id(request, code)
        with runtime_of(request).database.write() as session:
            row = records.get_record(session, administration_id, resource, record_id)
            if row is None:
                raise _not_found(resource, record_id)
            records.delete_record(session, row)

    list_items.__annotations__["return"] = page_type
    create_item.__annotations__.update(data=JSONBody[schema.create], **{"return": record_type})
    read_item.__annotations__["return"] = record_type
    replace_item.__annotations__.update(data=JSONBody[schema.create], **{"return": record_type})
    update_item.__annotations__.update(data=JSONBody[schema.patch], **{"return": record_type})

    required = ", ".join(schema.required)
    label = resource.replace("-", " ")
    return [
        get(base, operation_id=f"{prefix}List", summary=f"List {label}", sync_to_thread=True,
            description="Oldest modification first. Follow next_cursor until it is null.",
            responses=_record_errors({}),
            **common)(list_items),
        post(base, operation_id=f"{prefix}Create", summary=f"Create one of {label}", sync_to_thread=True,
             status_code=HTTP_201_CREATED, request_max_body_size=MAX_BODY,
             description=f"Required fields: {required}.",
             responses=_record_errors({409: problem_spec("The code is already used in this administration."),
                                       413: problem_spec("The body is larger than 1 MiB."),
                                       415: problem_spec("The body is not sent as application/json."),
                                       422: problem_spec("The body does not match the schema.")}),
             **common)(create_item),
        get(f"{base}/{{record_id:str}}", operation_id=f"{prefix}Read", summary=f"Read one of {label}",
            sync_to_thread=True, responses=_record_errors({404: problem_spec("No such record here.")}),
            **common)(read_item),
        put(f"{base}/{{record_id:str}}", operation_id=f"{prefix}Replace", summary=f"Replace one of {label}",
            sync_to_thread=True, request_max_body_size=MAX_BODY, description=f"Required fields: {required}.",
            responses=_record_errors({404: problem_spec("No such record here."),
                                      409: problem_spec("The code is already used in this administration."),
                                      413: problem_spec("The body is larger than 1 MiB."),
                                      415: problem_spec("The body is not sent as application/json."),
                                      422: problem_spec("The body does not match the schema.")}),
            **common)(replace_item),
        patch(f"{base}/{{record_id:str}}", operation_id=f"{prefix}Update", summary=f"Update one of {label}",
              sync_to_thread=True, request_max_body_size=MAX_BODY,
              description="Send only the fields to change; null clears an optional field.",
              responses=_record_errors({404: problem_spec("No such record here."),
                                        409: problem_spec("The code is already used in this administration."),
                                        413: problem_spec("The body is larger than 1 MiB."),
                                        415: problem_spec("The body is not sent as application/json."),
                                        422: problem_spec("The body does not match the schema.")}),
              **common)(update_item),
        delete(f"{base}/{{record_id:str}}", operation_id=f"{prefix}Delete", summary=f"Delete one of {label}",
               sync_to_thread=True, status_code=HTTP_204_NO_CONTENT,
               responses=_record_errors({404: problem_spec("No such record here.")}), **common)(delete_item),
    ]


def resource_router(version: ApiVersion) -> Router:
    handlers: list[Any] = []
    for resource in RESOURCES:
        handlers.extend(build_handlers(version, SCHEMAS[resource]))
    return Router(path=f"/api/{version.value}", route_handlers=handlers)
