"""``reflexblue serve`` and ``reflexblue demo``: run the HTTP server under uvicorn."""

from __future__ import annotations

import logging
import shlex

import click

from reflexblue.bootstrap import prepare
from reflexblue.cli.context import CliState, pass_state
from reflexblue.demo import DEMO_DATABASE_URL, DEMO_USERS, install_demo
from reflexblue.domain.errors import ReflexBlueError
from reflexblue.logs import configure_logging, event
from reflexblue.security.keys import KeySet
from reflexblue.settings import PREFIX, Settings
from reflexblue.storage.database import Database

APP_FACTORY = "reflexblue.api.app:create_app"
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
          token_lifetime=settings.token_lifetime, revoke_on_logout=settings.revoke_on_logout)
    database.dispose()
    if not settings.secret_key:
        event("server.secret_key_unset", logging.WARNING,
              detail="private signing keys are stored unencrypted in the database: set REFLEXBLUE_SECRET_KEY "
                     "from a secret store for every server and command, restart, then run 'reflexblue keys rotate' "
                     "so the new key is stored encrypted")
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
    event("server.stopped", host=host, port=port)


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
