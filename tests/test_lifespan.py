"""watch.lifespan(...): the kinds of lifespan it takes, composition order, names and state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from lifewatch import Lifewatch
from tests.support.apps import phase_names, state_endpoint


async def test_lifespan_kinds_async_cm_asyncgen_syncgen(watch: Lifewatch) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def cm_factory(app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append("cm up")
        yield {"a": 1}
        events.append("cm down")

    async def agen(app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append("agen up")
        yield {"b": 2}
        events.append("agen down")

    def sgen(app: Any) -> Iterator[dict[str, Any]]:
        events.append("sgen up")
        yield {"c": 3}
        events.append("sgen down")

    app = Starlette(routes=[Route("/s", lambda r: JSONResponse(dict(r.state._state)))])
    app.router.lifespan_context = watch.lifespan(cm_factory, agen, sgen)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/s")).json() == {"a": 1, "b": 2, "c": 3}
    assert events == ["cm up", "agen up", "sgen up", "sgen down", "agen down", "cm down"]
    assert phase_names(watch) == ["cm_factory", "agen", "sgen"]
    assert phase_names(watch, "shutdown") == ["sgen", "agen", "cm_factory"]


async def test_composition_order_names_and_state_merge(watch: Lifewatch) -> None:
    trail: list[str] = []

    def make(tag: str, state: dict[str, Any] | None) -> Any:
        @asynccontextmanager
        async def ls(app: Any) -> AsyncIterator[dict[str, Any] | None]:
            trail.append(f"{tag} up")
            yield state
            trail.append(f"{tag} down")

        ls.__name__ = f"{tag}_lifespan"
        return ls

    composed = watch.lifespan(
        make("a", {"shared": "a", "a": 1}), make("b", None), cache=make("c", {"shared": "c"})
    )
    app = FastAPI(lifespan=composed, routes=[Route("/s", state_endpoint)])
    async with LifespanManager(app) as manager:
        assert manager._state == {"shared": "a", "a": 1}  # first provider of a key keeps it
    assert trail == ["a up", "b up", "c up", "c down", "b down", "a down"]
    assert phase_names(watch) == ["a_lifespan", "b_lifespan", "cache"]
    assert phase_names(watch, "shutdown") == ["cache", "b_lifespan", "a_lifespan"]


async def test_no_state_yields_none_for_old_servers(watch: Lifewatch) -> None:
    @asynccontextmanager
    async def plain(app: Any) -> AsyncIterator[None]:
        yield

    async with watch.lifespan(plain)(object()) as state:
        assert state is None
