"""One app for the server matrix and the ops listener tests, set up by the environment.

SERVICE: the service name (each test its own: the preStop drain finds
workers by it); OPS_PORT: serve the ops listener on 127.0.0.1:OPS_PORT (ops_only); BLOCK: a
startup phase blocks the event loop that long; FAIL: the phase 'database'
fails; DRAIN / SHUTDOWN: drain_delay and shutdown_timeout; MARK_FILE: the
shutdown phase writes the time there; NAME_WORKER: a readiness check named
``worker-<pid>``, so ``/readyz?verbose`` says which worker answered.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifewatch import Lifewatch

OPS = os.environ.get("OPS_PORT")
watch = Lifewatch(
    service=os.environ.get("SERVICE", "matrix"),
    drain_delay=float(os.environ.get("DRAIN", "1")),
    shutdown_timeout=float(os.environ.get("SHUTDOWN", "3")),
    ops_address=f"127.0.0.1:{OPS}" if OPS else None,
    ops_only=bool(OPS),
    timeline_path="/lifewatch/timeline",
)


@watch.check("loop", timeout=0.5)
async def loop_check() -> None:
    await asyncio.sleep(0)


if os.environ.get("NAME_WORKER"):

    @watch.check(f"worker-{os.getpid()}")
    async def worker_check() -> None:
        """Always passes: its name says which worker of several answered."""


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    async with watch.phase("load-model"):
        time.sleep(float(os.environ.get("BLOCK", "0")))  # noqa: ASYNC251 - blocks the loop, on purpose
    async with watch.phase("database"):
        if os.environ.get("FAIL"):
            raise ConnectionRefusedError("postgres://db:5432 refused")
    yield
    async with watch.phase("close"):
        mark = os.environ.get("MARK_FILE")
        if mark:
            with open(mark, "a") as f:  # noqa: ASYNC230
                f.write(f"{time.time()}\n")


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("home")


async def block(request: Request) -> PlainTextResponse:
    time.sleep(float(request.query_params.get("s", "2")))  # noqa: ASYNC251 - blocks the loop, on purpose
    return PlainTextResponse("blocked")


app = watch.instrument(
    Starlette(routes=[Route("/", home), Route("/block", block)], lifespan=lifespan)
)
