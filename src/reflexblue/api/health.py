"""Health, readiness and the public key set."""

from __future__ import annotations

import datetime as dt
from typing import Any

from litestar import Request, Response, get
from litestar.concurrency import sync_to_thread

from reflexblue.api.auth import runtime_of


@get("/healthz", tags=["Operations"], summary="Liveness: the process is running", cache_control=None)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["Operations"], summary="Readiness: the database answers")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
    runtime = runtime_of(request)
    try:
        await sync_to_thread(runtime.database.ping)
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        return Response({"status": "unavailable", "database": type(error).__name__}, status_code=503)
    if runtime.access.refresh_due:
        await sync_to_thread(runtime.refresh)
    if runtime.keys.problem:
        return Response({"status": "unavailable", "database": "ok", "signing_key": "unavailable"}, status_code=503)
    return Response({"status": "ready", "database": "ok", "signing_key": "ok"})


@get("/.well-known/jwks.json", tags=["Security"], summary="Public keys that verify this server's tokens")
async def jwks(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    runtime = runtime_of(request)
    if runtime.access.refresh_due:
        await sync_to_thread(runtime.refresh)
    return Response(runtime.keys.jwks(dt.datetime.now(dt.UTC)), headers={"Cache-Control": "public, max-age=60"})
