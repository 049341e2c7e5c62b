"""Graceful shutdown of ``reflexblue serve``: requests in flight at SIGTERM finish, then the process exits with 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from reflexblue.cli.server import GRACEFUL_SHUTDOWN_SECONDS
from reflexblue.security.passwords import Passwords
from reflexblue.settings import Settings

from .support import ApiUser, Seeder, serve_command, server_env, start_server

LOGINS = 20
LISTS = 10
#: Seconds between releasing the requests and SIGTERM: long enough for the server to read every
#: request, and shorter than the batch takes (0.8 to 1.0 s in three runs on a 2-core machine).
SIGNAL_DELAY = 0.3
CLIENT_TIMEOUT = 30.0
ARTICLES = "/api/v2/administrations/acme/articles"


@dataclass
class Reply:
    """The end of one request: its status and parsed body, or the transport error, and when it ended."""

    kind: str
    finished: float
    status: int | None = None
    body: object = None
    error: str | None = None


def send_when_released(base_url: str, kind: str, request: httpx.Request, barrier: threading.Barrier,
                       replies: list[Reply], lock: threading.Lock) -> None:
    """Open a connection, wait at ``barrier``, then send ``request`` on that connection and record the reply.

    The connection is opened first (with GET /healthz), so at SIGTERM the server has already
    accepted it and the test measures requests in flight, not connections still in the listen queue.
    """
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        assert client.get("/healthz").status_code == 200
        barrier.wait()
        try:
            response = client.send(request)
            reply = Reply(kind, time.monotonic(), response.status_code, response.json())
        except (httpx.HTTPError, json.JSONDecodeError) as error:
            reply = Reply(kind, time.monotonic(), error=repr(error))
    with lock:
        replies.append(reply)


def seed_users(database_url: str) -> tuple[list[ApiUser], ApiUser]:
    """Seed the login users, hashed with the default argon2 parameters so each login costs a real hash."""
    seed = Seeder(database_url)
    try:
        seed.set_external_seats(LOGINS + 1)
        seed.administration("acme", "Acme Wholesale")
        seed.passwords = Passwords(Settings(database_url=database_url))
        login_users = [seed.user({"acme": ["administration.access"]}) for _ in range(LOGINS)]
        reader = seed.user({"acme": ["administration.access", "v2.articles"]})
    finally:
        seed.close()
    return login_users, reader


def test_sigterm_finishes_requests_in_flight(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'shutdown.db'}"
    login_users, reader = seed_users(database_url)
    server = start_server(server_env(database_url, fast_argon2=False), command=serve_command)
    with server.client() as client:
        token = client.post("/api/security/login",
                            json={"username": reader.username, "password": reader.password}).json()["token"]

    requests = [("login", httpx.Request("POST", f"{server.base_url}/api/security/login",
                                        json={"username": user.username, "password": user.password}))
                for user in login_users]
    requests += [("list", httpx.Request("GET", f"{server.base_url}{ARTICLES}",
                                        headers={"Authorization": f"Bearer {token}"}))
                 for _ in range(LISTS)]
    barrier = threading.Barrier(len(requests) + 1)
    replies: list[Reply] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=send_when_released,
                                args=(server.base_url, kind, request, barrier, replies, lock))
               for kind, request in requests]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=30)
        time.sleep(SIGNAL_DELAY)
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_status = server.process.wait(timeout=GRACEFUL_SHUTDOWN_SECONDS + 10)
        stopped_after = time.monotonic() - signalled_at
    finally:
        server.stop()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT + 5)

    failed = [reply for reply in replies if reply.error is not None]
    assert not failed, f"requests without a complete response: {failed[:5]}"
    assert len(replies) == len(requests)
    statuses = sorted({reply.status for reply in replies})
    assert statuses == [200], f"statuses of the requests in flight: {statuses}"
    assert all(isinstance(reply.body, dict) and reply.body.get("token") for reply in replies
               if reply.kind == "login")
    assert all(isinstance(reply.body, dict) and "items" in reply.body for reply in replies if reply.kind == "list")
    finished_after_signal = [reply for reply in replies if reply.finished > signalled_at]
    assert finished_after_signal, "every request finished before SIGTERM, so none was in flight"
    assert exit_status == 0
    assert stopped_after < GRACEFUL_SHUTDOWN_SECONDS
    log = server.log_text()
    assert "Shutting down" in log  # uvicorn's line when it starts the graceful shutdown
    assert '"event": "server.stopped"' in log
    assert "Traceback" not in log
