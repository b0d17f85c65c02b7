"""The README's example: a FastAPI app whose startup phases are watched.

uvicorn examples.quickstart:app
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lifewatch import Lifewatch

watch = Lifewatch(service="orders")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with watch.phase("database", timeout=10):
        ...  # connect: a span, a duration, a log line and metrics for it
    async with watch.phase("cache-warmup", critical=False):
        ...  # fails? readiness says "warn"; startup goes on
    yield


app = FastAPI(lifespan=lifespan)
watch.instrument(app)  # serves /livez, /readyz, /startupz, /metrics and the timeline
