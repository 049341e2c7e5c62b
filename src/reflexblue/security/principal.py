"""The request principal: token -> user -> live access snapshot, kept in memory.

Each process keeps the access snapshots it has loaded and the set of revoked token ids. It polls
the environment's ``access_epoch`` at most every ``access_refresh_interval`` seconds. When the
epoch moved, because a process changed a user, seat, role, permission, key or revocation, it
drops its snapshots and verified tokens and reloads keys and revocations. Changes made anywhere therefore
apply within one second, while the hot path of an authenticated request stays in memory.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from reflexblue.security.keys import KeySet
from reflexblue.security.tokens import Claims, InvalidToken, Rejection, Tokens
from reflexblue.storage.database import Database
from reflexblue.storage.models import RevokedToken, utcnow
from reflexblue.storage.repository import AccessSnapshot, bump_access_epoch, load_access_snapshot, read_access_epoch

log = logging.getLogger(__name__)
_SNAPSHOT_CACHE_SIZE = 50_000
# Revocations are kept past exp by the largest allowed leeway, since a token is accepted until exp + leeway.
_MAX_LEEWAY = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the checked token claims and the user's current access."""

    claims: Claims
    snapshot: AccessSnapshot


class AccessState:
    """Per-process caches of access snapshots, revoked token ids and keys, refreshed by epoch."""

    def __init__(self, database: Database, keys: KeySet, tokens: Tokens, interval: float) -> None:
        self._database = database
        self._keys = keys
        self._tokens = tokens
        self._interval = interval
        self._epoch: int | None = None
        self._checked_at = 0.0
        self._snapshots: dict[str, AccessSnapshot | None] = {}
        self._revoked: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def epoch(self) -> int | None:
        """The access epoch the caches were last loaded at."""
        return self._epoch

    @property
    def refresh_due(self) -> bool:
        return time.monotonic() - self._checked_at >= self._interval

    @property
    def age(self) -> float:
        """Seconds since the caches were last checked against the database."""
        return time.monotonic() - self._checked_at

    def refresh(self, *, force: bool = False) -> None:
        """Reload caches when another process changed access data; blocking (database I/O)."""
        with self._lock:
            if not force and not self.refresh_due:
                return
            with self._database.read() as session:
                epoch = read_access_epoch(session)
                if force or epoch != self._epoch:
                    self._keys.load(session)
                    now = utcnow()
                    revoked = session.scalars(select(RevokedToken.jti).where(RevokedToken.expires_at > now - _MAX_LEEWAY))
                    self._revoked = frozenset(revoked)
                    self._snapshots = {}
                    self._tokens.clear_cache()
                    self._epoch = epoch
            self._checked_at = time.monotonic()

    def cached_snapshot(self, user_id: str) -> tuple[bool, AccessSnapshot | None]:
        """Return (found, snapshot) from memory without I/O."""
        if user_id in self._snapshots:
            return True, self._snapshots[user_id]
        return False, None

    def load_snapshot(self, user_id: str) -> AccessSnapshot | None:
        """Load a snapshot from the database and keep it; blocking."""
        with self._database.read() as session:
            snapshot = load_access_snapshot(session, user_id)
        if len(self._snapshots) >= _SNAPSHOT_CACHE_SIZE:
            self._snapshots = {}
        self._snapshots[user_id] = snapshot
        return snapshot

    def is_revoked(self, token_id: str) -> bool:
        return token_id in self._revoked

    def check(self, claims: Claims, snapshot: AccessSnapshot | None) -> Principal:
        """Apply the live user checks to a verified token; raise InvalidToken when they fail."""
        if self.is_revoked(claims.token_id):
            raise InvalidToken(Rejection.REVOKED)
        if snapshot is None:
            raise InvalidToken(Rejection.UNKNOWN_USER)
        if snapshot.credential_stamp != claims.credential_stamp:
            raise InvalidToken(Rejection.CREDENTIALS_CHANGED)
        if not snapshot.active:
            raise InvalidToken(Rejection.USER_INACTIVE)
        return Principal(claims, snapshot)

    def revoke(self, claims: Claims) -> None:
        """Deny the token from now until it expires, in every process and after restarts; blocking."""
        expires_at = dt.datetime.fromtimestamp(claims.expires_at, dt.UTC)
        with self._database.write() as session:
            if session.get(RevokedToken, claims.token_id) is None:
                session.add(RevokedToken(jti=claims.token_id, expires_at=expires_at))
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow() - _MAX_LEEWAY))
            bump_access_epoch(session)
        self._revoked = self._revoked | {claims.token_id}
