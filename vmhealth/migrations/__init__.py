"""Alembic migrations, one history per component (see vmhealth.db)."""
