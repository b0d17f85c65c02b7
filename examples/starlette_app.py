"""Plain Starlette (1.x has no on_event): a lifespan with nested phases.

uvicorn examples.starlette_app:app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifewatch import Lifewatch

watch = Lifewatch(service="starlette-example")


@watch.phase("templates")
async def load_templates() -> dict[str, str]:
    async with watch.phase("read-files"):
        templates = {"index": "hello {name}"}
    return templates


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    templates = await load_templates()
    yield {"templates": templates}


async def index(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.templates["index"].format(name="world"))


app = watch.instrument(Starlette(lifespan=lifespan, routes=[Route("/", index)]))
