"""Every way in, with FastAPI and plain Starlette."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lifewatch import Lifewatch, State

from .conftest import Spans


def phase_names(watch: Lifewatch, event: str = "startup") -> list[str]:
    run = watch.startup if event == "startup" else watch.shutdown
    assert run is not None
    return [p.name for p in run.phases]


async def state_endpoint(request: Request) -> JSONResponse:
    return JSONResponse({"db": request.state.db, "extra": getattr(request.state, "extra", None)})


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


async def test_phase_as_decorator_and_nested_children(watch: Lifewatch, spans: Spans) -> None:
    @watch.phase("load-config")
    async def load_config() -> str:
        async with watch.phase("read-file"):
            await asyncio.sleep(0)
        return "cfg"

    @watch.phase("flush")
    async def flush() -> None:
        pass

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        assert await load_config() == "cfg"
        yield
        await flush()

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        pass
    outer = spans.named("lifespan.startup load-config")
    inner = spans.named("lifespan.startup read-file")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert spans.named("lifespan.shutdown flush").attributes["lifespan.event"] == "shutdown"
    startup = watch.startup
    assert startup is not None
    by_name = {p.name: p for p in startup.phases}
    assert by_name["read-file"].parent is by_name["load-config"]


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


def test_middleware_times_raw_asgi_app_and_passes_requests_through(
    watch: Lifewatch, spans: Spans
) -> None:
    seen: list[dict[str, Any]] = []

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    async with watch.phase("warmup"):
                        await asyncio.sleep(0)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi"})

    with TestClient(watch.middleware(raw_app)) as client:
        assert watch.state is State.READY
        assert client.get("/x?y=1").text == "hi"
    assert seen[0]["path"] == "/x" and seen[0]["query_string"] == b"y=1"
    assert watch.state is State.STOPPED
    warmup = spans.named("lifespan.startup warmup")
    root = spans.named("lifespan.startup")
    assert warmup.parent is not None and warmup.parent.span_id == root.context.span_id
    assert spans.named("lifespan.shutdown").attributes["lifespan.outcome"] == "ok"


def test_middleware_speaks_lifespan_for_an_app_that_does_not(watch: Lifewatch) -> None:
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "no lifespan here"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with TestClient(watch.middleware(http_only)) as client:
        assert watch.state is State.READY
        assert client.get("/").status_code == 204
    assert watch.state is State.STOPPED
    assert watch.startup is not None and watch.startup.outcome == "ok"


def test_middleware_reports_a_raw_app_crashing_in_startup(watch: Lifewatch) -> None:
    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        async with watch.phase("migrations"):
            raise RuntimeError("schema locked")

    with pytest.raises(RuntimeError, match="schema locked"), TestClient(watch.middleware(crashing)):
        pass
    assert watch.state is State.FAILED
    assert watch.startup is not None and watch.startup.failed_phase == "migrations"


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
