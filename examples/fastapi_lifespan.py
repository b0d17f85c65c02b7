"""FastAPI with ``lifespan=``: phases marked inside, sync and async, state passed to requests.

uvicorn examples.fastapi_lifespan:app
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from lifewatch import Lifewatch

watch = Lifewatch(service="orders")


class Database:  # stands in for your database client
    async def connect(self) -> Database:
        await asyncio.sleep(0.01)
        return self

    async def close(self) -> None:
        await asyncio.sleep(0)


@watch.phase("migrations")  # plain functions too: SQLAlchemy, alembic, model loading
def run_migrations() -> None:
    time.sleep(0.01)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    async with watch.phase("database", timeout=10):
        db = await Database().connect()
        run_migrations()  # nested: a child of "database"
    async with watch.phase("cache-warmup", critical=False, timeout=5):
        raise ConnectionError("cache unreachable")  # degrades, does not abort startup
    yield {"db": db}
    async with watch.phase("database"):
        await db.close()


app = FastAPI(lifespan=lifespan)


@app.get("/orders")
async def orders(request: Request) -> dict[str, Any]:
    return {"db": type(request.state.db).__name__}


watch.instrument(app)  # wraps the lifespan and serves /livez, /readyz, /startupz, /metrics
