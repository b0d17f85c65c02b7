"""FastAPI with ``lifespan=``: phases marked inside, state passed to requests.

uvicorn examples.fastapi_lifespan:app
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from lifewatch import Lifewatch

watch = Lifewatch(service="orders")


class Database:
    async def connect(self) -> Database:
        await asyncio.sleep(0.01)
        return self

    async def close(self) -> None:
        await asyncio.sleep(0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    async with watch.phase("database", timeout=10):
        db = await Database().connect()
    async with watch.phase("cache-warmup", critical=False, timeout=5):
        raise ConnectionError("cache unreachable")  # degrades, does not abort startup
    yield {"db": db}
    async with watch.phase("database"):
        await db.close()


app = FastAPI(lifespan=lifespan)


@app.get("/orders")
async def orders(request: Request) -> dict[str, Any]:
    return {"db": type(request.state.db).__name__}


watch.instrument(app)
