"""Several lifespans composed, each a phase: up in order, down in reverse.

uvicorn examples.composed:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from lifewatch import Lifewatch

watch = Lifewatch(service="composed")


@asynccontextmanager
async def database(app: Any) -> AsyncIterator[dict[str, Any]]:
    yield {"db": "postgres-pool"}


@asynccontextmanager
async def http_client(app: Any) -> AsyncIterator[dict[str, Any]]:
    yield {"http": "client"}


async def broker(app: Any) -> AsyncIterator[None]:  # an async generator works too
    yield


app = FastAPI(lifespan=watch.lifespan(database, http_client, events=broker))


@app.get("/state")
async def state(request: Request) -> dict[str, Any]:
    return {"db": request.state.db, "http": request.state.http}


watch.instrument(app)
