"""``reflexblue serve`` and ``reflexblue demo``: run the HTTP server under uvicorn."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable

import click

from reflexblue.bootstrap import prepare
from reflexblue.cli.context import CliState, pass_state
from reflexblue.demo import DEMO_DATABASE_URL, DEMO_USERS, install_demo
from reflexblue.domain.errors import ReflexBlueError
from reflexblue.logs import configure_logging, event
from reflexblue.redis_client import describe_redis_url
from reflexblue.security.keys import KeySet
from reflexblue.settings import PREFIX, Settings
from reflexblue.storage.database import Database

APP_FACTORY = "reflexblue.api.app:create_app"
#: Environment variable naming the directory of prometheus-client's per-process value files (multiprocess mode).
MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds uvicorn waits for open requests to finish after SIGTERM or SIGINT.
GRACEFUL_SHUTDOWN_SECONDS = 30

host_option = click.option("--host", default="127.0.0.1", show_default=True,
                           help="Address to listen on; use 0.0.0.0 to accept connections from other hosts.")
port_option = click.option("--port", type=click.IntRange(1, 65_535), default=8080, show_default=True,
                           help="TCP port to listen on.")
database_url_option = click.option(
    "--database-url", metavar="URL",
    help="Database URL, e.g. sqlite:///reflexblue.db or postgresql://user@host:5432/name; "
         "overrides REFLEXBLUE_DATABASE_URL.",
)


def check_signing_keys(database: Database, settings: Settings) -> None:
    """Stop before uvicorn starts when the active signing key cannot be opened with these settings."""
    keys = KeySet(settings.token_algorithm, settings.secret_key, settings.token_lifetime, settings.token_leeway)
    with database.read() as session:
        keys.load(session)
    if keys.problem:
        raise ReflexBlueError(keys.problem)


def check_port_free(host: str, port: int) -> None:
    """Fail with a one-line error before any output when ``host:port`` cannot be bound."""
    try:
        with socket.create_server((host, port), reuse_port=False):
            pass
    except OSError as error:
        raise ReflexBlueError(
            f"cannot listen on {host}:{port}: {error.strerror}; pass another port with --port"
        ) from None


def serve_forever(state: CliState, *, host: str, port: int, workers: int) -> None:
    """Prepare the database, log the start and run uvicorn until it is stopped.

    The command-line settings go into os.environ first, because each uvicorn worker process
    builds its app, and so its settings, from the environment.
    """
    import uvicorn

    state.export_environment()
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    database = prepare(settings, actor=state.actor, signing_key=True)
    check_signing_keys(database, settings)
    event("server.starting", database=database.describe(), host=host, port=port, workers=workers,
          token_lifetime=settings.token_lifetime, revoke_on_logout=settings.revoke_on_logout,
          redis=describe_redis_url(settings.redis_url) if settings.redis_url else "",
          metrics=settings.metrics, metrics_port=settings.metrics_port)
    database.dispose()
    if not settings.secret_key:
        event("server.secret_key_unset", logging.WARNING,
              detail="private signing keys are stored unencrypted in the database: set REFLEXBLUE_SECRET_KEY "
                     "from a secret store for every server and command, restart, then run 'reflexblue keys rotate' "
                     "so the new key is stored encrypted")
    stop_worker_metrics = prepare_worker_metrics(settings, workers)
    previous_sigterm_handler = signal.signal(signal.SIGTERM, raise_sigterm_received)
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            date_header=True,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    except SigtermReceived:
        pass  # A clean stop: see raise_sigterm_received.
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm_handler)
        stop_worker_metrics()
    event("server.stopped", host=host, port=port)


def prepare_worker_metrics(settings: Settings, workers: int) -> Callable[[], None]:
    """Set up metrics that sum over ``workers`` processes; return the function that cleans up after them.

    With more than one worker, PROMETHEUS_MULTIPROC_DIR is set to a fresh directory, which the
    workers inherit, and a separate metrics port is served from this process, since only one
    process can listen on it. With one worker the application serves its own metrics, so any
    inherited PROMETHEUS_MULTIPROC_DIR is removed. The variable must be set before prometheus-client is
    imported, which is why the import happens here.
    """
    os.environ.pop(MULTIPROCESS_DIRECTORY_VARIABLE, None)
    if not settings.metrics or workers == 1:
        return lambda: None
    directory = tempfile.mkdtemp(prefix="reflexblue-metrics-")
    os.environ[MULTIPROCESS_DIRECTORY_VARIABLE] = directory
    from reflexblue.api.metrics import SEATS, start_listener

    listener = None
    seats_database = None
    if settings.metrics_port:
        seats_database = Database(settings.database_url, pool_size=1, timeout=settings.database_timeout)
        SEATS.attach(seats_database)
        try:
            listener = start_listener(settings.metrics_port)
        except OSError as error:
            shutil.rmtree(directory, ignore_errors=True)
            raise ReflexBlueError(
                f"cannot serve metrics on 127.0.0.1:{settings.metrics_port} (REFLEXBLUE_METRICS_PORT): {error}: "
                "choose a free port, or 0 to serve /metrics on the main port"
            ) from None

    def clean_up() -> None:
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        if seats_database is not None:
            SEATS.attach(None)
            seats_database.dispose()
        shutil.rmtree(directory, ignore_errors=True)

    return clean_up


@click.command("serve")
@host_option
@port_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of worker processes; they share the database, keys and access state.")
@database_url_option
@click.option("--token-lifetime", type=click.IntRange(min=1), metavar="SECONDS",
              help="Token lifetime in seconds (exp - iat); overrides REFLEXBLUE_TOKEN_LIFETIME, default 86400.")
@click.option("--revoke-on-logout/--no-revoke-on-logout", default=None,
              help="Whether POST /api/security/logout revokes the presented token; overrides "
                   "REFLEXBLUE_REVOKE_ON_LOGOUT, default off.")
@pass_state
def serve_command(
    state: CliState, host: str, port: int, workers: int, database_url: str | None,
    token_lifetime: int | None, revoke_on_logout: bool | None,
) -> None:
    """Run the External API server; migrations and the first signing key are applied at start."""
    state.override("database_url", database_url)
    state.override("token_lifetime", token_lifetime)
    state.override("revoke_on_logout", revoke_on_logout)
    state.settings()  # Reject invalid settings before anything starts.
    check_port_free(host, port)
    serve_forever(state, host=host, port=port, workers=workers)


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def demo_banner(base_url: str) -> str:
    """Return the demo banner: every demo login, and curl commands that log in and make a first call."""
    lines = [
        "",
        "ReflexBlue External API demo",
        f"  URL: {base_url}",
        "",
        "  Demo users (username / password: what the user may do):",
    ]
    for user in DEMO_USERS:
        lines.append(f"    {user.username} / {user.password}: {user.description}")
    shop = next(user for user in DEMO_USERS if user.username == "demo-shop")
    body = shlex.quote(f'{{"username":"{shop.username}","password":"{shop.password}"}}')
    lines += [
        "",
        "  Log in and keep the token:",
        f"    TOKEN=$(curl -s -X POST {base_url}/api/security/login -H 'Content-Type: application/json' "
        f"-d {body} | python3 -c 'import sys,json;print(json.load(sys.stdin)[\"token\"])')",
        "",
        "  List the articles of administration acme:",
        f"    curl -s {base_url}/api/v2/administrations/acme/articles -H \"Authorization: Bearer $TOKEN\"",
        "",
    ]
    return "\n".join(lines)


@click.command("demo")
@host_option
@port_option
@database_url_option
@click.option("--no-serve", is_flag=True,
              help="Install the demo data and print the banner, then exit without starting the server.")
@pass_state
def demo_command(state: CliState, host: str, port: int, database_url: str | None, no_serve: bool) -> None:
    """Install demo administrations, users and records, print how to call the API, then serve it.

    The database is sqlite:///reflexblue-demo.db unless --database-url names another;
    REFLEXBLUE_DATABASE_URL is ignored, so the demo's published passwords never reach a real
    environment by accident. Running the demo again resets the demo plan, users, roles and
    passwords to their demo values and adds missing records; other data is kept.
    """
    state.override("database_url", database_url)
    if PREFIX + "DATABASE_URL" not in state.overrides:
        state.override("database_url", DEMO_DATABASE_URL)
    if not no_serve:
        check_port_free(host, port)
    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    database = state.database()
    installation = install_demo(database, settings, actor=f"demo ({state.actor})")
    event("demo.installed", database=database.describe(), records_created=installation.records_created,
          **installation.summary.as_dict())
    click.echo(demo_banner(f"http://{_client_host(host)}:{port}"))
    if no_serve:
        return
    serve_forever(state, host=host, port=port, workers=1)


class SigtermReceived(Exception):
    """SIGTERM arrived while uvicorn was not handling it itself."""


def raise_sigterm_received(_signal_number: int, _frame: object) -> None:
    """Turn SIGTERM into SigtermReceived, so ``reflexblue serve`` exits with status 0 after a clean stop.

    While it serves with one worker, uvicorn (checked with 0.55) handles SIGTERM itself. It stops
    accepting connections, lets open requests finish for up to GRACEFUL_SHUTDOWN_SECONDS and runs
    the application's shutdown. Then it raises the signal again under the handler that was
    installed before it started. With the default handler that kills the process with status 143
    (128 + 15), so service managers would report a failure after a clean shutdown. A SIGTERM that
    arrives before uvicorn serves stops the start the same way, with status 0.
    """
    raise SigtermReceived
