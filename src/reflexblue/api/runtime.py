"""The per-process runtime: settings, database, keys, tokens, throttle and access caches."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import partial

from sqlalchemy import select

from reflexblue.api.audit_worker import AuditWorker
from reflexblue.notifications import AccessListener
from reflexblue.redis_client import RedisHealth, connect
from reflexblue.security.keys import KeySet
from reflexblue.security.passwords import Passwords
from reflexblue.security.principal import AccessState
from reflexblue.security.throttle import (
    DatabaseThrottleStore,
    FallbackThrottleStore,
    LoginThrottle,
    Policy,
    RedisThrottleStore,
    ThrottleStore,
)
from reflexblue.security.tokens import Tokens
from reflexblue.settings import Settings
from reflexblue.storage.database import Database
from reflexblue.storage.models import Administration
from reflexblue.storage.repository import get_environment


@dataclass
class Runtime:
    settings: Settings
    database: Database
    passwords: Passwords
    keys: KeySet
    tokens: Tokens
    access: AccessState
    throttle: LoginThrottle
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    #: administration code -> (id, name), reloaded with the access caches
    administrations: dict[str, tuple[str, str]]
    #: Writes token rejections to the audit trail and applies its retention; started by start().
    audit_worker: AuditWorker | None = None
    #: Tracks whether Redis responds; None when REFLEXBLUE_REDIS_URL is empty.
    redis_health: RedisHealth | None = None
    #: Refreshes the access caches when another process announces a change; None without Redis.
    access_listener: AccessListener | None = None

    @classmethod
    def start(cls, settings: Settings, database: Database, redis_health: RedisHealth | None = None) -> Runtime:
        """Load keys and caches from a migrated database and start the background threads; blocking.

        With ``redis_health`` (Redis configured), throttle counters go to Redis and a listener
        thread refreshes the caches on every access change announced there.
        """
        with database.read() as session:
            environment = get_environment(session)
            issuer = settings.token_issuer or f"urn:reflexblue:{environment.environment_id}"
        keys = KeySet(settings.token_algorithm, settings.secret_key, settings.token_lifetime, settings.token_leeway)
        tokens = Tokens(settings, keys, issuer)
        access = AccessState(database, keys, tokens, settings.access_refresh_interval)
        store: ThrottleStore = DatabaseThrottleStore(database)
        if redis_health is not None:
            redis_store = RedisThrottleStore(connect(settings.redis_url), settings.redis_prefix)
            store = FallbackThrottleStore(redis_store, DatabaseThrottleStore(database), redis_health)
        throttle = LoginThrottle(
            store,
            Policy(settings.throttle_user_failures, settings.throttle_base_delay, settings.throttle_max_delay,
                   settings.throttle_window),
            Policy(settings.throttle_address_failures, settings.throttle_base_delay, settings.throttle_max_delay,
                   settings.throttle_window),
        )
        runtime = cls(
            settings=settings,
            database=database,
            passwords=Passwords(settings),
            keys=keys,
            tokens=tokens,
            access=access,
            throttle=throttle,
            trusted_proxies=_parse_networks(settings.trusted_proxies),
            administrations={},
            redis_health=redis_health,
        )
        runtime.passwords.warm_up()
        runtime.refresh(force=True)
        runtime.audit_worker = AuditWorker(database, settings.audit_retention_days)
        runtime.audit_worker.start()
        if redis_health is not None:
            runtime.access_listener = AccessListener(settings.redis_url, settings.redis_prefix,
                                                     partial(runtime.refresh, force=True), redis_health)
            runtime.access_listener.start()
        return runtime

    def administration(self, code: str) -> tuple[str, str] | None:
        """Return (id, name) of the administration ``code``; blocking, as a new code reloads the list once."""
        entry = self.administrations.get(code)
        if entry is None:
            self.refresh(force=True)
            entry = self.administrations.get(code)
        return entry

    def refresh(self, *, force: bool = False) -> None:
        """Pick up changes made by other processes; blocking, cheap when nothing changed."""
        before = self.access.epoch
        self.access.refresh(force=force)
        if force or self.access.epoch != before or not self.administrations:
            with self.database.read() as session:
                rows = session.execute(select(Administration.code, Administration.id, Administration.name)).all()
            self.administrations = {code: (admin_id, name) for code, admin_id, name in rows}

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """Return the client address, read from X-Forwarded-For only when the peer is a trusted proxy."""
        address = peer or "unknown"
        if not forwarded_for or not self.trusted_proxies or not self._trusted(address):
            return address
        for hop in reversed([part.strip() for part in forwarded_for.split(",")][:20]):
            if not self._trusted(hop):
                return hop[:64]
        return address

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)


def _parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    from reflexblue.settings import SettingsError

    networks = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(
                f"invalid REFLEXBLUE_TRUSTED_PROXIES entry {part!r}: use addresses or networks such as 10.0.0.0/8"
            ) from None
    return tuple(networks)
