"""Check that failed logins take the same time whether or not the username exists.

Starts one server on a fresh SQLite database with the default argon2id parameters, seeds an
active user, an inactive user and a user without an External seat, then sends interleaved
logins with wrong passwords for: an existing active user, an unknown username, the inactive
user and the seatless user. Throttling is raised out of the way, since it is not what is measured
here. Prints the median and spread of each group, each median's difference to the existing-user
median, and a two-sided Mann-Whitney U p-value for each group against the existing user.

Usage: .venv/bin/python bench/login_timing.py [--rounds 200]   (needs the bench extra: pip install -e '.[bench]')
Target: every median within 5 % of the existing user's, and no p-value below 0.01.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from scipy.stats import mannwhitneyu

GROUPS = ("existing", "unknown", "inactive", "no-seat")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(database_url: str) -> None:
    from reflexblue.bootstrap import prepare
    from reflexblue.security.passwords import Passwords
    from reflexblue.settings import Settings
    from reflexblue.storage import repository

    settings = Settings(database_url=database_url)
    database = prepare(settings, signing_key=True)
    hasher = Passwords(settings)
    with database.write() as session:
        repository.set_external_seats(session, 5, actor="bench")
        repository.create_user(session, "existing", hasher.hash("timing-password-1"), actor="bench", external_seat=True)
        repository.create_user(session, "inactive", hasher.hash("timing-password-2"), actor="bench",
                               external_seat=True, active=False)
        repository.create_user(session, "no-seat", hasher.hash("timing-password-3"), actor="bench")
    database.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="logins per group")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        database_url = f"sqlite:///{Path(directory) / 'timing.db'}"
        seed(database_url)
        port = free_port()
        env = {
            **os.environ,
            "REFLEXBLUE_DATABASE_URL": database_url,
            "REFLEXBLUE_LOG_LEVEL": "WARNING",
            "REFLEXBLUE_THROTTLE_USER_FAILURES": "1000000",
            "REFLEXBLUE_THROTTLE_ADDRESS_FAILURES": "1000000",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "reflexblue.api.app:create_app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            env=env,
        )
        samples: dict[str, list[float]] = {group: [] for group in GROUPS}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for _ in range(100):
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
                for _ in range(10):  # warm-up: connection, caches, first hash
                    client.post("/api/security/login", json={"username": "existing", "password": "wrong-password!"})
                for round_number in range(options.rounds):
                    order = GROUPS[round_number % len(GROUPS):] + GROUPS[: round_number % len(GROUPS)]
                    for group in order:
                        username = "nobody-here" if group == "unknown" else group
                        started = time.perf_counter()
                        response = client.post("/api/security/login",
                                               json={"username": username, "password": "wrong-password!"})
                        samples[group].append(time.perf_counter() - started)
                        if response.status_code != 401:
                            raise RuntimeError(f"{group}: expected 401, got {response.status_code}")
        finally:
            server.terminate()
            server.wait(timeout=10)

    baseline = statistics.median(samples["existing"])
    print(f"{'group':10} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'vs existing':>12} {'p-value':>9}")
    worst_difference = 0.0
    lowest_p = 1.0
    for group in GROUPS:
        values = sorted(samples[group])
        median = statistics.median(values)
        difference = (median - baseline) / baseline
        p_value = 1.0 if group == "existing" else mannwhitneyu(samples["existing"], samples[group]).pvalue
        if group != "existing":
            worst_difference = max(worst_difference, abs(difference))
            lowest_p = min(lowest_p, p_value)
        print(f"{group:10} {median * 1000:10.2f} {values[len(values) // 10] * 1000:8.2f} "
              f"{values[len(values) * 9 // 10] * 1000:8.2f} {difference:+11.1%} {p_value:9.3f}")
    verdict = "PASS" if worst_difference < 0.05 and lowest_p >= 0.01 else "FAIL"
    print(f"\nlargest median difference {worst_difference:.1%}, lowest p-value {lowest_p:.3f}: {verdict} "
          "(target: under 5 % and p >= 0.01)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
