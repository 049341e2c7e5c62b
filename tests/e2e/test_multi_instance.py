"""Several server processes on one PostgreSQL database and one Redis, as in a production deployment.

These tests always use PostgreSQL, also in the SQLite pass of the suite, because several hosts
cannot share a SQLite file. They need the PostgreSQL server of the suite and a Redis server at
``REFLEXBLUE_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/0), and fail when Redis is
unreachable. Each module run uses its own Redis key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from reflexblue.domain.errors import SeatLimitError
from reflexblue.storage import repository
from reflexblue.storage.database import Database
from reflexblue.storage.models import ThrottleCounter, User

from .support import (
    SERVER_START_TIMEOUT,
    STARTED_SERVERS,
    ApiUser,
    DatabaseFactory,
    Seeder,
    Server,
    free_port,
    server_env,
    start_server,
    token_header,
    unique_name,
)

REDIS_URL = os.environ.get("REFLEXBLUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Changes made anywhere must be enforced by every instance within this many seconds.
PROPAGATION_LIMIT = 1.0
WRONG_PASSWORD = "not-the-password"


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def postgres_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory("postgresql", tmp_path_factory.mktemp("multi-instance"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this module's own; every key under it is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis at {REDIS_URL} is unreachable ({error}): start Redis there, or set "
                    "REFLEXBLUE_TEST_REDIS_URL to a Redis server where the tests may create keys")
    prefix = f"reflexblue-e2e-{secrets.token_hex(6)}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass
class Cluster:
    """Two servers on one database and one Redis prefix, and the seeder of that database."""

    first: Server
    second: Server
    seed: Seeder
    env: dict[str, str]
    redis_prefix: str
    administration: str

    @property
    def servers(self) -> tuple[Server, Server]:
        return self.first, self.second

    def user(self, permissions: list[str] | None = None) -> ApiUser:
        """Create a user with a seat and, in the cluster's administration, a role with ``permissions``."""
        keys = ["administration.access", "v2.articles"] if permissions is None else permissions
        return self.seed.user({self.administration: keys})

    def cli(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run ``reflexblue ARGUMENTS`` in a separate process with the servers' database and Redis."""
        return run_cli(self.env, *arguments)


def cli_env(server_settings: dict[str, str]) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REFLEXBLUE_")}
    env.update(server_settings)
    return env


def run_cli(server_settings: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "reflexblue", *arguments],
        env=cli_env(server_settings), capture_output=True, text=True, timeout=60,
    )
    return completed


@pytest.fixture(scope="module")
def cluster(postgres_databases: DatabaseFactory, redis_prefix: str) -> Iterator[Cluster]:
    database_url = postgres_databases.create()
    seed = Seeder(database_url)
    seed.set_external_seats(1000)
    administration = seed.administration()
    env = server_env(database_url, {
        "REFLEXBLUE_REDIS_URL": REDIS_URL,
        "REFLEXBLUE_REDIS_PREFIX": redis_prefix,
        "REFLEXBLUE_REVOKE_ON_LOGOUT": "true",
    })
    first = start_server(env)
    second = start_server(env)
    yield Cluster(first, second, seed, env, redis_prefix, administration)
    first.stop()
    second.stop()
    seed.close()


# ---------------------------------------------------------------------------------------------
# Helpers


def login(server: Server, user: ApiUser, password: str | None = None) -> httpx.Response:
    with server.client() as client:
        return client.post("/api/security/login",
                           json={"username": user.username, "password": password or user.password})


def token_of(server: Server, user: ApiUser) -> str:
    response = login(server, user)
    assert response.status_code == 200, f"login on port {server.port} failed: {response.text}"
    return str(response.json()["token"])


def articles_status(server: Server, token: str, administration: str) -> int:
    with server.client(token) as client:
        return client.get(f"/api/v2/administrations/{administration}/articles").status_code


def seconds_until_all(servers: tuple[Server, ...], done: Callable[[Server], bool],
                      timeout: float = 3.0) -> dict[int, float]:
    """Return, per server port, the seconds until ``done(server)`` first held; servers that never got there are left out."""
    started = time.monotonic()
    elapsed: dict[int, float] = {}
    while len(elapsed) < len(servers) and time.monotonic() - started < timeout:
        for server in servers:
            if server.port not in elapsed and done(server):
                elapsed[server.port] = time.monotonic() - started
        time.sleep(0.02)
    return elapsed


def assert_enforced_by_all(servers: tuple[Server, ...], done: Callable[[Server], bool], what: str) -> None:
    elapsed = seconds_until_all(servers, done)
    for server in servers:
        assert server.port in elapsed, f"{what}: the server on port {server.port} never enforced it"
        assert elapsed[server.port] < PROPAGATION_LIMIT, (
            f"{what}: the server on port {server.port} took {elapsed[server.port]:.2f} s"
        )


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of the server's /metrics, keyed by (name, sorted labels)."""
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{server.base_url}/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def logins(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    return samples.get(("reflexblue_logins_total", (("outcome", outcome),)), 0.0)


# ---------------------------------------------------------------------------------------------
# Two instances


def test_token_from_one_works_on_other(cluster: Cluster) -> None:
    user = cluster.user()

    token = token_of(cluster.first, user)

    assert articles_status(cluster.second, token, cluster.administration) == 200


def test_role_change_enforced_by_both(cluster: Cluster) -> None:
    user = cluster.user()
    token = token_of(cluster.first, user)
    assert [articles_status(server, token, cluster.administration) for server in cluster.servers] == [200, 200]

    completed = cluster.cli("roles", "revoke", cluster.administration, user.role, "v2.articles")

    assert completed.returncode == 0, completed.stderr
    assert_enforced_by_all(cluster.servers, lambda server: articles_status(server, token, cluster.administration) == 403,
                           "revoking v2.articles")


def test_seat_unlink_enforced_by_both(cluster: Cluster) -> None:
    user = cluster.user()
    token = token_of(cluster.second, user)

    completed = cluster.cli("users", "unlink-seat", user.username)

    assert completed.returncode == 0, completed.stderr
    assert_enforced_by_all(cluster.servers, lambda server: articles_status(server, token, cluster.administration) == 403,
                           "unlinking the seat")


def test_deactivation_enforced_by_both(cluster: Cluster) -> None:
    user = cluster.user()
    token = token_of(cluster.first, user)

    completed = cluster.cli("users", "deactivate", user.username)

    assert completed.returncode == 0, completed.stderr
    assert_enforced_by_all(cluster.servers, lambda server: articles_status(server, token, cluster.administration) == 401,
                           "deactivating the user")


def test_throttle_counts_across_instances(cluster: Cluster) -> None:
    user = cluster.user()
    statuses = [login(cluster.servers[attempt % 2], user, WRONG_PASSWORD).status_code for attempt in range(5)]

    sixth = login(cluster.second, user, WRONG_PASSWORD)

    assert statuses == [401] * 5
    assert sixth.status_code == 429
    assert 1 <= int(sixth.headers["Retry-After"]) <= 900


def test_throttle_counters_live_in_redis(cluster: Cluster) -> None:
    user = cluster.user()
    login(cluster.first, user, WRONG_PASSWORD)

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{cluster.redis_prefix}throttle:user:*"))
    client.close()
    with cluster.seed.database.read() as session:
        database_counters = session.scalar(select(func.count()).select_from(ThrottleCounter))

    assert keys
    assert database_counters == 0


def test_key_rotation_reaches_both(cluster: Cluster) -> None:
    user = cluster.user()
    old_token = token_of(cluster.first, user)
    old_kid = token_header(old_token)["kid"]

    completed = cluster.cli("keys", "rotate")
    assert completed.returncode == 0, completed.stderr
    new_kid, _private_key = cluster.seed.active_signing_key()

    def published(server: Server) -> bool:
        with server.client() as client:
            kids = {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}
        return {old_kid, new_kid} <= kids

    assert new_kid != old_kid
    assert_enforced_by_all(cluster.servers, published, "publishing the rotated key")
    assert_enforced_by_all(cluster.servers, lambda server: token_header(token_of(server, user))["kid"] == new_kid,
                           "signing with the rotated key")
    assert [articles_status(server, old_token, cluster.administration) for server in cluster.servers] == [200, 200]


def test_logout_revocation_holds_on_other(cluster: Cluster) -> None:
    user = cluster.user()
    token = token_of(cluster.first, user)
    assert articles_status(cluster.second, token, cluster.administration) == 200

    with cluster.first.client(token) as client:
        assert client.post("/api/security/logout").status_code == 204

    assert_enforced_by_all(cluster.servers, lambda server: articles_status(server, token, cluster.administration) == 401,
                           "revoking the token on logout")


def test_metrics_count_logins_per_instance(cluster: Cluster) -> None:
    user = cluster.user()
    before = [scrape(server) for server in cluster.servers]

    token_of(cluster.first, user)
    token_of(cluster.first, user)
    login(cluster.second, user, WRONG_PASSWORD)
    after = [scrape(server) for server in cluster.servers]

    assert logins(after[0], "succeeded") - logins(before[0], "succeeded") == 2
    assert logins(after[0], "invalid_credentials") - logins(before[0], "invalid_credentials") == 0
    assert logins(after[1], "succeeded") - logins(before[1], "succeeded") == 0
    assert logins(after[1], "invalid_credentials") - logins(before[1], "invalid_credentials") == 1


def test_metrics_report_seats_from_database(cluster: Cluster) -> None:
    with cluster.seed.database.read() as session:
        used = repository.seats_used(session)
    time.sleep(1.0)  # past the one-second seat cache of earlier scrapes

    samples = scrape(cluster.second)

    assert samples[("reflexblue_external_seats", (("state", "used"),))] == used
    assert samples[("reflexblue_external_seats", (("state", "available"),))] == 1000 - used


# ---------------------------------------------------------------------------------------------
# Seat accounting under concurrent links


def test_concurrent_links_fill_plan_exactly(postgres_databases: DatabaseFactory) -> None:
    """50 transactions on 50 connections link 50 users at once against a plan of 10."""
    database_url = postgres_databases.create()
    seed = Seeder(database_url)
    seed.set_external_seats(10)
    usernames = [seed.user(external_seat=False).username for _ in range(50)]
    seed.close()
    database = Database(database_url, pool_size=25)  # 25 + 25 overflow: one connection per thread
    barrier = threading.Barrier(len(usernames))
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def link(username: str) -> None:
        barrier.wait()
        outcome: BaseException | None = None
        try:
            with database.write() as session:
                repository.link_seat(session, repository.get_user(session, username), actor="e2e-concurrency")
        except BaseException as error:  # noqa: BLE001 - collected and checked below
            outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=link, args=(username,)) for username in usernames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with database.read() as session:
        linked = session.scalar(select(func.count()).select_from(User).where(User.external_seat.is_(True)))
    database.dispose()

    assert len(outcomes) == 50
    assert outcomes.count(None) == 10
    assert sorted({type(outcome).__name__ for outcome in outcomes if outcome is not None}) == ["SeatLimitError"]
    assert sum(isinstance(outcome, SeatLimitError) for outcome in outcomes) == 40
    assert linked == 10


def test_concurrent_cli_links_report_full_plan(postgres_databases: DatabaseFactory) -> None:
    """Parallel ``reflexblue users link-seat`` processes: two get the last seats, the others a clear error."""
    database_url = postgres_databases.create()
    seed = Seeder(database_url)
    seed.set_external_seats(2)
    usernames = [seed.user(external_seat=False).username for _ in range(6)]
    seed.close()
    env = cli_env({"REFLEXBLUE_DATABASE_URL": database_url})

    processes = [
        subprocess.Popen([sys.executable, "-m", "reflexblue", "users", "link-seat", username], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for username in usernames
    ]
    results = [(process.wait(timeout=60), process.stdout.read(), process.stderr.read())  # type: ignore[union-attr]
               for process in processes]

    assert sorted(code for code, _out, _err in results) == [0, 0, 1, 1, 1, 1]
    for code, _out, err in results:
        if code == 1:
            assert err.startswith("error: all 2 External seats of the plan are in use"), err


# ---------------------------------------------------------------------------------------------
# One instance with several workers: `reflexblue serve --workers 2`


@dataclass
class WorkerServer:
    server: Server
    #: The TMPDIR of the serve process, where it creates its PROMETHEUS_MULTIPROC_DIR.
    temp_dir: Path

    def metrics_directory(self) -> Path:
        (directory,) = glob.glob(str(self.temp_dir / "reflexblue-metrics-*"))
        return Path(directory)

    def logins_by_worker(self, outcome: str) -> dict[str, float]:
        """Read each worker's own count of logins with ``outcome`` from its prometheus-client file."""
        counts = {}
        for path in self.metrics_directory().glob("counter_*.db"):
            with tempfile.TemporaryDirectory() as alone:
                shutil.copy(path, alone)
                registry = CollectorRegistry()
                MultiProcessCollector(registry, path=alone)
                counts[path.stem] = registry.get_sample_value("reflexblue_logins_total", {"outcome": outcome}) or 0.0
        return counts


def start_serve(env: dict[str, str], workers: int, temp_dir: Path) -> Server:
    """Start ``python -m reflexblue serve --workers N`` and wait until GET /readyz returns 200."""
    port = free_port()
    process_env = cli_env(env)
    process_env["TMPDIR"] = str(temp_dir)
    work_dir = Path(tempfile.mkdtemp(prefix="rb-e2e-serve-"))
    with open(work_dir / "server.log", "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "reflexblue", "serve", "--port", str(port), "--workers", str(workers)],
            env=process_env, cwd=work_dir, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = Server(process, port, dict(env), work_dir)
    STARTED_SERVERS.append(server)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with code {process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"serve not ready within {SERVER_START_TIMEOUT} s:\n{server.log_text()[-4000:]}")


@pytest.fixture(scope="module")
def workers(postgres_databases: DatabaseFactory, redis_prefix: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerServer, Seeder]]:
    database_url = postgres_databases.create()
    seed = Seeder(database_url)
    seed.set_external_seats(100)
    env = server_env(database_url, {"REFLEXBLUE_REDIS_URL": REDIS_URL,
                                    "REFLEXBLUE_REDIS_PREFIX": redis_prefix + "workers:"})
    temp_dir = tmp_path_factory.mktemp("serve-tmp")
    server = start_serve(env, 2, temp_dir)
    yield WorkerServer(server, temp_dir), seed
    server.stop()
    seed.close()


def fresh_login(server: Server, user: ApiUser, password: str) -> int:
    """Log in on a new connection, so the kernel may hand it to either worker."""
    with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
        return client.post(f"{server.base_url}/api/security/login",
                           json={"username": user.username, "password": password}).status_code


def test_serve_workers_metrics_sum(workers: tuple[WorkerServer, Seeder]) -> None:
    worker_server, seed = workers
    user = seed.user()
    made = 0
    # Log in until both workers have served at least one login; each uses a new connection.
    while made < 80:
        assert fresh_login(worker_server.server, user, user.password) == 200
        made += 1
        served = [count for count in worker_server.logins_by_worker("succeeded").values() if count > 0]
        if made >= 6 and len(served) >= 2:
            break
    by_worker = worker_server.logins_by_worker("succeeded")

    scraped = [logins(scrape(worker_server.server), "succeeded") for _ in range(4)]

    assert len([count for count in by_worker.values() if count > 0]) >= 2, f"one worker served all: {by_worker}"
    assert sum(by_worker.values()) == made
    assert scraped == [made] * 4


def test_serve_workers_share_throttle(workers: tuple[WorkerServer, Seeder]) -> None:
    worker_server, seed = workers
    spread_over_workers = False
    for _ in range(5):
        user = seed.user()
        before = worker_server.logins_by_worker("invalid_credentials")
        statuses = [fresh_login(worker_server.server, user, WRONG_PASSWORD) for _ in range(6)]
        after = worker_server.logins_by_worker("invalid_credentials")

        assert statuses == [401] * 5 + [429]
        served = [name for name, count in after.items() if count > before.get(name, 0.0)]
        if len(served) >= 2:
            spread_over_workers = True
            break

    assert spread_over_workers, "every user's failed logins went to one worker, so sharing was not shown"


# ---------------------------------------------------------------------------------------------
# A Redis outage


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """Start a Redis server of this test's own on 127.0.0.1:``port``, without persistence."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def redis_events(server: Server) -> list[str]:
    return [line.split('"event": "')[1].split('"')[0] for line in server.log_text().splitlines()
            if '"event": "redis.' in line]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server program to stop and restart")
def test_redis_outage_keeps_logins_working(postgres_databases: DatabaseFactory) -> None:
    redis_port = free_port()
    redis_server = start_redis(redis_port)
    database_url = postgres_databases.create()
    seed = Seeder(database_url)
    seed.set_external_seats(10)
    user = seed.user()
    server = start_server(server_env(database_url, {"REFLEXBLUE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}))
    try:
        assert login(server, user).status_code == 200
        redis_server.terminate()
        redis_server.wait(timeout=10)

        during_outage = [login(server, user, WRONG_PASSWORD).status_code for _ in range(5)]
        sixth = login(server, user, WRONG_PASSWORD).status_code
        redis_server = start_redis(redis_port)
        time.sleep(6.0)  # the server tries Redis again 5 s after a failure
        after_outage = login(server, user, WRONG_PASSWORD).status_code
        keys = list(redis.Redis(port=redis_port).scan_iter(match="reflexblue:throttle:*"))

        # The database store took over the counting, so the limit still held during the outage.
        assert during_outage == [401] * 5
        assert sixth == 429
        # Counting is back in Redis, which lost its counts in the restart, so it starts again from one.
        assert after_outage == 401
        assert keys
        assert redis_events(server) == ["redis.unavailable", "redis.recovered"]
    finally:
        server.stop()
        seed.close()
        redis_server.terminate()
        redis_server.wait(timeout=10)
