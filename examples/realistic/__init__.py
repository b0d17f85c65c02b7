"""A service shaped like real ones: sync SQLAlchemy, alembic, stdlib logging, a scheduler."""
