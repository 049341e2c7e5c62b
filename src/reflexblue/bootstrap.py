"""First-start preparation shared by every command: migrate, and for servers make a signing key."""

from __future__ import annotations

from reflexblue.security.keys import ensure_active_key
from reflexblue.settings import Settings
from reflexblue.storage.database import Database
from reflexblue.storage.repository import get_environment


def prepare(settings: Settings, *, actor: str = "system", signing_key: bool = False) -> Database:
    """Apply pending migrations and make sure the environment row exists.

    With ``signing_key`` (servers only) it also makes sure an active key for the configured
    algorithm exists. Administration commands never create or rotate keys, so a shell with other
    settings cannot change the keys that running servers sign with.
    """
    database = Database(settings.database_url, pool_size=settings.database_pool_size,
                        timeout=settings.database_timeout)
    database.migrate()
    with database.write() as session:
        get_environment(session)
        if signing_key:
            ensure_active_key(session, settings.token_algorithm, secret=settings.secret_key, actor=actor)
    return database
