"""First-start preparation shared by ``serve``, ``provision`` and ``demo``: migrate, make keys."""

from __future__ import annotations

from reflexblue.security.keys import ensure_active_key
from reflexblue.settings import Settings
from reflexblue.storage.database import Database
from reflexblue.storage.repository import get_environment


def prepare(settings: Settings, *, actor: str = "system") -> Database:
    """Apply pending migrations and make sure the environment row and an active signing key exist."""
    database = Database(settings.database_url)
    database.migrate()
    with database.write() as session:
        get_environment(session)
        ensure_active_key(session, settings.token_algorithm, secret=settings.secret_key, actor=actor)
    return database
