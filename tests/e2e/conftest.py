"""Fixtures of the end-to-end tests: databases, server deployments, seeded users and HTTP clients.

The database is a fresh SQLite file per deployment unless ``REFLEXBLUE_TEST_DATABASE=postgresql``,
in which case each deployment gets a fresh PostgreSQL database on 127.0.0.1:5432, dropped at the
end of the session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import httpx
import pytest

from .support import (
    ApiUser,
    DatabaseFactory,
    Deployment,
    STARTED_SERVERS,
    UNHANDLED_ERROR_MARKER,
    Server,
    launch_deployment,
)


@pytest.fixture(scope="session", autouse=True)
def remove_server_directories() -> Iterator[None]:
    """Delete the working directories (and logs) of every server once the session is over."""
    yield
    for server in STARTED_SERVERS:
        server.stop()
        shutil.rmtree(server.work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(os.environ.get("REFLEXBLUE_TEST_DATABASE", "sqlite"),
                              tmp_path_factory.mktemp("databases"))
    yield factory
    factory.drop_all()


@pytest.fixture(autouse=True)
def server_logs_stay_clean() -> Iterator[None]:
    """Fail the test when a server logged an unhandled error (a 500) while it ran.

    This also covers requests that do not go through httpx, such as raw sockets.
    """
    offsets = {id(server): server.log_path.stat().st_size for server in STARTED_SERVERS}
    yield
    for server in STARTED_SERVERS:
        new_output = read_log_from(server, offsets.get(id(server), 0))
        assert UNHANDLED_ERROR_MARKER not in new_output, f"the server logged an unhandled error:\n{new_output[-4000:]}"


def read_log_from(server: Server, offset: int) -> str:
    with open(server.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", errors="replace")


@pytest.fixture(scope="session")
def launch(databases: DatabaseFactory) -> Iterator[Callable[..., Deployment]]:
    """Return a function that starts a deployment with extra settings. All are stopped at session end.

    Module fixtures that need special settings call it and stop their deployment themselves.
    """
    started: list[Deployment] = []

    def launch_with(extra_env: dict[str, str] | None = None, *, fast_argon2: bool = True) -> Deployment:
        deployment = launch_deployment(databases, extra_env, fast_argon2=fast_argon2)
        started.append(deployment)
        return deployment

    yield launch_with
    for deployment in started:
        deployment.stop()


@pytest.fixture(scope="session")
def deployment(launch: Callable[..., Deployment]) -> Iterator[Deployment]:
    """The shared server with default settings (apart from fast argon2 and a high per-address limit)."""
    shared = launch()
    yield shared
    shared.stop()


@pytest.fixture(scope="session")
def acme(deployment: Deployment) -> str:
    """An administration of the shared deployment that most authorisation tests use."""
    return deployment.seed.administration("acme", "Acme Wholesale")


@pytest.fixture(scope="session")
def globex(deployment: Deployment) -> str:
    """A second administration of the shared deployment, for isolation tests."""
    return deployment.seed.administration("globex", "Globex Retail")


@pytest.fixture
def client(deployment: Deployment) -> Iterator[httpx.Client]:
    """An HTTP client for the shared server without a token."""
    with deployment.client() as anonymous:
        yield anonymous


@pytest.fixture
def make_user(deployment: Deployment) -> Callable[..., ApiUser]:
    """Return a function that seeds a user in the shared deployment (see ``Seeder.user``)."""
    return deployment.seed.user


@pytest.fixture
def login(deployment: Deployment) -> Callable[[ApiUser], str]:
    """Return a function that logs a user in on the shared server and returns its token."""
    return deployment.login


@pytest.fixture
def authorised(deployment: Deployment) -> Iterator[Callable[[str], httpx.Client]]:
    """Return a function that opens a client sending the given token. The clients close after the test."""
    clients: list[httpx.Client] = []

    def open_client(token: str) -> httpx.Client:
        opened = deployment.client(token)
        clients.append(opened)
        return opened

    yield open_client
    for opened in clients:
        opened.close()
