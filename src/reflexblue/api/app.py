"""The Litestar application factory."""

from __future__ import annotations

import logging
from functools import partial

import msgspec
from litestar import Litestar, Request, Response
from litestar.concurrency import sync_to_thread
from litestar.config.response_cache import ResponseCacheConfig
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from reflexblue import __version__
from reflexblue.api.administrations import administrations_router
from reflexblue.api.health import healthz, jwks, readyz
from reflexblue.api.metrics import RequestMetrics, metrics_endpoint, start_metrics, stop_metrics
from reflexblue.api.problems import (
    Problem,
    ProblemDetail,
    handle_domain_error,
    handle_http_exception,
    handle_internal_error,
    handle_problem,
    problem_response,
)
from reflexblue.api.resources import resource_router
from reflexblue.api.runtime import Runtime
from reflexblue.api.security_routes import login, logout, permissions
from reflexblue.bootstrap import prepare
from reflexblue.domain.access import ApiVersion
from reflexblue.domain.errors import ReflexBlueError
from reflexblue.logs import configure_logging
from reflexblue.notifications import install_publisher, uninstall_publisher
from reflexblue.redis_client import RedisHealth
from reflexblue.settings import Settings

log = logging.getLogger(__name__)


def handle_schema_error(request: Request, exc: msgspec.ValidationError) -> Response[ProblemDetail]:
    return problem_response(
        Problem(422, "invalid-request", "Invalid request", "The request body does not match the schema.",
                errors=[{"message": str(exc)[:300], "in": "body"}]),
        request,
    )


def handle_nesting_error(request: Request, exc: RecursionError) -> Response[ProblemDetail]:
    return problem_response(
        Problem(400, "invalid-request", "Invalid request", "The request body is nested too deeply: flatten it."),
        request,
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application; the database is migrated and the caches loaded at startup."""
    settings = settings or Settings.from_env()
    # Each uvicorn worker builds its own app, so logging is configured here, in every process.
    configure_logging(settings.log_level, settings.log_format)

    async def start(app: Litestar) -> None:
        # Installed before prepare(), so a signing key created at first start is announced too.
        redis_health = RedisHealth(settings.redis_url) if settings.redis_url else None
        install_publisher(settings.redis_url, settings.redis_prefix, redis_health)
        database = await sync_to_thread(partial(prepare, settings, signing_key=True))
        app.state.runtime = await sync_to_thread(Runtime.start, settings, database, redis_health)
        app.state.metrics_listener = await sync_to_thread(start_metrics, settings, database)
        log.info("reflexblue server ready (database %s)", database.describe())

    async def stop(app: Litestar) -> None:
        stop_metrics(getattr(app.state, "metrics_listener", None))
        uninstall_publisher()
        runtime: Runtime | None = getattr(app.state, "runtime", None)
        if runtime is not None:
            if runtime.access_listener is not None:
                await sync_to_thread(runtime.access_listener.stop)
            if runtime.audit_worker is not None:
                await sync_to_thread(runtime.audit_worker.close)
            runtime.database.dispose()

    openapi = OpenAPIConfig(
        title="ReflexBlue External API",
        version=__version__,
        description="Log in at POST /api/security/login, then send 'Authorization: Bearer <token>'. "
        "Errors are RFC 9457 problem details (application/problem+json).",
        path="/schema",
        render_plugins=[ScalarRenderPlugin(version="1")],
        components=Components(
            security_schemes={
                "BearerToken": SecurityScheme(
                    type="http", scheme="bearer", bearer_format="JWT",
                    description="The token from POST /api/security/login.",
                )
            }
        ),
    )
    # /metrics is on the main port unless a separate metrics port is set.
    metrics_routes = [metrics_endpoint] if settings.metrics and not settings.metrics_port else []
    app = Litestar(
        route_handlers=[
            login, logout, permissions, healthz, readyz, jwks,
            administrations_router(ApiVersion.V1), administrations_router(ApiVersion.V2),
            resource_router(ApiVersion.V1), resource_router(ApiVersion.V2),
            *metrics_routes,
        ],
        on_startup=[start],
        on_shutdown=[stop],
        openapi_config=openapi,
        exception_handlers={
            Problem: handle_problem,
            HTTPException: handle_http_exception,
            msgspec.ValidationError: handle_schema_error,
            RecursionError: handle_nesting_error,
            ReflexBlueError: handle_domain_error,
            Exception: handle_internal_error,
        },
        response_cache_config=ResponseCacheConfig(),
        request_max_body_size=1024 * 1024,
        debug=False,
        logging_config=None,
    )
    if settings.metrics:
        # Wraps the router, so requests that match no route are timed too.
        app.asgi_handler = RequestMetrics(app.asgi_handler)
    return app
