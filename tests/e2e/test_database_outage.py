"""Database outages: a server whose PostgreSQL cluster stops and starts again under load, and a locked SQLite file.

The PostgreSQL test runs a throwaway cluster of its own (initdb, pg_ctl), so it can stop the
database server without touching any other. As root, the cluster runs as the ``postgres`` OS
user, because initdb and postgres refuse to run as root. The test is skipped only when the
PostgreSQL binaries are missing or no way to run them works.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import select

from reflexblue.api.availability import ACCESS_STALENESS_LIMIT
from reflexblue.storage.models import Record

from .support import ApiUser, Seeder, Server, free_port, server_env, start_server

#: REFLEXBLUE_DATABASE_TIMEOUT of the servers under test, in seconds.
DATABASE_TIMEOUT = 2
#: Seconds a request may take beyond the database timeout before the test calls it hung.
REQUEST_MARGIN = 3.0
#: Client-side timeout, so a request that hangs is recorded instead of blocking the test.
CLIENT_TIMEOUT = 15.0
WARM_UP_SECONDS = 1.5
OUTAGE_SECONDS = 4.0
#: Seconds after the cluster is back within which every kind of request must succeed again.
RECOVERY_LIMIT = 20.0
PAUSE_BETWEEN_REQUESTS = 0.02
PROBLEM_MEDIA_TYPE = "application/problem+json"
UNAVAILABLE_TYPE = "urn:reflexblue:problem:service-unavailable"
PERMISSIONS = {"acme": ["administration.access", "v2.articles"]}
ARTICLES = "/api/v2/administrations/acme/articles"


# ---------------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster


def postgres_bin_directory() -> Path | None:
    """Return the directory that contains initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = [Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin") if (Path(path) / "initdb").exists()]
    if candidates:
        return max(candidates, key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def command_wrappers() -> list[tuple[str, Callable[[list[str]], list[str]]]]:
    """Return the ways to run PostgreSQL programs from this process, the preferred first.

    As root they run as the ``postgres`` OS user, through runuser or else su.
    """
    if os.geteuid() != 0:
        return [("as the current user", lambda argv: argv)]
    wrappers: list[tuple[str, Callable[[list[str]], list[str]]]] = []
    if shutil.which("runuser"):
        wrappers.append(("runuser -u postgres", lambda argv: ["runuser", "-u", "postgres", "--", *argv]))
    if shutil.which("su"):
        wrappers.append(("su postgres", lambda argv: ["su", "-s", "/bin/sh", "postgres", "-c", shlex.join(argv)]))
    return wrappers


class PostgresCluster:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 with trust authentication."""

    def __init__(self, bin_directory: Path, wrap: Callable[[list[str]], list[str]], port: int) -> None:
        self.bin_directory = bin_directory
        self.wrap = wrap
        self.port = port
        # Directly under /tmp, not in pytest's private folder, so the postgres user can reach it and
        # the socket path stays within the length limit of Unix sockets.
        self.base = Path(tempfile.mkdtemp(prefix="rb-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)

    def run(self, program: str, *arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        argv = self.wrap([str(self.bin_directory / program), *arguments])
        return subprocess.run(argv, cwd=self.base, capture_output=True, text=True, timeout=timeout, check=False)

    def initialise(self) -> None:
        completed = self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                             "--locale=C", "--no-sync")
        if completed.returncode != 0:
            raise RuntimeError(f"initdb failed with status {completed.returncode}:\n{completed.stderr[-3000:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        completed = self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w",
                             "-t", "30", "start")
        if completed.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed with status {completed.returncode}:\n{completed.stderr[-2000:]}"
                               f"\n{self.log_text()[-2000:]}")

    def stop_immediately(self) -> None:
        """Stop the server like a crash: open connections are cut and nothing is shut down cleanly."""
        completed = self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        if completed.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed with status {completed.returncode}:\n{completed.stderr[-2000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster's directory."""
        if (self.data / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    """A started throwaway cluster, stopped and deleted afterwards, also when the test fails."""
    bin_directory = postgres_bin_directory()
    if bin_directory is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and initdb refuses root, but there is no 'postgres' OS user to run it as")
    failures = []
    for description, wrap in command_wrappers():
        candidate = PostgresCluster(bin_directory, wrap, free_port())
        try:
            candidate.initialise()
            candidate.start()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            failures.append(f"{description}: {error}")
            candidate.remove()
            continue
        try:
            yield candidate
        finally:
            candidate.remove()
        return
    pytest.skip("cannot run a throwaway PostgreSQL cluster: " + ("; ".join(failures) or "no way to run initdb"))


# ---------------------------------------------------------------------------------------------
# Load


@dataclass
class Outcome:
    """One request of the load: when it started, how long it took and what came back."""

    kind: str
    started: float
    elapsed: float
    status: int | None
    error: str | None = None
    retry_after: str | None = None
    media_type: str = ""
    problem_type: str | None = None
    record_id: str | None = None


@dataclass
class Load:
    """Threads that send one kind of request each, in a loop, until stopped."""

    base_url: str
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def add(self, kind: str, send: Callable[[httpx.Client], httpx.Response], token: str | None = None) -> None:
        thread = threading.Thread(target=self._loop, args=(kind, send, token), name=f"load-{kind}", daemon=True)
        self._threads.append(thread)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT + 5)

    def _loop(self, kind: str, send: Callable[[httpx.Client], httpx.Response], token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=CLIENT_TIMEOUT) as client:
            while not self.stop.is_set():
                self._record(kind, send, client)
                time.sleep(PAUSE_BETWEEN_REQUESTS)

    def _record(self, kind: str, send: Callable[[httpx.Client], httpx.Response], client: httpx.Client) -> None:
        started = time.monotonic()
        try:
            response = send(client)
        except httpx.HTTPError as error:
            outcome = Outcome(kind, started, time.monotonic() - started, None, error=repr(error))
        else:
            outcome = Outcome(kind, started, time.monotonic() - started, response.status_code,
                              retry_after=response.headers.get("retry-after"),
                              media_type=response.headers.get("content-type", "").split(";")[0])
            if outcome.media_type == PROBLEM_MEDIA_TYPE:
                outcome.problem_type = response.json().get("type")
            if response.status_code == 201:
                outcome.record_id = response.json()["id"]
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def login_request(user: ApiUser) -> Callable[[httpx.Client], httpx.Response]:
    return lambda client: client.post("/api/security/login", json={"username": user.username,
                                                                     "password": user.password})


def list_request(client: httpx.Client) -> httpx.Response:
    return client.get(ARTICLES, params={"limit": 5})


def create_request(client: httpx.Client) -> httpx.Response:
    code = f"outage-{uuid.uuid4().hex[:16]}"
    return client.post(ARTICLES, json={"code": code, "description": "written during the outage test"})


def first_success_after(outcomes: list[Outcome], kind: str, moment: float) -> float | None:
    """Return the seconds from ``moment`` to the start of the first 2xx request of ``kind`` started after it."""
    starts = [o.started for o in outcomes if o.kind == kind and o.started >= moment and o.status in (200, 201)]
    return min(starts) - moment if starts else None


def seed_deployment(database_url: str) -> tuple[Seeder, list[ApiUser]]:
    seed = Seeder(database_url)
    seed.set_external_seats(100)
    seed.administration("acme", "Acme Wholesale")
    return seed, [seed.user(PERMISSIONS) for _ in range(4)]


def login(server: Server, user: ApiUser) -> str:
    with server.client() as client:
        response = client.post("/api/security/login", json={"username": user.username, "password": user.password})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


# ---------------------------------------------------------------------------------------------
# PostgreSQL stopped and started under load


def test_postgresql_outage_under_load(cluster: PostgresCluster) -> None:
    database_url = cluster.create_database("rb_outage")
    seed, users = seed_deployment(database_url)
    server = start_server(server_env(database_url, {
        "REFLEXBLUE_DATABASE_TIMEOUT": str(DATABASE_TIMEOUT),
        # Logins that fail half-way during the outage count as failures, and this test is not about throttling.
        "REFLEXBLUE_THROTTLE_USER_FAILURES": "100000",
    }))
    try:
        reader_token = login(server, users[2])
        writer_token = login(server, users[3])
        load = Load(server.base_url)
        load.add("login", login_request(users[0]))
        load.add("login", login_request(users[1]))
        load.add("list", list_request, reader_token)
        load.add("list", list_request, reader_token)
        load.add("create", create_request, writer_token)
        load.add("create", create_request, writer_token)
        readiness: list[tuple[float, int]] = []

        def check_ready() -> int:
            status = httpx.get(f"{server.base_url}/readyz", timeout=CLIENT_TIMEOUT).status_code
            readiness.append((time.monotonic(), status))
            return status

        def read_own_permissions() -> httpx.Response:
            # Served from the cached access snapshot: this request itself needs no database query.
            return httpx.get(f"{server.base_url}/api/security/permissions", timeout=CLIENT_TIMEOUT,
                             headers={"Authorization": f"Bearer {reader_token}"})

        cached_access_before = read_own_permissions()
        load.start()
        try:
            time.sleep(WARM_UP_SECONDS)
            outage_started = time.monotonic()
            cluster.stop_immediately()
            outage_confirmed = time.monotonic()
            while time.monotonic() - outage_confirmed < OUTAGE_SECONDS:
                check_ready()
                liveness = httpx.get(f"{server.base_url}/healthz", timeout=CLIENT_TIMEOUT).status_code
                assert liveness == 200, "/healthz failed while the database was stopped"
                time.sleep(0.2)
            cached_access_during = read_own_permissions()
            outage_ended = time.monotonic()
            cluster.start()
            restarted = time.monotonic()
            while time.monotonic() - restarted < RECOVERY_LIMIT:
                recovered = all(first_success_after(load.snapshot(), kind, restarted) is not None
                                for kind in ("login", "list", "create"))
                if check_ready() == 200 and recovered:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            cached_access_after = read_own_permissions()
        finally:
            load.finish()
    finally:
        server.stop()
    outcomes = load.snapshot()

    unanswered = [o for o in outcomes if o.status is None]
    assert not unanswered, f"requests without a response: {unanswered[:5]}"
    unexpected = [o for o in outcomes if o.status not in (200, 201, 503)]
    assert not unexpected, f"statuses other than 200, 201 and 503: {unexpected[:5]}"
    unavailable = [o for o in outcomes if o.status == 503]
    assert all(o.retry_after for o in unavailable), "a 503 without Retry-After"
    assert all(o.media_type == PROBLEM_MEDIA_TYPE for o in unavailable), "a 503 that is not a problem"
    assert all(o.problem_type == UNAVAILABLE_TYPE for o in unavailable), "a 503 of another problem type"
    slowest = max(outcomes, key=lambda o: o.elapsed)
    assert slowest.elapsed <= DATABASE_TIMEOUT + REQUEST_MARGIN, f"a request took too long: {slowest}"

    before = [o for o in outcomes if o.started + o.elapsed < outage_started]
    assert before, "no request finished before the outage"
    assert all(o.status in (200, 201) for o in before), "the load failed before the outage"
    for kind in ("login", "list", "create"):
        during = [o for o in outcomes if o.kind == kind and outage_confirmed <= o.started < outage_ended]
        assert during, f"no {kind} request during the outage"
        assert all(o.status == 503 for o in during), f"{kind} succeeded while the database was stopped"
        resumed_after = first_success_after(outcomes, kind, restarted)
        assert resumed_after is not None, f"{kind} did not succeed within {RECOVERY_LIMIT} s of the restart"

    outage_readiness = [status for moment, status in readiness if moment < outage_ended]
    assert outage_readiness, "/readyz was not called during the outage"
    assert set(outage_readiness) == {503}, f"/readyz during the outage: {outage_readiness}"
    assert readiness[-1][1] == 200, "/readyz did not return to 200 after the restart"

    # Cached access is used at most ACCESS_STALENESS_LIMIT s after the last refresh. The outage lasted longer.
    assert OUTAGE_SECONDS > ACCESS_STALENESS_LIMIT + 1
    assert cached_access_before.status_code == 200
    assert cached_access_during.status_code == 503
    assert cached_access_during.headers.get("retry-after")
    assert cached_access_after.status_code == 200

    created = {o.record_id for o in outcomes if o.status == 201}
    assert created, "no record was created"
    with seed.database.read() as session:
        stored = set(session.scalars(select(Record.id).where(Record.id.in_(created))))
    seed.close()
    assert created - stored == set(), "records that got 201 are missing from the database"


# ---------------------------------------------------------------------------------------------
# SQLite locked by another connection


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[tuple[Server, Seeder, list[ApiUser]]]:
    database_url = f"sqlite:///{tmp_path / 'locked.db'}"
    seed, users = seed_deployment(database_url)
    server = start_server(server_env(database_url, {"REFLEXBLUE_DATABASE_TIMEOUT": "1"}))
    yield server, seed, users
    server.stop()
    seed.close()


def test_locked_sqlite_database_gets_503(sqlite_server: tuple[Server, Seeder, list[ApiUser]]) -> None:
    server, seed, users = sqlite_server
    timeout = 1
    token = login(server, users[0])
    database_file = seed.database.url.database
    assert database_file is not None

    # Another process would do the same: hold SQLite's write lock longer than the server's busy timeout.
    holder = sqlite3.connect(database_file, isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # Plain clients, because the suite's clients fail the test on every 5xx.
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"},
                          timeout=CLIENT_TIMEOUT) as client, ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            writes = list(pool.map(lambda _: create_request(client), range(4)))
            writes_elapsed = time.monotonic() - started
            read = list_request(client)
            login_response = login_request(users[1])(client)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert [response.status_code for response in writes] == [503] * 4
    assert all(response.headers.get("retry-after") for response in writes)
    assert all(response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE) for response in writes)
    assert all(response.json()["type"] == UNAVAILABLE_TYPE for response in writes)
    # Each write waits up to the timeout for this process's write lock, then up to the timeout for SQLite's lock.
    assert writes_elapsed <= 2 * timeout + REQUEST_MARGIN
    assert read.status_code == 200  # WAL readers are not blocked by the writer.
    assert login_response.status_code == 503  # The login throttle writes first.
    with server.client(token) as client:
        assert create_request(client).status_code == 201
