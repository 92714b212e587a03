"""Alembic environment: runs online against the engine vmhealth.db hands over."""

from alembic import context

config = context.config
engine = config.attributes["engine"]
version_table = config.attributes["version_table"]

with engine.begin() as connection:
    context.configure(connection=connection, version_table=version_table, render_as_batch=True)
    context.run_migrations()
