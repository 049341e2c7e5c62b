"""Access-change notifications over Redis pub/sub, so every process refreshes at once.

The database's ``environment.access_epoch`` stays the source of truth: every write that can
change an access decision bumps it, and each server process polls it. Notifications only make
the refresh immediate. A process that writes with Redis configured publishes on the channel
``<prefix>access`` after each commit that bumped the epoch. Every server process subscribes
and forces a refresh when a message arrives. Writers without Redis (or during a Redis outage)
publish nothing, and the poll still applies their changes within
``REFLEXBLUE_ACCESS_REFRESH_INTERVAL`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import Session

from reflexblue.redis_client import REDIS_ERRORS, RETRY_PAUSE_SECONDS, RedisHealth, connect
from reflexblue.storage.repository import ACCESS_CHANGED

log = logging.getLogger(__name__)

_ORIGIN_TOKEN = secrets.token_hex(4)
#: Seconds the listener waits for a message before it checks whether it should stop.
_POLL_SECONDS = 0.5


def process_origin() -> str:
    """Return the id of this process in the messages it publishes, so its own listener can skip them.

    The process id is read on each call, so a forked child gets an id of its own.
    """
    return f"{os.getpid()}-{_ORIGIN_TOKEN}"


def access_channel(prefix: str) -> str:
    """Return the pub/sub channel of access changes for the Redis ``prefix``."""
    return f"{prefix}access"


class AccessPublisher:
    """Publishes one message on the access channel after each commit that bumped the access epoch."""

    def __init__(self, url: str, prefix: str, health: RedisHealth) -> None:
        self._client = connect(url)
        self._channel = access_channel(prefix)
        self.health = health

    def publish(self) -> None:
        """Notify the subscribed processes; a Redis failure is recorded in :attr:`health` instead of raised."""
        if not self.health.available:
            return
        try:
            self._client.publish(self._channel, json.dumps({"origin": process_origin()}))
        except REDIS_ERRORS as error:
            self.health.failed("publish access change", error)
        else:
            self.health.succeeded()

    def close(self) -> None:
        self._client.close()


# The one publisher of this process. Sessions of every Database in the process report to it, so
# CLI commands, provisioning and the server's own writes are all covered without extra calls.
_publisher: AccessPublisher | None = None


def _after_commit(session: Session) -> None:
    if session.info.pop(ACCESS_CHANGED, False) and _publisher is not None:
        try:
            _publisher.publish()
        except Exception:  # noqa: BLE001 - the transaction has committed; raising now would report it as failed
            log.exception("publishing an access change failed")


def _after_rollback(session: Session) -> None:
    session.info.pop(ACCESS_CHANGED, None)


def install_publisher(url: str, prefix: str, health: RedisHealth | None = None) -> AccessPublisher | None:
    """Publish access changes of this process to Redis at ``url``; an empty ``url`` stops publishing.

    Replaces any earlier publisher of the process. ``health`` records Redis outages; by default a
    new one that logs them.
    """
    global _publisher
    previous, _publisher = _publisher, None
    if previous is not None:
        previous.close()
    if not url:
        return None
    if not sqlalchemy_event.contains(Session, "after_commit", _after_commit):
        sqlalchemy_event.listen(Session, "after_commit", _after_commit)
        sqlalchemy_event.listen(Session, "after_rollback", _after_rollback)
    _publisher = AccessPublisher(url, prefix, health or RedisHealth(url))
    return _publisher


def uninstall_publisher() -> None:
    """Stop publishing access changes from this process."""
    install_publisher("", "")


class AccessListener:
    """A daemon thread that calls ``on_change`` for every access change another process announces.

    It also calls ``on_change`` after each (re)subscription, because messages sent while it was
    not subscribed are lost. Errors of ``on_change`` are logged and the thread goes on.
    """

    def __init__(self, url: str, prefix: str, on_change: Callable[[], None], health: RedisHealth) -> None:
        self._client = connect(url)
        self._channel = access_channel(prefix)
        self._on_change = on_change
        self._health = health
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reflexblue-access-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the listener is subscribed; returns False when ``timeout`` seconds passed first."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except REDIS_ERRORS as error:
                self._subscribed.clear()
                self._health.failed("subscribe to access changes", error)
                self._stop.wait(RETRY_PAUSE_SECONDS)

    def _listen(self) -> None:
        with self._client.pubsub() as pubsub:
            pubsub.subscribe(self._channel)
            # Wait for Redis to confirm, so no change published from now on can be missed.
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=_POLL_SECONDS)
                if message is not None and message["type"] == "subscribe":
                    break
            self._health.succeeded()
            self._subscribed.set()
            self._refresh()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=_POLL_SECONDS)
                if message is None or message["type"] != "message" or not self._from_other_process(message):
                    continue
                # Several changes in a row need only one refresh: take every message already waiting.
                while pubsub.get_message(timeout=0) is not None:
                    pass
                self._refresh()

    @staticmethod
    def _from_other_process(message: dict[str, Any]) -> bool:
        try:
            origin = json.loads(message["data"]).get("origin")
        except (ValueError, TypeError, AttributeError):
            return True
        return origin != process_origin()

    def _refresh(self) -> None:
        try:
            self._on_change()
        except Exception:  # noqa: BLE001 - the poll retries; the listener must keep running
            log.exception("refresh after an access change notification failed")
