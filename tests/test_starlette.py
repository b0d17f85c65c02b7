"""instrument(): apps wrapped in place, on_event handlers, router lifespans."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from lifewatch import Lifewatch, State
from tests.conftest import Spans
from tests.support.apps import phase_names, state_endpoint


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
def test_instrument_wraps_lifespan_and_keeps_state(
    framework: str, watch: Lifewatch, spans: Spans
) -> None:
    order: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with watch.phase("database"):
            order.append("db up")
        yield {"db": "conn-1"}
        async with watch.phase("database"):
            order.append("db down")

    routes = [Route("/state", state_endpoint)]
    app: Starlette = (
        FastAPI(lifespan=lifespan, routes=routes)
        if framework == "fastapi"
        else Starlette(lifespan=lifespan, routes=routes)
    )
    assert watch.instrument(app) is app
    with TestClient(app) as client:
        assert watch.state is State.READY
        assert client.get("/state").json() == {"db": "conn-1", "extra": None}
    assert order == ["db up", "db down"]
    assert phase_names(watch) == ["lifespan", "database"]
    assert phase_names(watch, "shutdown") == ["lifespan", "database"]
    child = spans.named("lifespan.startup database")
    parent = spans.named("lifespan.startup lifespan")
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


def test_instrument_twice_or_on_watched_lifespan_does_not_wrap_twice(watch: Lifewatch) -> None:
    calls: list[str] = []

    @asynccontextmanager
    async def db(app: Any) -> AsyncIterator[None]:
        calls.append("up")
        yield

    app = Starlette(lifespan=watch.lifespan(db))
    watch.instrument(app)
    watch.instrument(app)
    assert len(app.user_middleware) == 1
    with TestClient(app):
        pass
    assert calls == ["up"]
    assert phase_names(watch) == ["db"]


def test_fastapi_on_event_handlers_run_even_with_lifespan(watch: Lifewatch) -> None:
    trail: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        trail.append("lifespan up")
        yield
        trail.append("lifespan down")

    app = FastAPI(lifespan=lifespan)

    with pytest.warns(DeprecationWarning):

        @app.on_event("startup")
        async def first() -> None:
            trail.append("first")

        @app.on_event("startup")
        def second() -> None:  # sync handlers too
            trail.append("second")

        @app.on_event("shutdown")
        async def closing() -> None:
            trail.append("closing")

    watch.instrument(app)
    with TestClient(app):
        pass
    assert trail == ["lifespan up", "first", "second", "closing", "lifespan down"]
    names = phase_names(watch)
    assert names[0] == "lifespan"
    assert names[1:] == ["first", "second"]  # named after the function: readable labels
    assert phase_names(watch, "shutdown") == ["closing", "lifespan"]


def test_fastapi_without_lifewatch_drops_on_event_handlers() -> None:
    """The bug lifewatch fixes: make sure it is still there to fix."""
    trail: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield

    app = FastAPI(lifespan=lifespan)
    with pytest.warns(DeprecationWarning):
        app.on_event("startup")(lambda: trail.append("handler"))
    with TestClient(app):
        pass
    assert trail == []


def test_fastapi_router_lifespans_and_router_handlers_run_once(watch: Lifewatch) -> None:
    trail: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        trail.append("app up")
        yield {"db": "app-db", "who": "app"}
        trail.append("app down")

    @asynccontextmanager
    async def router_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        trail.append("router up")
        yield {"extra": "router", "who": "router"}
        trail.append("router down")

    router = APIRouter(lifespan=router_lifespan)
    plain_router = APIRouter()
    with pytest.warns(DeprecationWarning):

        @plain_router.on_event("startup")
        async def router_handler() -> None:
            trail.append("router handler")

    app = FastAPI(lifespan=app_lifespan)
    app.include_router(router)
    app.include_router(plain_router)
    app.add_route("/state", state_endpoint)
    watch.instrument(app)
    with TestClient(app) as client:
        assert client.get("/state").json() == {"db": "app-db", "extra": "router"}
    assert trail == ["app up", "router up", "router handler", "router down", "app down"]
    assert phase_names(watch)[:2] == ["app_lifespan", "router_lifespan"]


def test_fastapi_no_custom_lifespan_router_handler_runs_once(watch: Lifewatch) -> None:
    trail: list[str] = []
    router = APIRouter()
    with pytest.warns(DeprecationWarning):
        router.on_event("startup")(lambda: trail.append("router handler"))
    app = FastAPI()
    app.include_router(router)
    watch.instrument(app)
    with TestClient(app):
        pass
    assert trail == ["router handler"]


def test_two_handlers_with_one_name_get_distinct_phase_names(watch: Lifewatch) -> None:
    def handler_from(module: str) -> Any:
        def startup() -> None:
            ran.append(module)

        return startup

    ran: list[str] = []
    app = FastAPI()
    with pytest.warns(DeprecationWarning):
        app.on_event("startup")(handler_from("billing"))
        app.on_event("startup")(handler_from("search"))
    watch.instrument(app)
    with TestClient(app):
        pass
    assert ran == ["billing", "search"]
    assert phase_names(watch) == ["startup", "startup[2]"]


def test_routers_included_after_instrument_are_phases_and_run_once(watch: Lifewatch) -> None:
    trail: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        trail.append("app up")
        yield {"db": "app-db"}
        trail.append("app down")

    @asynccontextmanager
    async def router_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        trail.append("router up")
        yield {"extra": "router"}
        trail.append("router down")

    app = watch.instrument(FastAPI(lifespan=app_lifespan))  # before the routers
    plain = APIRouter()
    with pytest.warns(DeprecationWarning):
        plain.on_event("startup")(lambda: trail.append("handler"))
    app.include_router(APIRouter(lifespan=router_lifespan))
    app.include_router(plain)
    app.add_route("/state", state_endpoint)
    with TestClient(app) as client:
        assert client.get("/state").json() == {"db": "app-db", "extra": "router"}
    assert trail == ["app up", "router up", "handler", "router down", "app down"]
    assert phase_names(watch) == ["app_lifespan", "router_lifespan", "<lambda>"]
