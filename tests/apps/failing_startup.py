"""A FastAPI app whose second startup phase fails (or hangs), run under uvicorn."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from lifewatch import Lifewatch

structlog.configure(processors=[structlog.processors.JSONRenderer()])
watch = Lifewatch(service="orders", startup_timeout=float(os.environ.get("STARTUP_TIMEOUT", "30")))


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    async with watch.phase("config"):
        pass
    async with watch.phase("database", timeout=5):
        if os.environ.get("MODE") == "hang":
            await asyncio.Event().wait()
        raise ConnectionRefusedError("postgres://db:5432 refused")
    yield


app = watch.instrument(FastAPI(lifespan=lifespan))
