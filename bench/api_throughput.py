"""Measure requests per second of the main endpoints against a bare baseline, in one run.

Starts one server process (one uvicorn worker) on a fresh SQLite database (or the empty database
given with --database-url), seeds a user, and drives it over keep-alive HTTP/1.1 connections
from a small asyncio client. Prints requests per second and latency percentiles per endpoint,
and each endpoint's ratio to GET /healthz measured in the same run (the framework's floor on
this machine).

Usage: .venv/bin/python bench/api_throughput.py [--seconds 5] [--connections 16] [--database-url URL]
Client and server share the machine, so absolute figures are lower than with a separate load
generator; the ratios are what to compare between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(database_url: str) -> None:
    from reflexblue.bootstrap import prepare
    from reflexblue.security.passwords import Passwords
    from reflexblue.settings import Settings
    from reflexblue.storage import records, repository

    settings = Settings(database_url=database_url)
    database = prepare(settings)
    hasher = Passwords(settings)
    with database.write() as session:
        repository.set_external_seats(session, 5, actor="bench")
        administration = repository.upsert_administration(session, "acme", "Acme", actor="bench")
        role = repository.create_role(session, "acme", "Bench", actor="bench")
        repository.set_role_permissions(session, role, ["administration.access", "v2.articles"], actor="bench")
        user = repository.create_user(session, "bench", hasher.hash("bench-password-1"), actor="bench",
                                      external_seat=True)
        repository.assign(session, user, role, actor="bench")
        for number in range(100):
            records.create_record(session, administration.id, "articles", f"A{number:04d}",
                                  {"description": f"Article {number}"})
    database.dispose()


async def drive(port: int, request: bytes, seconds: float, connections: int) -> list[float]:
    """Send ``request`` repeatedly on ``connections`` keep-alive connections; return latencies."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 4")):
                raise RuntimeError(f"unexpected response: {head[:40]!r}")
            latencies.append(time.perf_counter() - started)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies


def build_request(method: str, path: str, token: str | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--database-url", metavar="URL",
                        help="an empty database to use, e.g. a new PostgreSQL database; default: a temporary "
                             "SQLite file. Other REFLEXBLUE_* variables, such as REFLEXBLUE_REDIS_URL, are passed "
                             "to the server as they are")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        database_url = options.database_url or f"sqlite:///{Path(directory) / 'bench.db'}"
        seed(database_url)
        port = free_port()
        env = {**os.environ, "REFLEXBLUE_DATABASE_URL": database_url, "REFLEXBLUE_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "reflexblue.api.app:create_app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            env=env,
        )
        try:
            import httpx

            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            token = httpx.post(f"{base}/api/security/login",
                               json={"username": "bench", "password": "bench-password-1"}).json()["token"]
            cases = [
                ("GET /healthz (baseline)", build_request("GET", "/healthz")),
                ("GET /api/v2/administrations", build_request("GET", "/api/v2/administrations", token)),
                ("GET articles?limit=20", build_request("GET", "/api/v2/administrations/acme/articles?limit=20",
                                                        token)),
                ("GET orders (403 denied)", build_request("GET", "/api/v2/administrations/acme/orders", token)),
                ("GET without token (401)", build_request("GET", "/api/v2/administrations")),
                ("POST login (argon2id)", build_request(
                    "POST", "/api/security/login", body=json.dumps(
                        {"username": "bench", "password": "bench-password-1"}).encode())),
            ]
            print(f"{'endpoint':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12}")
            baseline = None
            for name, request in cases:
                connections = 2 if "login" in name else options.connections
                latencies = asyncio.run(drive(port, request, options.seconds, connections))
                rate = len(latencies) / options.seconds
                baseline = baseline or rate
                ordered = sorted(latencies)
                p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
                print(f"{name:34} {rate:9.0f} {statistics.median(ordered) * 1000:8.2f} {p99 * 1000:8.2f} "
                      f"{rate / baseline:11.2f}x")
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
