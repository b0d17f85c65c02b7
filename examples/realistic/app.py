"""The orders service: what lifewatch sees in an app built like most are.

Sync SQLAlchemy, alembic migrations in the app's own ``init_db()`` (one
worker at a time: see ``db.py``), stdlib logging configured by the app, a
background scheduler, a database check.

    ORDERS_DB=/tmp/orders.db uvicorn examples.realistic.app:app --workers 2

``ORDERS_MODE=slow`` makes the cache warmup block past its timeout;
``ORDERS_MODE=fail`` makes a migration fail. ``ORDERS_ALEMBIC_INI=1`` migrates
with ``alembic.ini``, whose logging sections alembic's ``env.py`` applies with
``fileConfig`` in the app's own process (as the FastAPI full-stack template
does): it replaces the app's logging, and lifewatch's records still come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging.config
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import sqlalchemy as sa
from fastapi import FastAPI

from lifewatch import checks

from .db import HERE, engine, init_db, wait_for_db
from .observability import watch

# The app's logging, as it was before lifewatch: lifewatch's lines join it.
logging.config.dictConfig(
    {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "app"}},
        "root": {"handlers": ["stderr"], "level": "INFO"},
    }
)
log = logging.getLogger("orders")

MODE = os.environ.get("ORDERS_MODE", "ok")
watch.add_check("database", checks.sqlalchemy(engine), interval=1)


def warm_cache() -> None:
    time.sleep(1.0 if MODE == "slow" else 0.01)  # a slow cache server, say


async def scheduler() -> None:
    """Runs until shutdown; if it dies, /livez fails."""
    while True:
        await asyncio.sleep(0.5)
        await anyio.to_thread.run_sync(count_orders)


def count_orders() -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one())


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # A connect that can hang while the database is down: in a daemon thread,
    # so the timeout (or a SIGTERM) ends the phase and the exit never waits for it.
    async with watch.phase("wait-for-db", timeout=30):
        await watch.to_thread(wait_for_db)
    init_db(HERE / "alembic.ini" if os.environ.get("ORDERS_ALEMBIC_INI") else None)
    with watch.phase("cache-warmup", timeout=0.2, critical=False):
        warm_cache()
    task = watch.supervise(asyncio.create_task(scheduler()), name="scheduler")
    log.info("orders service started")
    yield
    async with watch.phase("scheduler"):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with watch.phase("database"):
        engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/orders")
def orders() -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, item, status FROM orders ORDER BY id"))
        return [dict(row._mapping) for row in rows]


watch.instrument(app)
