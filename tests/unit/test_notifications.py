"""Access-change notifications through a real Redis, and the Redis outage tracking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from reflexblue.api.runtime import Runtime
from reflexblue.bootstrap import prepare
from reflexblue.notifications import (
    AccessListener,
    access_channel,
    install_publisher,
    process_origin,
    uninstall_publisher,
)
from reflexblue.redis_client import RedisHealth, connect, describe_redis_url
from reflexblue.settings import Settings
from reflexblue.storage import repository
from reflexblue.storage.database import Database

from .conftest import CHEAP_ARGON2, REDIS_URL

REFUSED_REDIS_URL = "redis://127.0.0.1:1/0"
ACTOR = "notification-test"


class EventRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, _level: int, **fields: Any) -> None:
        self.events.append((name, fields))

    @property
    def names(self) -> list[str]:
        return [name for name, _fields in self.events]


@pytest.fixture
def subscriber(redis_prefix: str) -> Iterator[redis.client.PubSub]:
    """A raw subscription to the access channel of ``redis_prefix``, confirmed before the test starts."""
    client = connect(REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(access_channel(redis_prefix))
    deadline = time.monotonic() + 5
    while pubsub.get_message(timeout=0.2) is None and time.monotonic() < deadline:
        if client.pubsub_numsub(access_channel(redis_prefix))[0][1] == 1:
            break
    yield pubsub
    pubsub.close()
    client.close()


@pytest.fixture
def publisher(redis_prefix: str) -> Iterator[None]:
    install_publisher(REDIS_URL, redis_prefix)
    yield
    uninstall_publisher()


def next_message(pubsub: redis.client.PubSub, timeout: float = 2.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            return message
    return None


# ------------------------------------------------------------------------------------------------
# Publishing after commit


@pytest.mark.usefixtures("publisher")
def test_commit_with_access_change_publishes(sqlite_database: Database, subscriber: redis.client.PubSub) -> None:
    with sqlite_database.write() as session:
        repository.set_external_seats(session, 3, actor=ACTOR)

    message = next_message(subscriber)

    assert message is not None
    assert json.loads(message["data"]) == {"origin": process_origin()}


@pytest.mark.usefixtures("publisher")
def test_commit_without_access_change_silent(sqlite_database: Database, subscriber: redis.client.PubSub) -> None:
    with sqlite_database.write() as session:
        repository.get_environment(session)

    assert next_message(subscriber, timeout=0.5) is None


@pytest.mark.usefixtures("publisher")
def test_rolled_back_change_silent(sqlite_database: Database, subscriber: redis.client.PubSub) -> None:
    with pytest.raises(RuntimeError), sqlite_database.write() as session:
        repository.set_external_seats(session, 3, actor=ACTOR)
        raise RuntimeError("abort the transaction")
    with sqlite_database.write() as session:
        repository.get_environment(session)

    assert next_message(subscriber, timeout=0.5) is None


def test_no_publisher_without_url(sqlite_database: Database, subscriber: redis.client.PubSub,
                                  redis_prefix: str) -> None:
    install_publisher("", redis_prefix)
    with sqlite_database.write() as session:
        repository.set_external_seats(session, 3, actor=ACTOR)

    assert next_message(subscriber, timeout=0.5) is None


def test_publish_failure_keeps_commit(sqlite_database: Database) -> None:
    recorder = EventRecorder()
    install_publisher(REFUSED_REDIS_URL, "x:", RedisHealth(REFUSED_REDIS_URL, recorder))
    try:
        with sqlite_database.write() as session:
            repository.set_external_seats(session, 3, actor=ACTOR)
        with sqlite_database.write() as session:
            repository.set_external_seats(session, 4, actor=ACTOR)
    finally:
        uninstall_publisher()

    with sqlite_database.read() as session:
        assert repository.get_environment(session).external_seats == 4
    assert recorder.names == ["redis.unavailable"]


# ------------------------------------------------------------------------------------------------
# The listener


class CallCounter:
    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.changed.set()


def test_listener_calls_back_on_message(redis_prefix: str) -> None:
    calls = CallCounter()
    listener = AccessListener(REDIS_URL, redis_prefix, calls, RedisHealth(REDIS_URL))
    listener.start()
    try:
        assert listener.wait_subscribed(5)
        subscribed_calls = calls.count
        calls.changed.clear()
        connect(REDIS_URL).publish(access_channel(redis_prefix), json.dumps({"origin": "another-process"}))

        assert calls.changed.wait(2)
        assert calls.count == subscribed_calls + 1
    finally:
        listener.stop()


def test_listener_skips_own_messages(redis_prefix: str) -> None:
    calls = CallCounter()
    listener = AccessListener(REDIS_URL, redis_prefix, calls, RedisHealth(REDIS_URL))
    listener.start()
    try:
        assert listener.wait_subscribed(5)
        subscribed_calls = calls.count
        publisher = connect(REDIS_URL)
        publisher.publish(access_channel(redis_prefix), json.dumps({"origin": process_origin()}))
        time.sleep(0.3)
        own_calls = calls.count
        calls.changed.clear()
        publisher.publish(access_channel(redis_prefix), json.dumps({"origin": "another-process"}))
        assert calls.changed.wait(2)

        assert own_calls == subscribed_calls
        assert calls.count == subscribed_calls + 1
    finally:
        listener.stop()


def test_listener_survives_redis_down() -> None:
    recorder = EventRecorder()
    calls = CallCounter()
    listener = AccessListener(REFUSED_REDIS_URL, "x:", calls, RedisHealth(REFUSED_REDIS_URL, recorder))
    listener.start()
    try:
        assert not listener.wait_subscribed(0.5)
    finally:
        started = time.monotonic()
        listener.stop()

    assert time.monotonic() - started < 2.5
    assert recorder.names == ["redis.unavailable"]
    assert calls.count == 0


def test_listener_refreshes_runtime_without_requests(sqlite_url: str, redis_prefix: str) -> None:
    """A change announced by another writer reaches the caches at once, although no request polls."""
    settings = Settings(database_url=sqlite_url, redis_url=REDIS_URL, redis_prefix=redis_prefix,
                        access_refresh_interval=1.0, **CHEAP_ARGON2)  # type: ignore[arg-type]
    database = prepare(settings, signing_key=True)
    runtime = Runtime.start(settings, database, RedisHealth(REDIS_URL))
    writer = Database(sqlite_url)
    try:
        assert runtime.access_listener is not None
        assert runtime.access_listener.wait_subscribed(5)
        epoch_before = runtime.access.epoch
        # The writer publishes under another origin, as a separate process would.
        with writer.write() as session:
            repository.set_external_seats(session, 7, actor=ACTOR)
        with writer.read() as session:
            epoch_after = repository.read_access_epoch(session)
        connect(REDIS_URL).publish(access_channel(redis_prefix), json.dumps({"origin": "another-process"}))

        deadline = time.monotonic() + 0.5
        while runtime.access.epoch != epoch_after and time.monotonic() < deadline:
            time.sleep(0.01)

        assert epoch_after != epoch_before
        assert runtime.access.epoch == epoch_after
    finally:
        runtime.access_listener.stop()
        if runtime.audit_worker is not None:
            runtime.audit_worker.close()
        writer.dispose()
        database.dispose()


# ------------------------------------------------------------------------------------------------
# Outage tracking


def test_health_reports_outage_and_recovery() -> None:
    recorder = EventRecorder()
    health = RedisHealth("redis://user:secret@127.0.0.1:6379/0", recorder)

    health.failed("publish", ConnectionError("refused"))
    health.failed("publish", ConnectionError("refused"))
    health.succeeded()
    health.succeeded()

    assert recorder.names == ["redis.unavailable", "redis.recovered"]
    assert recorder.events[0][1]["redis"] == "redis://user:***@127.0.0.1:6379/0"


def test_health_pauses_after_failure() -> None:
    health = RedisHealth(REDIS_URL, EventRecorder())

    health.failed("publish", ConnectionError("refused"))

    assert not health.available
    assert health.down


def test_health_rate_limits_outage_events() -> None:
    recorder = EventRecorder()
    health = RedisHealth(REDIS_URL, recorder)

    for _ in range(3):
        health.failed("publish", ConnectionError("refused"))
        health.succeeded()

    assert recorder.names == ["redis.unavailable", "redis.recovered"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:secret@[::1]:6380/1", "rediss://app:***@[::1]:6380/1"),
    ],
)
def test_describe_redis_url_hides_password(url: str, shown: str) -> None:
    assert describe_redis_url(url) == shown
