"""FastAPI with legacy ``on_event`` handlers: each becomes a phase, and they
run even beside ``lifespan=`` (FastAPI alone drops them without a word).

    uvicorn examples.fastapi_on_event:app
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lifewatch import Lifewatch

watch = Lifewatch(service="legacy")
started: list[str] = []


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    started.append("lifespan")
    yield


app = FastAPI(lifespan=lifespan)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # on_event is deprecated

    @app.on_event("startup")
    async def connect_broker() -> None:
        started.append("connect_broker")

    @app.on_event("shutdown")
    async def disconnect_broker() -> None:
        started.remove("connect_broker")


@app.get("/started")
async def which() -> list[str]:
    return started


watch.instrument(app)
