"""How much does serving /metrics cost over prometheus-client's own rendering?

Not a test. Registers 50 phases and 10 checks on a fresh registry, then times,
in interleaved rounds, a GET of /metrics through lifewatch's ASGI endpoint
against prometheus-client's encoder on the same registry (the floor). Prints
the median time per render and the ratio, with the spread over rounds.

    PYTHONPATH=src python benchmarks/bench_metrics.py [--rounds 30] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from starlette.applications import Starlette

from lifewatch import Lifewatch
from lifewatch._metrics import metrics_for

PHASES, CHECKS = 50, 10
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


async def build() -> tuple[CollectorRegistry, Any]:
    registry = CollectorRegistry()
    watch = Lifewatch(service="bench", registry=registry)
    families = metrics_for(registry, "lifespan")  # the watch's own, shared per registry

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for i in range(PHASES):
            async with watch.phase(f"phase-{i:02d}", critical=i % 10 != 0):
                if i % 10 == 0:
                    raise RuntimeError("non-critical failure")
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    for i in range(CHECKS):
        check = f"check-{i}"
        families.check_status.labels(check, "readiness").set(1)
        for j in range(20):
            families.check_duration.labels(check).observe(0.001 * (j + 1))
        families.check_failures.labels(check, "error").inc()
    # Run the startup through the lifespan protocol, so every family is filled.
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    task = asyncio.get_running_loop().create_task(app({"type": "lifespan"}, queue.get, send))
    await started.wait()
    app.state.lifespan_task = task
    return registry, app


def scope(accept: str, encoding: str) -> dict[str, Any]:
    headers = [(b"accept", accept.encode())] if accept else []
    if encoding:
        headers.append((b"accept-encoding", encoding.encode()))
    return {"type": "http", "method": "GET", "path": "/metrics", "headers": headers}


async def time_endpoint(app: Any, sc: dict[str, Any], calls: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    t = time.perf_counter()
    for _ in range(calls):
        await app(sc, receive, send)
    return (time.perf_counter() - t) / calls


def time_floor(render: Callable[[], bytes], calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        render()
    return (time.perf_counter() - t) / calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="renders per round and side")
    args = parser.parse_args()
    # The phases' log lines are not what is measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    registry, app = await build()
    text_size = len(generate_latest(registry))
    cases = [
        ("text (curl)", scope("", ""), lambda: generate_latest(registry)),
        ("openmetrics", scope(OPENMETRICS, ""), lambda: openmetrics_latest(registry)),  # type: ignore[no-untyped-call]
        (
            "openmetrics+gzip (Prometheus)",
            scope(OPENMETRICS, "gzip"),
            lambda: openmetrics_latest(registry),  # type: ignore[no-untyped-call]
        ),
    ]
    print(
        f"{PHASES} phases, {CHECKS} checks: {text_size} bytes of text exposition; "
        f"{args.rounds} interleaved rounds x {args.calls} renders"
    )
    print(f"{'format':32} {'endpoint':>10} {'floor':>10} {'ratio':>7} {'ratio p10-p90':>15}")
    for name, sc, floor in cases:
        ours: list[float] = []
        base: list[float] = []
        ratios: list[float] = []
        await time_endpoint(app, sc, args.calls)  # warm up both sides
        time_floor(floor, args.calls)
        gc.collect()
        for r in range(args.rounds):
            # Alternate which side goes first, so drift hurts both alike.
            if r % 2:
                b = time_floor(floor, args.calls)
                o = await time_endpoint(app, sc, args.calls)
            else:
                o = await time_endpoint(app, sc, args.calls)
                b = time_floor(floor, args.calls)
            ours.append(o)
            base.append(b)
            ratios.append(o / b)
        deciles = statistics.quantiles(ratios, n=10)
        o_us, b_us = statistics.median(ours) * 1e6, statistics.median(base) * 1e6
        print(
            f"{name:32} {o_us:8.0f}us {b_us:8.0f}us "
            f"{statistics.median(ratios):7.3f} {deciles[0]:7.3f}-{deciles[-1]:.3f}"
        )
    app.state.lifespan_task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
