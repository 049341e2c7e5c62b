"""Health, readiness and the public key set."""

from __future__ import annotations

import datetime as dt
from typing import Any

import logging

from litestar import Request, Response, get

from reflexblue.api.auth import runtime_of
from reflexblue.api.availability import availability_of
from reflexblue.api.problems import DATABASE_RETRY_AFTER
from reflexblue.logs import RepeatedEventLog

_readiness_failures = RepeatedEventLog(interval=10.0)


@get("/healthz", tags=["Operations"], summary="Liveness: the process is running", cache_control=None)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["Operations"], summary="Readiness: the database answers")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    """Return 200 when SELECT 1 on the database succeeds within READINESS_TIMEOUT seconds, 503 otherwise."""
    runtime = runtime_of(request)
    availability = availability_of(request)
    try:
        await availability.ping_database()
        await availability.refresh_access()
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        _readiness_failures.event("readiness.failed", logging.WARNING, dependency="database",
                                  error=type(error).__name__)
        return Response({"status": "unavailable", "database": type(error).__name__}, status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER)})
    if runtime.keys.problem:
        return Response({"status": "unavailable", "database": "ok", "signing_key": "unavailable"}, status_code=503)
    return Response({"status": "ready", "database": "ok", "signing_key": "ok"})


@get("/.well-known/jwks.json", tags=["Security"], summary="Public keys that verify this server's tokens")
async def jwks(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    runtime = runtime_of(request)
    await availability_of(request).refresh_access()
    return Response(runtime.keys.jwks(dt.datetime.now(dt.UTC)), headers={"Cache-Control": "public, max-age=60"})
