"""Alembic environment: runs on the connection that :meth:`Database.migrate` passes in."""

from __future__ import annotations

from alembic import context

from reflexblue.storage.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `reflexblue migrate` or Database.migrate(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
