"""The apps under test and the middlewares compared, shared by every benchmark.

Also the uvicorn factory: ``uvicorn --factory apps:served`` builds the app
named by ``BENCH_APP`` (``raw`` or ``fastapi``) wrapped as ``BENCH_VARIANT``
says (``bare``, ``lifewatch``, ``starlette-exporter``, ``opentelemetry-asgi``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch, LifewatchMiddleware

Scope = dict[str, Any]
_prefixes = itertools.count()
_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"2")]

# What the kubelet (and most clients) send.
KUBELET_HEADERS = [
    (b"host", b"10.0.0.7:8000"),
    (b"user-agent", b"kube-probe/1.31"),
    (b"accept", b"*/*"),
    (b"connection", b"close"),
]


def http_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    """A fresh scope, as a server hands one per request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": list(KUBELET_HEADERS if headers is None else headers),
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> dict[str, Any]:
    return _REQUEST


async def send(message: dict[str, Any]) -> None:
    return None


async def raw_constant(scope: Scope, receive: Any, send: Any) -> None:
    """The floor: a raw ASGI app answering 200 ``ok`` (and speaking lifespan)."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


def fastapi_hello() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def with_lifewatch(app: Any) -> Any:
    """``instrument`` for a Starlette/FastAPI app (as users wire it), else the middleware."""
    from starlette.applications import Starlette

    watch = Lifewatch(service="bench", registry=CollectorRegistry(), drain_delay=0)
    return (
        watch.instrument(app)
        if isinstance(app, Starlette)
        else LifewatchMiddleware(app, watch=watch)
    )


async def postgres() -> bool:
    return True


async def redis() -> bool:
    return True


async def queue() -> bool:
    return True


CHECKS = (postgres, redis, queue)
"""Three readiness checks, always passing: what the probe benchmarks serve."""


def probed(app: Any = None) -> tuple[Lifewatch, Any]:
    """``app`` (the constant app by default) behind lifewatch, with ``CHECKS``
    as interval checks, so probes answer from their cached results."""
    watch = Lifewatch(service="bench", registry=CollectorRegistry(), drain_delay=0)
    for check in CHECKS:
        watch.add_check(check.__name__, check, interval=60)
    return watch, LifewatchMiddleware(raw_constant if app is None else app, watch=watch)


def with_starlette_exporter(app: Any) -> Any:
    from starlette_exporter import PrometheusMiddleware

    # It registers on the global registry: a prefix of its own per instance.
    return PrometheusMiddleware(
        app, app_name="bench", prefix=f"bench{next(_prefixes)}", filter_unhandled_paths=False
    )


def with_otel(app: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider

    # The SDK with no processor: spans are made and dropped, nothing exported.
    return OpenTelemetryMiddleware(app, tracer_provider=TracerProvider())


VARIANTS: dict[str, Callable[[Any], Any]] = {
    "bare": lambda app: app,
    "lifewatch": with_lifewatch,
    "starlette-exporter": with_starlette_exporter,
    "opentelemetry-asgi": with_otel,
}
APPS: dict[str, tuple[Callable[[], Any], str]] = {
    "raw": (lambda: raw_constant, "/hello"),
    "fastapi": (fastapi_hello, "/hello"),
}


def served() -> Any:
    """uvicorn factory: the app and variant named by the environment."""
    import logging

    import structlog

    # lifewatch's state changes are not what is measured: keep them off stdout.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    make, _ = APPS[os.environ["BENCH_APP"]]
    return VARIANTS[os.environ["BENCH_VARIANT"]](make())
