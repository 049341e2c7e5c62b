"""One typed settings object, read from ``REFLEXBLUE_*`` environment variables.

CLI options override the environment by setting the same variables before the settings are
read, so worker processes started by uvicorn get exactly the values given on the command line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from reflexblue.domain.errors import ValidationError

PREFIX = "REFLEXBLUE_"
DEFAULT_DATABASE_URL = "sqlite:///reflexblue.db"
MAX_LEEWAY = 60
MAX_AUDIT_RETENTION_DAYS = 36_500


class SettingsError(ValidationError):
    """A setting has a value that cannot be used; the message names the variable and the fix."""


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the server and the CLI. Field ``x`` is read from ``REFLEXBLUE_X``."""

    database_url: str = DEFAULT_DATABASE_URL
    #: Database connections each server process keeps open. Under load it opens up to as many again.
    database_pool_size: int = 10
    #: Seconds to wait for the database: to connect (at least 2 s on PostgreSQL), for a free pooled
    #: connection, for one SQL statement (PostgreSQL statement_timeout) and for SQLite's write lock.
    database_timeout: float = 5.0
    #: Token lifetime in seconds (exp - iat).
    token_lifetime: int = 86_400
    #: Allowed clock skew in seconds when checking exp, nbf and iat; at most 60.
    token_leeway: int = 30
    token_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    #: The ``iss`` claim; empty means "urn:reflexblue:<environment id>", unique per database.
    token_issuer: str = ""
    token_audience: str = "reflexblue-external-api"
    #: Tokens longer than this many bytes are rejected before any parsing.
    token_max_bytes: int = 4096
    #: argon2id parameters: memory in KiB, iterations, parallelism (OWASP: 19 MiB, 2, 1).
    argon2_memory_cost: int = 19_456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    #: Failed logins per normalised username before back-off starts.
    throttle_user_failures: int = 5
    #: Failed logins per client address before back-off starts.
    throttle_address_failures: int = 50
    #: First back-off delay in seconds; it doubles with each further failure.
    throttle_base_delay: int = 30
    #: Maximum back-off delay (and Retry-After) in seconds, 900 at most.
    throttle_max_delay: int = 900
    #: Seconds after the last failure at which a key's failure count is forgotten.
    throttle_window: int = 900
    #: Encrypts private signing keys at rest when set; keep it in a secret store.
    secret_key: str = field(default="", repr=False)
    #: Whether ``POST /api/security/logout`` revokes the presented token.
    revoke_on_logout: bool = False
    #: Trust X-Forwarded-For from these proxy addresses (comma separated) for the client address.
    trusted_proxies: str = ""
    #: Seconds between checks for access changes made by other processes.
    access_refresh_interval: float = 0.5
    #: Days to keep audit events; older ones are purged daily by the server and by
    #: ``reflexblue audit purge``. 0 keeps them forever.
    audit_retention_days: int = 365
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    #: Redis server for login throttle counters and access-change notifications, e.g.
    #: redis://127.0.0.1:6379/0; empty keeps throttle counters in the database and relies on polling.
    redis_url: str = field(default="", repr=False)
    #: Prefix of every Redis key and channel name, so several environments can share one Redis.
    redis_prefix: str = "reflexblue:"
    #: Whether the server exports Prometheus metrics.
    metrics: bool = True
    #: TCP port of a separate metrics listener on 127.0.0.1; 0 serves /metrics on the main port.
    metrics_port: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``) and validate them."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in fields(cls):
            name = PREFIX + setting.name.upper()
            if name not in environ:
                continue
            values[setting.name] = _convert(name, environ[name], setting.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        _check(1 <= self.database_pool_size <= 500, "REFLEXBLUE_DATABASE_POOL_SIZE", self.database_pool_size,
               "use 1 to 500 connections per server process")
        _check(1 <= self.database_timeout <= 600, "REFLEXBLUE_DATABASE_TIMEOUT", self.database_timeout,
               "use 1 to 600 seconds")
        _check(0 <= self.token_leeway <= MAX_LEEWAY, "REFLEXBLUE_TOKEN_LEEWAY", self.token_leeway,
               f"use a number of seconds from 0 to {MAX_LEEWAY}")
        _check(1 <= self.token_lifetime <= 30 * 86_400, "REFLEXBLUE_TOKEN_LIFETIME", self.token_lifetime,
               "use a number of seconds from 1 to 2592000 (30 days)")
        _check(self.token_algorithm in ("EdDSA", "ES256"), "REFLEXBLUE_TOKEN_ALGORITHM", self.token_algorithm,
               "use EdDSA or ES256")
        _check(1024 <= self.token_max_bytes <= 65_536, "REFLEXBLUE_TOKEN_MAX_BYTES", self.token_max_bytes,
               "use a number of bytes from 1024 to 65536")
        _check(self.argon2_memory_cost >= 8 * 1024, "REFLEXBLUE_ARGON2_MEMORY_COST", self.argon2_memory_cost,
               "use at least 8192 KiB; OWASP recommends 19456 with time cost 2")
        _check(1 <= self.argon2_time_cost <= 20, "REFLEXBLUE_ARGON2_TIME_COST", self.argon2_time_cost,
               "use 1 to 20 iterations")
        _check(1 <= self.argon2_parallelism <= 16, "REFLEXBLUE_ARGON2_PARALLELISM", self.argon2_parallelism,
               "use 1 to 16 lanes")
        _check(self.throttle_user_failures >= 5, "REFLEXBLUE_THROTTLE_USER_FAILURES", self.throttle_user_failures,
               "use 5 or more: a user is never throttled before five failures in a row")
        _check(self.throttle_address_failures >= 5, "REFLEXBLUE_THROTTLE_ADDRESS_FAILURES",
               self.throttle_address_failures, "use 5 or more")
        _check(1 <= self.throttle_base_delay <= self.throttle_max_delay, "REFLEXBLUE_THROTTLE_BASE_DELAY",
               self.throttle_base_delay, "use 1 second or more, and no more than REFLEXBLUE_THROTTLE_MAX_DELAY")
        _check(1 <= self.throttle_max_delay <= 900, "REFLEXBLUE_THROTTLE_MAX_DELAY", self.throttle_max_delay,
               "use 1 to 900 seconds")
        _check(self.throttle_window >= 60, "REFLEXBLUE_THROTTLE_WINDOW", self.throttle_window,
               "use 60 seconds or more")
        _check(0.05 <= self.access_refresh_interval <= 1.0, "REFLEXBLUE_ACCESS_REFRESH_INTERVAL",
               self.access_refresh_interval, "use 0.05 to 1.0 seconds: access changes must apply within a second")
        _check(0 <= self.audit_retention_days <= MAX_AUDIT_RETENTION_DAYS, "REFLEXBLUE_AUDIT_RETENTION_DAYS",
               self.audit_retention_days,
               f"use a number of days from 1 to {MAX_AUDIT_RETENTION_DAYS}, or 0 to keep audit events forever")
        _check(self.log_format in ("json", "text"), "REFLEXBLUE_LOG_FORMAT", self.log_format, "use json or text")
        _check(self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "REFLEXBLUE_LOG_LEVEL",
               self.log_level, "use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        for entry in self.trusted_proxies.split(","):
            _check(_is_network(entry.strip()), "REFLEXBLUE_TRUSTED_PROXIES", entry.strip(),
                   "use comma-separated addresses or networks such as 10.0.0.0/8")
        _check(0 < len(self.token_audience.strip()) <= 200, "REFLEXBLUE_TOKEN_AUDIENCE", self.token_audience,
               "set a non-empty audience of at most 200 characters")
        _check(len(self.token_issuer) <= 200, "REFLEXBLUE_TOKEN_ISSUER", self.token_issuer,
               "use at most 200 characters, or leave it unset for urn:reflexblue:<environment id>")
        _check_redis_url(self.redis_url)
        _check(0 < len(self.redis_prefix) <= 100 and self.redis_prefix.isprintable() and " " not in self.redis_prefix,
               "REFLEXBLUE_REDIS_PREFIX", self.redis_prefix,
               "use 1 to 100 printable characters without spaces, e.g. reflexblue:")
        _check(0 <= self.metrics_port <= 65_535, "REFLEXBLUE_METRICS_PORT", self.metrics_port,
               "use 0 to serve /metrics on the main port, or a TCP port from 1 to 65535")


def _check_redis_url(url: str) -> None:
    """Reject a Redis URL that redis-py cannot use; the message hides the value, which may hold a password."""
    if not url:
        return
    try:
        parsed = urlsplit(url)
        network = parsed.scheme in ("redis", "rediss") and bool(parsed.hostname)
    except ValueError:
        network = False
        parsed = None
    if network or (parsed is not None and parsed.scheme == "unix" and bool(parsed.path)):
        return
    raise SettingsError(
        "invalid REFLEXBLUE_REDIS_URL (value not shown, it may contain a password): use "
        "redis://host:6379/0, rediss://host:6380/0 for TLS or unix:///path/to/redis.sock, or leave it empty"
    )


def _is_network(text: str) -> bool:
    if not text:
        return True
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _check(ok: bool, name: str, value: object, fix: str) -> None:
    if not ok:
        raise SettingsError(f"invalid {name}={value!r}: {fix}")


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": lambda text: int(text.strip()),
    "float": lambda text: float(text.strip()),
    "bool": _parse_bool,
    "str": lambda text: text.strip(),
}


def _convert(name: str, raw: str, annotation: Any) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    converter = _CONVERTERS.get(kind, _CONVERTERS["str"])
    try:
        return converter(raw)
    except ValueError:
        expected = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(kind, "a string")
        raise SettingsError(f"invalid {name}={raw!r}: expected {expected}") from None
