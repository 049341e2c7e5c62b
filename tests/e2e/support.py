"""Helpers of the end-to-end tests: server processes, databases, seeding, remote changes and JWTs.

Every server is the real application, started as a uvicorn subprocess on 127.0.0.1 and reached
over HTTP. Seeding uses the product's own repository functions against the server's database.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from psycopg import sql
from sqlalchemy import make_url, select

from reflexblue.bootstrap import prepare
from reflexblue.security import keys
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import repository
from reflexblue.storage.models import AuditEvent, SigningKey

#: A PostgreSQL server where the suite may create and drop databases of its own.
POSTGRES_ADMIN_URL = os.environ.get("REFLEXBLUE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

#: Cheap argon2id parameters for servers and seeding. The default parameters use 19 MiB of memory per hash.
FAST_ARGON2_ENV = {"REFLEXBLUE_ARGON2_MEMORY_COST": "8192", "REFLEXBLUE_ARGON2_TIME_COST": "1"}
FAST_ARGON2_MEMORY_COST = 8192
FAST_ARGON2_TIME_COST = 1

SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
#: The start of the message the server logs for an unhandled error, for which it returns a 500.
UNHANDLED_ERROR_MARKER = "unhandled error"

ALL_PERMISSIONS_V2 = [
    "v2.articles", "v2.article-groups", "v2.order-patterns", "v2.payment-conditions", "v2.contacts",
    "v2.dynamic-fields", "v2.invoices", "v2.integrations", "v2.orders", "v2.delivery-notes", "v2.relations",
    "v2.relation-groups", "v2.languages", "v2.webhooks",
]
RESOURCES = [key.removeprefix("v2.") for key in ALL_PERMISSIONS_V2]


# ---------------------------------------------------------------------------------------------
# HTTP clients


def reject_server_errors(response: httpx.Response) -> None:
    """Fail the calling test on any 5xx response, so no test can pass over a server error."""
    if response.status_code >= 500:
        response.read()
        request = response.request
        raise AssertionError(
            f"{request.method} {request.url} returned {response.status_code}: {response.text[:500]}"
        )


def new_client(base_url: str, token: str | None = None, **options: Any) -> httpx.Client:
    """Open an HTTP client for ``base_url`` that fails on server errors and sends ``token`` as a Bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=base_url,
        headers=headers,
        timeout=30.0,
        event_hooks={"response": [reject_server_errors]},
        **options,
    )


# ---------------------------------------------------------------------------------------------
# Server processes


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running server process and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    #: The process's working directory, which contains its log file.
    work_dir: Path

    @property
    def log_path(self) -> Path:
        return self.work_dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return self.env["REFLEXBLUE_DATABASE_URL"]

    def client(self, token: str | None = None, **options: Any) -> httpx.Client:
        return new_client(self.base_url, token, **options)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate the process, and kill it when it has not exited within the stop timeout."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SERVER_STOP_TIMEOUT)


#: Every server started in this session, so each test can check the logs of all of them.
STARTED_SERVERS: list[Server] = []


def server_command(port: int) -> list[str]:
    """Return the command that runs the application under uvicorn, as ``reflexblue serve`` configures it.

    ``--no-proxy-headers`` matches ``reflexblue serve``, because uvicorn otherwise trusts X-Forwarded-For
    from 127.0.0.1, which is where every test request comes from.
    """
    return [
        sys.executable, "-m", "uvicorn", "--factory", "reflexblue.api.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-proxy-headers",
    ]


def serve_command(port: int) -> list[str]:
    """Return the command that runs ``reflexblue serve``, as operators start the server."""
    return [sys.executable, "-m", "reflexblue", "serve", "--host", "127.0.0.1", "--port", str(port)]


def start_server(env: dict[str, str], *, command: Callable[[int], list[str]] = server_command) -> Server:
    """Start a server with the ``REFLEXBLUE_*`` settings in ``env`` and wait until GET /readyz returns 200.

    ``command`` returns the command line for a port: uvicorn directly (the default) or
    :func:`serve_command`. Other ``REFLEXBLUE_*`` variables of the test process are not passed on,
    so a server runs with exactly the settings the test gives. Raises RuntimeError with the
    server's output when the process exits or is not ready within the start timeout.
    """
    process_env = {name: value for name, value in os.environ.items() if not name.startswith("REFLEXBLUE_")}
    process_env.update(env)
    work_dir = Path(tempfile.mkdtemp(prefix="rb-e2e-server-"))
    port = free_port()
    with open(work_dir / "server.log", "wb") as log_file:
        process = subprocess.Popen(
            command(port), env=process_env, cwd=work_dir, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = Server(process, port, dict(env), work_dir)
    STARTED_SERVERS.append(server)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before it was ready:\n"
                               f"{server.log_text()[-4000:]}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server not ready within {SERVER_START_TIMEOUT} s:\n{server.log_text()[-4000:]}")


# ---------------------------------------------------------------------------------------------
# Databases


class DatabaseFactory:
    """Creates one fresh database per call: a SQLite file, or a PostgreSQL database dropped by ``drop_all``."""

    def __init__(self, kind: str, directory: Path) -> None:
        if kind not in ("sqlite", "postgresql"):
            raise ValueError(f"invalid REFLEXBLUE_TEST_DATABASE={kind!r}: use sqlite or postgresql")
        self.kind = kind
        self._directory = directory
        self._created: list[str] = []

    def create(self) -> str:
        """Create an empty database and return its URL."""
        name = f"rb_e2e_{secrets.token_hex(6)}"
        if self.kind == "sqlite":
            return f"sqlite:///{self._directory / (name + '.db')}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._created.append(name)
        return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop the PostgreSQL databases this factory created, and only those."""
        if not self._created:
            return
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            for name in self._created:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._created.clear()


# ---------------------------------------------------------------------------------------------
# Seeding with the product's own code


@dataclass(frozen=True)
class ApiUser:
    """A seeded user and its password in clear."""

    id: str
    username: str
    password: str
    role: str


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def fast_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        argon2_memory_cost=FAST_ARGON2_MEMORY_COST,
        argon2_time_cost=FAST_ARGON2_TIME_COST,
    )


class Seeder:
    """Writes users, administrations, roles and permissions with ``reflexblue.storage.repository``."""

    ACTOR = "e2e-seed"

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.settings = fast_settings(database_url)
        self.database = prepare(self.settings, signing_key=True)
        self.passwords = Passwords(self.settings)

    def close(self) -> None:
        self.database.dispose()

    def set_external_seats(self, seats: int) -> None:
        with self.database.write() as session:
            repository.set_external_seats(session, seats, actor=self.ACTOR)

    def administration(self, code: str | None = None, name: str | None = None) -> str:
        """Create an administration (a random code when none is given) and return its code."""
        code = code or unique_name("adm")
        with self.database.write() as session:
            repository.upsert_administration(session, code, name or f"Administration {code}", actor=self.ACTOR)
        return code

    def user(
        self,
        permissions: dict[str, list[str]] | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        active: bool = True,
        external_seat: bool = True,
    ) -> ApiUser:
        """Create a user with, per administration code, a role of its own that has the given permission keys."""
        username = username or unique_name("api-user")
        password = password or f"pw-{secrets.token_urlsafe(12)}"
        role_name = f"role of {username}"
        with self.database.write() as session:
            user = repository.create_user(session, username, self.passwords.hash(password), actor=self.ACTOR, active=active,
                                          external_seat=external_seat)
            for code, keys in (permissions or {}).items():
                role = repository.create_role(session, code, role_name, actor=self.ACTOR)
                repository.set_role_permissions(session, role, keys, actor=self.ACTOR)
                repository.assign(session, user, role, actor=self.ACTOR)
            return ApiUser(user.id, username, password, role_name)

    def unlink_seat(self, username: str) -> None:
        with self.database.write() as session:
            repository.unlink_seat(session, repository.get_user(session, username), actor=self.ACTOR)

    def password_hash(self, username: str) -> str:
        with self.database.read() as session:
            return repository.get_user(session, username).password_hash

    def rotate_key(self) -> str:
        """Start signing with a new key, as ``reflexblue keys rotate`` does, and return its kid."""
        with self.database.write() as session:
            return keys.create_key(session, self.settings.token_algorithm, secret="", actor=self.ACTOR).kid

    def retire_key(self, kid: str) -> None:
        with self.database.write() as session:
            keys.retire_key(session, kid, actor=self.ACTOR)

    def audit_events(self, since_id: int = 0) -> list[dict[str, Any]]:
        """Return the audit events with an id above ``since_id``, oldest first."""
        with self.database.read() as session:
            rows = session.scalars(select(AuditEvent).where(AuditEvent.id > since_id).order_by(AuditEvent.id))
            return [{"id": row.id, "event": row.event, "actor": row.actor, "username": row.username,
                     "detail": dict(row.detail)} for row in rows]

    def active_signing_key(self) -> tuple[str, ed25519.Ed25519PrivateKey]:
        """Return the kid and private key of the active signing key (stored unencrypted without a secret key)."""
        with self.database.read() as session:
            row = session.scalars(select(SigningKey).where(SigningKey.state == "active")).one()
            kid = row.kid
            private_key = serialization.load_pem_private_key(row.private_key, password=None)
        assert isinstance(private_key, ed25519.Ed25519PrivateKey)
        return kid, private_key



@dataclass
class Deployment:
    """A server process and the seeder of its database."""

    server: Server
    seed: Seeder

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def client(self, token: str | None = None, **options: Any) -> httpx.Client:
        return self.server.client(token, **options)

    def login(self, user: ApiUser) -> str:
        """Log ``user`` in and return the token, failing the test when the login is not a 200."""
        with self.client() as client:
            response = client.post("/api/security/login", json={"username": user.username, "password": user.password})
        assert response.status_code == 200, f"login of {user.username} failed: {response.status_code} {response.text}"
        return str(response.json()["token"])

    def stop(self) -> None:
        self.server.stop()
        self.seed.close()



def server_env(database_url: str, extra_env: dict[str, str] | None = None, *, fast_argon2: bool = True) -> dict[str, str]:
    """Return the server settings: the database, a high per-address limit, fast argon2, then ``extra_env``.

    The suite sends every login from 127.0.0.1, so the default per-address limit of 50 failures
    would throttle unrelated tests. Throttling tests set their own limits.
    """
    env = {"REFLEXBLUE_DATABASE_URL": database_url, "REFLEXBLUE_THROTTLE_ADDRESS_FAILURES": "100000"}
    if fast_argon2:
        env.update(FAST_ARGON2_ENV)
    env.update(extra_env or {})
    return env


def launch_deployment(databases: DatabaseFactory, extra_env: dict[str, str] | None = None, *,
                      fast_argon2: bool = True) -> Deployment:
    """Create a database, seed the plan, start a server on it and return both.

    The seeder always hashes with the fast argon2 parameters, also when the server uses the defaults.
    """
    database_url = databases.create()
    seed = Seeder(database_url)
    seed.set_external_seats(100_000)
    server = start_server(server_env(database_url, extra_env, fast_argon2=fast_argon2))
    return Deployment(server, seed)


# ---------------------------------------------------------------------------------------------
# Changes made by another process


_CHANGE_SNIPPET = """
import json
import sys

from reflexblue.security import keys
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import repository
from reflexblue.storage.database import Database

database_url, operation, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
actor = "e2e-other-process"
database = Database(database_url)
with database.write() as session:
    if operation == "set_role_permissions":
        role = repository.get_role(session, arguments["administration"], arguments["role"])
        repository.set_role_permissions(session, role, arguments["permissions"], actor=actor)
    else:
        user = repository.get_user(session, arguments["username"])
        if operation == "deactivate":
            repository.set_active(session, user, False, actor=actor)
        elif operation == "delete_user":
            repository.delete_user(session, user, actor=actor)
        elif operation == "set_password":
            settings = Settings(database_url=database_url, argon2_memory_cost=8192, argon2_time_cost=1)
            repository.set_password_hash(session, user, Passwords(settings).hash(arguments["password"]), actor=actor)
        elif operation == "revoke_tokens":
            repository.revoke_tokens(session, user, actor=actor)
        elif operation == "unlink_seat":
            repository.unlink_seat(session, user, actor=actor)
        else:
            raise SystemExit("unknown operation " + operation)
database.dispose()
"""


def change_in_other_process(database_url: str, operation: str, **arguments: Any) -> None:
    """Apply one repository change from a separate Python process and wait until it has committed."""
    completed = subprocess.run(
        [sys.executable, "-c", _CHANGE_SNIPPET, database_url, operation, json.dumps(arguments)],
        capture_output=True, text=True, timeout=60,
        env={name: value for name, value in os.environ.items() if not name.startswith("REFLEXBLUE_")},
    )
    assert completed.returncode == 0, f"{operation} in other process failed:\n{completed.stderr[-3000:]}"


def poll(request: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool],
         timeout: float) -> tuple[httpx.Response, float]:
    """Repeat ``request`` until ``done(response)`` or ``timeout`` seconds pass; return the last response and elapsed time."""
    started = time.monotonic()
    while True:
        response = request()
        elapsed = time.monotonic() - started
        if done(response) or elapsed >= timeout:
            return response, elapsed
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# JWT pieces, built by hand so tests can produce tokens that no library would


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_segment(value: Any) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def token_header(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[0])))


def token_payload(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


def sign_eddsa(header_segment: str, payload_segment: str, private_key: ed25519.Ed25519PrivateKey) -> str:
    """Return the complete JWS compact serialisation of the two segments, signed with Ed25519."""
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    return f"{header_segment}.{payload_segment}.{b64url_encode(private_key.sign(signing_input))}"


def mint(header: dict[str, Any], payload: Any, private_key: ed25519.Ed25519PrivateKey) -> str:
    return sign_eddsa(encode_segment(header), encode_segment(payload), private_key)
