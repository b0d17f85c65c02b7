"""One app for the fault rows run under a real uvicorn; ``FAULT`` picks the fault.

structlog is left unconfigured, as in most apps: lifewatch's records then go
through the stdlib logger ``lifewatch``; the app sends INFO and up to stderr
(``logging.basicConfig``, uvicorn sets up only its own loggers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from lifewatch import Lifewatch

FAULT = os.environ.get("FAULT", "")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

watch = Lifewatch(
    service="faults",
    drain_delay=float(os.environ.get("DRAIN_DELAY", "0")),
    startup_timeout=float(os.environ.get("STARTUP_TIMEOUT", "30")),
    shutdown_timeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "20")),
)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    async with watch.phase("config"):
        pass
    async with watch.phase("database", timeout=5):
        if FAULT == "startup-fails":
            raise ConnectionRefusedError("postgres://admin:S3cr3t@db:5432 refused")
        if FAULT == "startup-hangs":
            await asyncio.sleep(float(os.environ.get("HANG", "30")))
    async with watch.phase("cache", critical=False):
        if FAULT == "cache-fails":
            token = "L0cal-t0ken"  # a local a traceback renderer must not print
            raise ConnectionError(f"redis://:S3cr3t@cache:6379 refused ({len(token)})")
    yield
    async with watch.phase("close", timeout=float(os.environ.get("CLOSE_TIMEOUT", "5"))):
        if FAULT == "shutdown-hangs":
            await asyncio.sleep(60)
        print("close phase ran", flush=True)


if FAULT == "check-exits":

    @watch.check("exits")
    async def exits() -> None:
        raise SystemExit(3)

    @watch.check("interrupts", probes=("liveness",))
    def interrupts() -> None:
        raise KeyboardInterrupt


if FAULT == "check-swallows":

    @watch.check("stubborn", timeout=float(os.environ.get("CHECK_TIMEOUT", "0.2")))
    async def stubborn() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # the fault: no cancelling it
                await asyncio.sleep(3600)


app = watch.instrument(FastAPI(lifespan=lifespan))


@app.get("/")
async def root() -> dict[str, str]:
    return {"ok": "yes"}
