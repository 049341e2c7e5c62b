"""Persistence: SQLAlchemy models, repositories, Alembic migrations and database setup."""
