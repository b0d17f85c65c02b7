"""instrument(): apps wrapped in place, on_event handlers, router lifespans."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
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


# -- mounted apps (starlette#649) ---------------------------------------------


def _mounted_tree(trail: list[str]) -> tuple[Starlette, FastAPI, Starlette]:
    """An app, a FastAPI app mounted at /v2, a Starlette app mounted in that at /admin."""

    def lifespan(name: str, state: dict[str, Any]) -> Any:
        @asynccontextmanager
        async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
            trail.append(f"{name} up")
            app.state.started = name  # what a user of starlette#649 reads as request.app.state
            yield state
            trail.append(f"{name} down")

        run.__name__ = f"{name}_lifespan"
        return run

    async def seen(request: Request) -> JSONResponse:
        return JSONResponse({"state": dict(request.state._state), "app": request.app.state.started})

    admin = Starlette(
        lifespan=lifespan("admin", {"audit": "audit-log"}), routes=[Route("/s", seen)]
    )
    v2 = FastAPI(
        lifespan=lifespan("v2", {"db": "v2-db"}),
        routes=[Route("/s", seen), Mount("/admin", app=admin)],
    )
    app = Starlette(
        lifespan=lifespan("main", {"db": "main-db"}),
        routes=[Route("/s", seen), Mount("/v2", app=v2)],
    )
    return app, v2, admin


def test_starlette_alone_never_runs_a_mounted_apps_lifespan() -> None:
    """starlette#649: make sure the bug is still there to fix."""
    trail: list[str] = []
    app, _, _ = _mounted_tree(trail)
    with TestClient(app) as client:
        assert client.get("/s").json()["state"] == {"db": "main-db"}
    assert trail == ["main up", "main down"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_mounted_apps_lifespans_run_in_mount_order_and_their_state_reaches_their_requests(
    watch: Lifewatch, spans: Spans, backend: str
) -> None:
    trail: list[str] = []
    app, _, _ = _mounted_tree(trail)
    watch.instrument(app)
    with TestClient(app, backend=backend) as client:
        assert client.get("/s").json() == {"state": {"db": "main-db"}, "app": "main"}
        # the mounted app's own state wins over the app's for its own requests
        assert client.get("/v2/s").json() == {"state": {"db": "v2-db"}, "app": "v2"}
        assert client.get("/v2/admin/s").json() == {
            "state": {"db": "v2-db", "audit": "audit-log"},
            "app": "admin",
        }
        assert client.get("/s").json()["state"] == {"db": "main-db"}  # nothing leaks up
    assert trail == ["main up", "v2 up", "admin up", "admin down", "v2 down", "main down"]
    assert watch.startup is not None
    assert [(p.name, p.parent.name if p.parent else None) for p in watch.startup.phases] == [
        ("main_lifespan", None),
        ("mount:/v2", None),
        ("v2_lifespan", "mount:/v2"),
        ("mount:/v2/admin", "mount:/v2"),
        ("admin_lifespan", "mount:/v2/admin"),
    ]
    assert phase_names(watch, "shutdown") == [
        "mount:/v2",
        "mount:/v2/admin",
        "admin_lifespan",
        "v2_lifespan",
        "main_lifespan",
    ]
    child = spans.named("lifespan.startup v2_lifespan")
    parent = spans.named("lifespan.startup mount:/v2")
    assert child.parent is not None and child.parent.span_id == parent.context.span_id


def test_a_mounted_app_holding_a_task_group_across_yield_keeps_it(watch: Lifewatch) -> None:
    """Cancel scopes nest: the mounted app's task group lives while the app serves."""
    import anyio

    ticks: list[int] = []

    @asynccontextmanager
    async def sub_lifespan(app: Any) -> AsyncIterator[None]:
        async def ticker() -> None:
            while True:
                ticks.append(1)
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            yield
            tg.cancel_scope.cancel()

    app = Starlette(routes=[Mount("/sub", app=Starlette(lifespan=sub_lifespan))])
    watch.instrument(app)
    with TestClient(app, backend="trio") as client:
        client.get("/livez")
        assert ticks
    assert watch.shutdown is not None and watch.shutdown.outcome == "ok"


def test_a_failing_mounted_app_fails_startup_naming_the_mount(watch: Lifewatch) -> None:
    trail: list[str] = []

    @asynccontextmanager
    async def main(app: Any) -> AsyncIterator[None]:
        trail.append("main up")
        yield
        trail.append("main down")

    @asynccontextmanager
    async def broken(app: Any) -> AsyncIterator[None]:
        raise ConnectionError("v2 database down")
        yield

    app = Starlette(lifespan=main, routes=[Mount("/v2", app=Starlette(lifespan=broken))])
    watch.instrument(app)
    with pytest.raises(ConnectionError) as caught, TestClient(app):
        pass
    assert "lifewatch: startup phase 'broken' failed (error)" in caught.value.__notes__
    assert watch.startup is not None
    outcomes = {
        (p.name, p.parent.name if p.parent else None): p.outcome for p in watch.startup.phases
    }
    assert outcomes[("mount:/v2", None)] == "error"
    assert outcomes[("broken", "mount:/v2")] == "error"
    assert trail == ["main up", "main down"]  # the app's own lifespan rolled back
    assert watch.state is State.FAILED


def test_mounted_apps_on_event_handlers_and_mount_middleware(watch: Lifewatch) -> None:
    trail: list[str] = []
    sub = FastAPI()
    with pytest.warns(DeprecationWarning):
        sub.on_event("startup")(lambda: trail.append("sub handler"))
    app = Starlette(routes=[Mount("/sub", app=sub, middleware=[Middleware(GZipMiddleware)])])
    watch.instrument(app)
    with TestClient(app):
        pass
    assert trail == ["sub handler"]
    assert phase_names(watch) == ["mount:/sub", "<lambda>"]


def test_mounts_inside_a_routes_mount_and_one_app_mounted_twice_runs_once(
    watch: Lifewatch,
) -> None:
    trail: list[str] = []

    @asynccontextmanager
    async def sub_lifespan(app: Any) -> AsyncIterator[None]:
        trail.append("up")
        yield

    sub = Starlette(lifespan=sub_lifespan)
    app = Starlette(
        routes=[Mount("/api", routes=[Mount("/sub", app=sub)]), Mount("/again", app=sub)]
    )
    watch.instrument(app)
    with TestClient(app):
        pass
    assert trail == ["up"]
    assert phase_names(watch) == ["mount:/api/sub", "sub_lifespan"]


@pytest.mark.parametrize(
    ("options", "ran"),
    [
        ({"mounts": False}, ["main up"]),
        ({"skip_mounts": ("/v2",)}, ["main up"]),
        ({"skip_mounts": ["/v2/admin/"]}, ["main up", "v2 up"]),
    ],
)
def test_mounts_opt_out(watch: Lifewatch, options: dict[str, Any], ran: list[str]) -> None:
    trail: list[str] = []
    app, _, _ = _mounted_tree(trail)
    watch.instrument(app, **options)
    with TestClient(app):
        pass
    assert [t for t in trail if t.endswith(" up")] == ran


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"mounts": "yes"}, TypeError),
        ({"skip_mounts": "/v2"}, TypeError),
        ({"skip_mounts": ("v2",)}, ValueError),
    ],
)
def test_mount_options_are_validated(
    watch: Lifewatch, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        watch.instrument(Starlette(), **options)
