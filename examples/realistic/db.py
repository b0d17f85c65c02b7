"""The orders database and its one-off setup: wait for it, migrate, write the
initial data.

The one-off part must run once however many workers start (``uvicorn
--workers 4``, ``gunicorn -w 4``): run ``python -m examples.realistic.prestart``
before the workers (a Kubernetes init container, or the image's prestart
script), or let every worker run it in turn under a lock, as ``init_db``
does here (a file lock beside SQLite's file; with PostgreSQL,
``pg_advisory_lock``). The first migrates and writes the data; the others find
the schema at head and the data there, and do nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from .observability import watch

HERE = Path(__file__).parent
DB = os.environ.get("ORDERS_DB", "/tmp/orders.db")
engine = sa.create_engine(f"sqlite:///{DB}")


def wait_for_db() -> None:
    """Until the database answers (blocking: run it with ``watch.to_thread``)."""
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return
        except sa.exc.OperationalError:
            time.sleep(0.5)


@contextlib.contextmanager
def one_worker_at_a_time(path: str) -> Iterator[None]:
    """An exclusive lock on ``path`` across the workers of this host."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def init_db(alembic_ini: Path | None = None) -> None:
    """The app's own sync setup: connect, then migrate (each revision a phase)."""
    with watch.phase("database", timeout=30):
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        with one_worker_at_a_time(f"{DB}.lock"):
            with watch.phase("migrations"), engine.begin() as conn:
                config = Config(alembic_ini)
                config.set_main_option("script_location", str(HERE / "migrations"))
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            with watch.phase("initial-data"):
                write_initial_data()


def write_initial_data() -> None:
    """Add the first orders unless they are there (check, then insert: one
    worker at a time, or two workers both insert them)."""
    with engine.begin() as conn:
        if conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one():
            return
        time.sleep(float(os.environ.get("ORDERS_SEED_PAUSE", "0")))  # a slow database
        conn.execute(
            sa.text("INSERT INTO orders (item) VALUES (:item)"),
            [{"item": "coffee"}, {"item": "bagel"}],
        )
