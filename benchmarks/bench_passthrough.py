"""Request passthrough cost, in process through the ASGI interface (no network).

For a FastAPI "hello" app and a raw ASGI constant app: bare, behind lifewatch,
and for context behind starlette-exporter's middleware and OpenTelemetry's
ASGI middleware. Rounds are interleaved so noise hits every variant alike;
each figure is the median over rounds with its spread.

    python benchmarks/bench_passthrough.py [--requests 20000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch

Scope = dict[str, Any]
_prefixes = itertools.count()


def http_scope(path: str = "/hello") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


async def raw_constant(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


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

    watch = Lifewatch(registry=CollectorRegistry())
    return watch.instrument(app) if isinstance(app, Starlette) else watch.middleware(app)


def with_starlette_exporter(app: Any) -> Any:
    from starlette_exporter import PrometheusMiddleware

    # It registers on the global registry; a prefix of its own per instance.
    return PrometheusMiddleware(
        app, app_name="bench", prefix=f"bench{next(_prefixes)}", filter_unhandled_paths=False
    )


def with_otel(app: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider

    return OpenTelemetryMiddleware(app, tracer_provider=TracerProvider())


async def per_request(app: Any, n: int, path: str) -> float:
    """Microseconds per request; a fresh scope each time, as a server gives."""
    scopes = [http_scope(path) for _ in range(n)]
    start = time.perf_counter()
    for scope in scopes:
        await app(scope, receive, send)
    return (time.perf_counter() - start) / n * 1e6


def run(
    variants: dict[str, Callable[[Any], Any]], base: Callable[[], Any], n: int, rounds: int
) -> dict[str, list[float]]:
    apps = {name: wrap(base()) for name, wrap in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in apps}

    async def go() -> None:
        for app in apps.values():
            await per_request(app, min(n, 2000), "/hello")  # warm-up
        for _ in range(rounds):
            for name, app in apps.items():
                times[name].append(await per_request(app, n, "/hello"))

    asyncio.run(go())
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    bare = times["bare"]
    print(f"\n{title}")
    print(f"{'variant':24}{'µs/req':>9}{'added µs':>10}{'ratio':>8}   ratio spread")
    for name, xs in times.items():
        ratios = [x / b for x, b in zip(xs, bare, strict=True)]
        added = [x - b for x, b in zip(xs, bare, strict=True)]
        print(
            f"{name:24}{statistics.median(xs):9.3f}{statistics.median(added):10.3f}"
            f"{statistics.median(ratios):8.3f}   [{min(ratios):.3f} .. {max(ratios):.3f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    variants: dict[str, Callable[[Any], Any]] = {
        "bare": lambda app: app,
        "lifewatch": with_lifewatch,
        "starlette-exporter": with_starlette_exporter,
        "opentelemetry-asgi": with_otel,
    }
    report("raw ASGI constant app", run(variants, lambda: raw_constant, args.requests, args.rounds))
    report(
        "FastAPI hello app",
        run(variants, fastapi_hello, max(args.requests // 5, 1000), args.rounds),
    )


if __name__ == "__main__":
    main()
