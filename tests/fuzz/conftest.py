"""A real server for the fuzz tests: ``python -m reflexblue serve`` on a seeded SQLite file.

The database contains one administration with one demo record per resource, a role with every
permission, and a user linked to an External seat. The login throttle limits are raised, so
fuzzed logins never make the run depend on how many failures came before.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

from reflexblue.bootstrap import prepare
from reflexblue.demo import DEMO_RECORDS
from reflexblue.domain.permissions import CATALOGUE
from reflexblue.domain.resources import SCHEMAS, to_document
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings
from reflexblue.storage import records, repository

ADMINISTRATION = "fuzz"
USERNAME = "fuzz-api"
PASSWORD = "Fuzz-Login-Secret-7f3k"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SERVER_ENV = {
    "REFLEXBLUE_ARGON2_MEMORY_COST": "8192",
    "REFLEXBLUE_ARGON2_TIME_COST": "1",
    "REFLEXBLUE_THROTTLE_USER_FAILURES": "1000000",
    "REFLEXBLUE_THROTTLE_ADDRESS_FAILURES": "1000000",
    "REFLEXBLUE_LOG_FORMAT": "text",
}


@dataclass(frozen=True)
class FuzzServer:
    """A running server, a token of the seeded user, and the id of the seeded record of each resource."""

    base_url: str
    token: str
    log_path: Path
    record_ids: dict[str, str]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seed(database_url: str) -> dict[str, str]:
    """Create the administration with one record per resource, a role with every permission, and the user.

    Returns the id of the record of each resource.
    """
    settings = Settings(database_url=database_url, argon2_memory_cost=8192, argon2_time_cost=1)
    database = prepare(settings)
    try:
        with database.write() as session:
            actor = "fuzz-seed"
            repository.set_external_seats(session, 1, actor=actor)
            repository.upsert_administration(session, ADMINISTRATION, "Fuzz Administration", actor=actor)
            role = repository.create_role(session, ADMINISTRATION, "Everything", actor=actor)
            repository.set_role_permissions(session, role, [permission.key for permission in CATALOGUE], actor=actor)
            user = repository.create_user(session, USERNAME, Passwords(settings).hash(PASSWORD), actor=actor,
                                          external_seat=True)
            repository.assign(session, user, role, actor=actor)
            administration_id = repository.get_administration(session, ADMINISTRATION).id
            record_ids = {}
            for resource, items in DEMO_RECORDS.items():
                document = to_document(msgspec.convert(items[0], SCHEMAS[resource].create))
                record = records.create_record(session, administration_id, resource, document["code"], document)
                record_ids[resource] = record.id
    finally:
        database.dispose()
    return record_ids


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready within {START_TIMEOUT} s:\n{log_path.read_text()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    """Start the seeded server, log in, and after the session fail on any traceback in its log."""
    work_dir = tmp_path_factory.mktemp("fuzz-server")
    database_url = f"sqlite:///{work_dir / 'fuzz.db'}"
    record_ids = seed(database_url)
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("REFLEXBLUE_")}
    env.update(SERVER_ENV, REFLEXBLUE_DATABASE_URL=database_url)
    log_path = work_dir / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "reflexblue", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=work_dir, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(process, base_url, log_path)
        response = httpx.post(f"{base_url}/api/security/login", json={"username": USERNAME, "password": PASSWORD})
        assert response.status_code == 200, response.text
        yield FuzzServer(base_url, response.json()["token"], log_path, record_ids)
    finally:
        _stop(process)
    log = log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, f"the server logged an unhandled exception:\n{log[-6000:]}"
