"""Fixtures of the security attack tests.

The servers, databases and seeding of ``tests/e2e`` are reused by import: ``databases``,
``launch`` and ``deployment`` start real uvicorn processes on 127.0.0.1, on SQLite files or,
with ``REFLEXBLUE_TEST_DATABASE=postgresql``, on fresh PostgreSQL databases. ``deployment`` is
the shared server of the session; modules that need other settings start their own with
``launch``.

Most attacks aim at one target: ``vault``, an administration whose only user is
``vault_owner``. The attacker has a real account (``attacker``) with every permission in
another administration, ``home``, and tries to reach ``vault``'s articles.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

# tests/ has no __init__.py, so the repository root must be importable for ``tests.e2e``.
_REPOSITORY_ROOT = str(Path(__file__).resolve().parents[2])
if _REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, _REPOSITORY_ROOT)

from tests.e2e import conftest as e2e_conftest
from tests.e2e.conftest import read_log_from
from tests.e2e.support import (
    STARTED_SERVERS,
    UNHANDLED_ERROR_MARKER,
    ApiUser,
    Deployment,
    token_header,
    token_payload,
    unique_name,
)

from .attacks import FULL_RIGHTS, fresh_claims

# Fixtures of tests/e2e, registered for this directory as if they were defined here: the database
# factory, server launcher, shared deployment, server clean-up and the per-test check of server logs.
databases = e2e_conftest.databases
launch = e2e_conftest.launch
deployment = e2e_conftest.deployment
remove_server_directories = e2e_conftest.remove_server_directories
server_logs_stay_clean = e2e_conftest.server_logs_stay_clean

#: Log lines that mean a server hit an error it did not handle: a 500 from the application, an
#: exception that escaped to uvicorn, or a failed audit write in the background thread.
SERVER_ERROR_MARKERS = (UNHANDLED_ERROR_MARKER, "Exception in ASGI application", "audit writer failed")


@pytest.fixture(scope="module", autouse=True)
def server_logs_stay_clean_in_module(remove_server_directories: None) -> Iterator[None]:
    """Fail the module when any server logged an unhandled or background error while it ran.

    The per-test check imported from tests/e2e looks for the 500 marker only. This one also
    catches errors of uvicorn and of the audit writer thread, which can surface after a test.
    """
    offsets = {id(server): server.log_path.stat().st_size for server in STARTED_SERVERS}
    yield
    for server in STARTED_SERVERS:
        if not server.log_path.exists():
            continue
        new_output = read_log_from(server, offsets.get(id(server), 0))
        for marker in SERVER_ERROR_MARKERS:
            assert marker not in new_output, f"server {server.base_url} logged {marker!r}:\n{new_output[-4000:]}"


@pytest.fixture(scope="session")
def home(deployment: Deployment) -> str:
    """The administration where the attacker's own account has every permission."""
    return deployment.seed.administration(unique_name("home"))


@pytest.fixture(scope="session")
def vault(deployment: Deployment) -> str:
    """The administration under attack; only ``vault_owner`` has rights in it."""
    return deployment.seed.administration(unique_name("vault"))


@pytest.fixture(scope="session")
def attacker(deployment: Deployment, home: str) -> ApiUser:
    return deployment.seed.user({home: FULL_RIGHTS})


@pytest.fixture(scope="session")
def attacker_token(deployment: Deployment, attacker: ApiUser) -> str:
    return deployment.login(attacker)


@pytest.fixture(scope="session")
def vault_owner(deployment: Deployment, vault: str) -> ApiUser:
    return deployment.seed.user({vault: FULL_RIGHTS})


@pytest.fixture(scope="session")
def vault_owner_token(deployment: Deployment, vault_owner: ApiUser) -> str:
    return deployment.login(vault_owner)


@pytest.fixture(scope="session")
def vault_path(vault: str) -> str:
    """The collection that every forged token tries to read."""
    return f"/api/v2/administrations/{vault}/articles"


@pytest.fixture(scope="session")
def vault_record(deployment: Deployment, vault_owner_token: str, vault_path: str) -> dict[str, Any]:
    """An article in the vault, whose code must never show up in an attacker's response."""
    with deployment.client(vault_owner_token) as client:
        response = client.post(vault_path, json={"code": unique_name("SECRET"), "description": "vault content"})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture(scope="session")
def signing_key(deployment: Deployment, attacker_token: str) -> tuple[str, ed25519.Ed25519PrivateKey]:
    """The kid and private key the deployment signs with, read from its signing_keys table."""
    kid, private_key = deployment.seed.active_signing_key()
    assert kid == token_header(attacker_token)["kid"]
    return kid, private_key


@pytest.fixture(scope="session")
def private_key(signing_key: tuple[str, ed25519.Ed25519PrivateKey]) -> ed25519.Ed25519PrivateKey:
    return signing_key[1]


@pytest.fixture(scope="session")
def http(deployment: Deployment) -> Iterator[httpx.Client]:
    """A client of the shared server without a token, which fails the test on any 5xx response."""
    with deployment.client() as client:
        yield client


@pytest.fixture
def owner_header(vault_owner_token: str) -> dict[str, Any]:
    """The JOSE header of a real token: alg, kid and typ."""
    return token_header(vault_owner_token)


@pytest.fixture
def owner_claims(vault_owner_token: str) -> dict[str, Any]:
    """The claims of the vault owner with a new jti and times around now: what a forger wants to sign."""
    return fresh_claims(token_payload(vault_owner_token))


@pytest.fixture
def read_vault(http: httpx.Client, vault_path: str, vault_record: dict[str, Any]) -> Callable[..., httpx.Response]:
    """Return a function that reads the vault with a token (or a whole Authorization value as bytes).

    A 200 that carries the vault record's code fails at once, whatever the test checks next.
    """

    def read(token: str | bytes) -> httpx.Response:
        authorization = token if isinstance(token, bytes) else f"Bearer {token}".encode("ascii")
        response = http.get(vault_path, headers={"Authorization": authorization})
        assert vault_record["code"] not in response.text, \
            f"the token was accepted: the vault's data came back with status {response.status_code}"
        return response

    return read
