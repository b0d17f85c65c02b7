"""A startup that is slow, under a real server, with lifewatch's default settings.

Two lifespans composed: ``config`` starts and has a shutdown part; ``database``
is where the startup stays (``MODE``: ``waits`` awaits 60 s, ``blocks`` blocks
the event loop for ``BLOCK`` seconds in a sync phase, ``abandons`` gives a
300 s blocking call in ``watch.to_thread`` a 1 s timeout, ``quick`` does none).
``OPS_PORT`` turns the ops listener on; ``TIMELINE_PATH`` sets the timeline's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from lifewatch import Lifewatch

MODE = os.environ.get("MODE", "waits")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

options: dict[str, Any] = {}
if "DRAIN_DELAY" in os.environ:
    options["drain_delay"] = float(os.environ["DRAIN_DELAY"])
if "OPS_PORT" in os.environ:
    options["ops_address"] = f"127.0.0.1:{os.environ['OPS_PORT']}"
if "TIMELINE_PATH" in os.environ:
    options["timeline_path"] = os.environ["TIMELINE_PATH"]
watch = Lifewatch(service=os.environ.get("SERVICE", "signals"), **options)


async def config(app: Any) -> AsyncIterator[None]:
    async with watch.phase("settings"):
        await asyncio.sleep(0)
    yield
    print("config shut down", flush=True)


async def database(app: Any) -> AsyncIterator[None]:
    if MODE == "waits":
        async with watch.phase("wait-for-db"):
            print("waiting for the database", flush=True)
            await asyncio.sleep(60)
    elif MODE == "abandons":
        async with watch.phase("wait-for-db", timeout=1):
            print("connecting", flush=True)
            await watch.to_thread(time.sleep, 300)  # a connect that never returns
    elif MODE == "blocks":
        with watch.phase("migrate"):
            print("migrating", flush=True)
            time.sleep(float(os.environ.get("BLOCK", "3")))  # noqa: ASYNC251 - the fault
    yield
    print("database shut down", flush=True)


app = watch.instrument(FastAPI(lifespan=watch.lifespan(config, database)))
