"""The app examples/kubernetes/deployment.yaml is generated from (see its first line).

The ops listener on port 9000 answers the kubelet from the first moment of
startup, and keeps /metrics and the timeline off the public port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lifewatch import Lifewatch

watch = Lifewatch(
    service="orders",
    ops_address="0.0.0.0:9000",
    ops_only=True,
    timeline_path="/lifewatch/timeline",
)


@watch.check("postgres", timeout=1.0)
async def postgres() -> None:
    await asyncio.sleep(0)  # await pool.execute("SELECT 1")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with watch.phase("database", timeout=10):
        await asyncio.sleep(0)
    yield


app = watch.instrument(FastAPI(lifespan=lifespan))
