"""alembic's environment: migrate through the connection the app hands over."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

# alembic's template: the ini file's logging sections, where there is one
# (the prestart command's alembic.ini; the app's own init_db passes none).
if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)

connection = context.config.attributes["connection"]
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
