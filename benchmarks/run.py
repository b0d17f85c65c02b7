"""lifewatch's benchmark suite: one command, one table of ratios against guards.

The guards (DESIGN §7) are limits to stay inside with the simplest code, not
targets to chase: the request path within noise of a do-nothing middleware,
uncached ``/readyz`` at most 2x a hand-written gather and never costlier than
fastapi-health, a phase at most 1.5x the same work by hand, ``/metrics`` at
most 1.5x ``generate_latest``, the import at most 1.75x the lighter of
starlette-exporter and prometheus-fastapi-instrumentator.

    PYTHONPATH=src python benchmarks/run.py            # the whole suite (~2.5 min)
    PYTHONPATH=src python benchmarks/run.py --quick    # fewer rounds (~1 min)
    PYTHONPATH=src python benchmarks/run.py --only passthrough,phases

Sections (each contender measured side by side with its floor in one run,
interleaved rounds, see ``timing.py``):

* passthrough: a raw ASGI constant app and a FastAPI "hello" app, bare vs
  behind lifewatch, in process through the ASGI interface; starlette-exporter
  and OpenTelemetry's ASGI middleware for context;
* uvicorn: the same apps served by uvicorn (httptools, uvloop, 1 worker) on
  loopback, loaded by ``wrk``; ratio of requests/s, bare over wrapped;
* phases: added cost per phase (span with the SDK tracer, metrics, JSON log
  records through structlog), 1,000 empty phases per startup, vs the same
  phases as empty context managers;
* probes: ``/readyz`` vs a constant 200 app, and ``/metrics`` vs
  prometheus-client's ``generate_latest`` on the same registry;
* checks: ``/readyz`` with 1, 10 and 100 checks run on every probe (no
  ``interval``), one probe at a time and in bursts of 32, against a
  hand-written ``asyncio.gather`` floor and fastapi-health;
* import: ``import lifewatch`` after ``import fastapi`` in a fresh interpreter;
* memory: 100,000 requests and 100,000 probes, growth of resident memory and
  of live objects after warm-up (``memory.py`` prints the checkpoints).

Not part of the test run: timings on a shared machine are not pass/fail
material for CI; the memory check has its own bounded test
(``tests/perf/test_memory.py``). Beside it, for more detail: ``memory.py`` (the
checkpoints and tracemalloc), ``bench_probes.py`` (``/readyz`` under uvicorn
against fastapi-health) and ``bench_metrics.py`` (``/metrics`` per format).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# No .pyc beside the sources from this run: the "compiled from source" import
# row runs with PYTHONDONTWRITEBYTECODE=1 and must find none there.
sys.dont_write_bytecode = True

from loadgen import uvicorn_servers, wrk  # noqa: E402
from timing import Row, diffs, interleaved, print_table, ratios, timed  # noqa: E402

import apps  # noqa: E402


def quiet() -> None:
    """lifewatch's own log lines (state changes) are not what is measured: keep them out."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


# -- passthrough, in process ------------------------------------------------------


def _requests(app: Any, path: str, n: int) -> Callable[[], Awaitable[float]]:
    async def run() -> None:
        for scope in scopes:
            await app(scope, apps.receive, apps.send)

    scopes: list[dict[str, Any]] = []

    async def batch() -> None:
        # Fresh scopes each batch, as a server gives (made outside the timing).
        scopes[:] = [apps.http_scope(path) for _ in range(n)]

    return _with_setup(batch, run)


def _with_setup(
    setup: Callable[[], Awaitable[None]], run: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[float]]:
    async def batch() -> float:
        await setup()
        t = time.perf_counter()
        await run()
        return time.perf_counter() - t

    return batch


async def passthrough(rounds: int, scale: float) -> list[Row]:
    rows: list[Row] = []
    sizes = {"raw": int(2000 * scale), "fastapi": int(200 * scale)}
    for app_name, (make, path) in apps.APPS.items():
        n = max(sizes[app_name], 10)
        batches = {name: _requests(wrap(make()), path, n) for name, wrap in apps.VARIANTS.items()}
        times = await interleaved(batches, rounds)
        bare = times["bare"]
        label = "raw ASGI app" if app_name == "raw" else "FastAPI hello"
        first = len(rows)
        for name in ("lifewatch", "starlette-exporter", "opentelemetry-asgi"):
            ours = name == "lifewatch"
            if app_name == "raw":
                rows.append(
                    Row(
                        f"{label}: {name}, added per request",
                        diffs(times[name], bare, 1e6 / n),
                        "µs",
                        0.3 if ours else None,
                    )
                )
            rows.append(
                Row(
                    f"{label}: {name} / bare",
                    ratios(times[name], bare),
                    "x",
                    1.01 if ours and app_name == "fastapi" else None,
                )
            )
        per_req = statistics.median(bare) / n * 1e6
        rows[first].note = f"bare {label}: {per_req:.2f} µs/request in process"
    return rows


# -- passthrough, under uvicorn + wrk -----------------------------------------------


def under_uvicorn(rounds: int, seconds: float, variants: Sequence[str]) -> list[Row]:
    if shutil.which("wrk") is None:
        print("wrk not found: skipping the uvicorn section", file=sys.stderr)
        return []
    rows: list[Row] = []
    for app_name in apps.APPS:
        specs = {
            variant: (
                "apps:served",
                ("--factory", "--workers", "1", "--http", "httptools", "--loop", "uvloop"),
                {"BENCH_APP": app_name, "BENCH_VARIANT": variant},
            )
            for variant in variants
        }
        with uvicorn_servers(specs, "/hello") as ports:
            for port in ports.values():
                wrk(port, "/hello", 1, 16)  # warm up
            rps: dict[str, list[float]] = {name: [] for name in ports}
            for r in range(rounds):
                names = list(ports)
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    rps[name].append(wrk(ports[name], "/hello", seconds, 32))
        label = "raw ASGI app" if app_name == "raw" else "FastAPI hello"
        for name in variants[1:]:
            # Time per request, wrapped over bare: > 1 means the wrapper costs.
            row = Row(f"{label}: bare req/s / {name} req/s", ratios(rps["bare"], rps[name]), "x")
            rows.append(row)
        rows[-len(variants) + 1].note = (
            f"bare {label}: {statistics.median(rps['bare']):.0f} req/s "
            f"(wrk -t1 -c32 -d{seconds:g}s, {rounds} interleaved rounds)"
        )
    return rows


# -- phases ---------------------------------------------------------------------


def _phase_span(tracer: Any, context: Any, name: str) -> Any:
    """The span lifewatch makes for a phase, made by hand: the floors' share of the work."""
    return tracer.start_span(
        f"lifespan.startup {name}",
        context=context,
        attributes={
            "lifespan.event": "startup",
            "service.name": "bench",
            "lifespan.phase": name,
            "lifespan.phase.critical": True,
        },
    )


async def phases(rounds: int, count: int) -> list[Row]:
    import structlog
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette

    from lifewatch import Lifewatch
    from lifewatch._lifecycle import Lifecycle
    from lifewatch._lifespan import WatchedLifespan
    from lifewatch._phase import Phase

    class DropExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class Empty:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            return None

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=100_000))
    names = [f"phase-{i}" for i in range(count)]
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230

    def configure(level: int) -> None:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=devnull),
            wrapper_class=structlog.make_filtering_bound_logger(level),
            cache_logger_on_first_use=True,
        )

    def bare_app() -> Any:
        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            for _name in names:
                async with Empty():
                    pass
            yield

        return Starlette(lifespan=lifespan)

    def wrapped_app(sinks: bool = True) -> Any:
        watch = Lifewatch(service="bench", registry=CollectorRegistry(), tracer_provider=provider)
        lc = watch._lifecycle
        if not sinks:
            # lifewatch's phase bookkeeping alone: a lifecycle with no sink.
            lc = Lifecycle(service="bench", startup_timeout=None, shutdown_timeout=20, log=None)
            lc.connect(())

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            for name in names:
                async with Phase(lc, name):
                    pass
            yield

        app = Starlette(lifespan=WatchedLifespan(lc, [("lifespan", lifespan)]))
        return watch.instrument(app) if sinks else app

    def startup(make: Callable[[], Any]) -> Callable[[], Awaitable[float]]:
        async def batch() -> float:
            return await _drive_startup(make())

        return batch

    # The floors: what the user's own stack costs for the same work, with
    # lifewatch nowhere in sight. One SDK span as lifewatch makes it, one
    # JSON record of lifespan.phase.end, one new labelled gauge child set.
    from opentelemetry import trace
    from prometheus_client import Gauge

    tracer = provider.get_tracer("floor")
    root_ctx = trace.set_span_in_context(tracer.start_span("lifespan.startup"))

    async def sdk_span() -> None:
        for name in names:
            span = _phase_span(tracer, root_ctx, name)
            span.set_attribute("lifespan.outcome", "ok")
            span.end()

    async def log_record() -> None:
        log = structlog.get_logger("lifewatch").bind(service="bench")
        ids = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"}
        for name in names:
            log.info(
                "lifespan.phase.end",
                phase=name,
                lifespan_event="startup",
                duration_s=1.2e-05,
                outcome="ok",
                **ids,
            )

    async def by_hand() -> None:
        # The same three things per phase, written by hand, in one loop; and
        # around them what a startup itself reports: a root span, a record
        # when it begins and when it is complete, its duration.
        log = structlog.get_logger("lifewatch").bind(service="bench")
        hand_registry = CollectorRegistry()
        gauge = Gauge("h", "h", ("phase", "event"), registry=hand_registry)
        total = Gauge("t", "t", registry=hand_registry)
        root = tracer.start_span(
            "lifespan.startup", context=trace.set_span_in_context(trace.INVALID_SPAN)
        )
        log.info("lifespan.startup.begin")
        for name in names:
            span = _phase_span(tracer, root_ctx, name)
            async with Empty():
                pass
            span.set_attribute("lifespan.outcome", "ok")
            span.end()
            gauge.labels(name, "startup").set(1.2e-05)
            ctx = span.get_span_context()
            log.info(
                "lifespan.phase.end",
                phase=name,
                lifespan_event="startup",
                duration_s=1.2e-05,
                outcome="ok",
                trace_id=format(ctx.trace_id, "032x"),
                span_id=format(ctx.span_id, "016x"),
            )
        root.set_attribute("lifespan.outcome", "ok")
        root.end()
        total.set(1.2e-05)
        log.info("lifespan.startup.complete", duration_s=1.2e-05, phase_count=count, outcome="ok")

    async def gauge_child() -> None:
        gauge = Gauge("f", "f", ("phase", "event"), registry=CollectorRegistry())
        for name in names:
            gauge.labels(name, "startup").set(1.2e-05)

    rows: list[Row] = []
    for level, label in ((logging.INFO, "INFO"), (logging.DEBUG, "DEBUG")):
        configure(level)
        batches = {"bare": startup(bare_app), "lifewatch": startup(wrapped_app)}
        if level == logging.INFO:
            batches |= {
                "core": startup(lambda: wrapped_app(sinks=False)),
                "by hand": timed(by_hand),
                "span": timed(sdk_span),
                "log": timed(log_record),
                "gauge": timed(gauge_child),
            }
        times = await interleaved(batches, rounds)
        added = diffs(times["lifewatch"], times["bare"], 1e6 / count)
        rows.append(
            Row(
                f"per phase, added (logs at {label})",
                added,
                "µs",
                None,  # context: issue 19 made the ratio to work by hand the guard
                note=(
                    "a production filter: phase.end rendered, phase.begin filtered"
                    if level == logging.INFO
                    else "every record rendered: phase.begin and phase.end"
                ),
            )
        )
        if level != logging.INFO:
            continue
        rows.append(
            Row(
                f"startup with {count:,} phases: lifewatch / (bare + by hand)",
                ratios(
                    times["lifewatch"],
                    [b + h for b, h in zip(times["bare"], times["by hand"], strict=True)],
                ),
                "x",
                1.5,
                note="by hand: per phase a span, a gauge, a JSON record; per startup a root span, "
                "two records, a gauge",
            )
        )
        if count < 100:
            continue
        floors = {
            "span": "  of which SDK: start_span + set_attribute + end",
            "log": "  of which structlog: one JSON record (phase.end)",
            "gauge": "  of which prometheus-client: new labelled child + set",
        }
        for key, title in floors.items():
            rows.append(Row(title, [t * 1e6 / count for t in times[key]], "µs"))
        core = diffs(times["core"], times["bare"], 1e6 / count)
        rows.append(
            Row(
                "  of which lifewatch, phases without sinks",
                core,
                "µs",
                note="records, timing, parent and run bookkeeping, the contextvar",
            )
        )
        hand = [t * 1e6 / count for t in times["by hand"]]
        rows.append(
            Row(
                "  the same three written by hand, in one loop",
                hand,
                "µs",
                note="more than the sum of the three alone: the SDK's batch export thread "
                "takes the GIL whenever a log write releases it; caches",
            )
        )
        rows.append(
            Row(
                "  lifewatch's own: added - by hand",
                diffs(added, hand),
                "µs",
                note="phase bookkeeping + glue: otel context attach/detach, attribute "
                "dict, the fan-out",
            )
        )
    rows += await _stdlib_phases(rounds, names, tracer, root_ctx, startup, wrapped_app, bare_app)
    provider.shutdown()
    quiet()
    devnull.close()
    return rows


async def _stdlib_phases(
    rounds: int,
    names: list[str],
    tracer: Any,
    root_ctx: Any,
    startup: Callable[[Callable[[], Any]], Callable[[], Awaitable[float]]],
    wrapped_app: Callable[[], Any],
    bare_app: Callable[[], Any],
) -> list[Row]:
    """An app that never configured structlog: lifewatch logs through the stdlib.

    Against the same work by hand: the span, the gauge and one stdlib record
    (the app's handler and format) per phase.
    """
    import structlog
    from prometheus_client import CollectorRegistry, Gauge

    structlog.reset_defaults()
    devnull = open(os.devnull, "w")  # noqa: SIM115, ASYNC230
    handler = logging.StreamHandler(devnull)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger("lifewatch"), logging.getLogger("byhand")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    class Empty:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            return None

    async def by_hand() -> None:
        log = loggers[1]
        gauge = Gauge("s", "s", ("phase", "event"), registry=CollectorRegistry())
        for name in names:
            span = _phase_span(tracer, root_ctx, name)
            async with Empty():
                pass
            span.set_attribute("lifespan.outcome", "ok")
            span.end()
            gauge.labels(name, "startup").set(1.2e-05)
            log.info(
                "phase %s ended in %ss: %s",
                name,
                1.2e-05,
                "ok",
                extra={"phase": name, "lifespan_event": "startup", "outcome": "ok"},
            )

    try:
        times = await interleaved(
            {
                "bare": startup(bare_app),
                "lifewatch": startup(wrapped_app),
                "by hand": timed(by_hand),
            },
            rounds,
        )
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
        devnull.close()
    count = len(names)
    added = diffs(times["lifewatch"], times["bare"], 1e6 / count)
    hand = [t * 1e6 / count for t in times["by hand"]]
    return [
        Row(
            "structlog unconfigured: per phase, added / by hand",
            ratios(added, hand),
            "x",
            1.5,
            note="stdlib logging at INFO; by hand: span + gauge + one stdlib record per phase",
        ),
        Row("  per phase, added (stdlib logging)", added, "µs"),
        Row("  span + gauge + stdlib record, by hand", hand, "µs"),
    ]


async def _drive_startup(app: Any) -> float:
    """Seconds from ``lifespan.startup`` to ``lifespan.startup.complete``, then shut down."""
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    started = asyncio.Event()
    done: list[float] = []
    t0 = 0.0

    async def receive() -> dict[str, Any]:
        nonlocal t0
        message = next(messages)
        if message["type"] == "lifespan.startup":
            t0 = time.perf_counter()
        else:
            await started.wait()
        return message

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            done.append(time.perf_counter() - t0)
            started.set()

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return done[0]


# -- probes: /readyz and /metrics ---------------------------------------------------


async def readyz(rounds: int, scale: float) -> list[Row]:
    from asgi_lifespan import LifespanManager

    watch, app = apps.probed()
    endpoint = watch._routes["/readyz"]
    n = max(int(1000 * scale), 10)
    rows: list[Row] = []
    async with LifespanManager(app):
        # Every interval check's first result in, so probes answer from it.
        await asyncio.gather(*(watch.run_check(name) for name in watch.checks))
        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        def calls(target: Any, path: str) -> Callable[[], Awaitable[float]]:
            async def run() -> None:
                for scope in scopes:
                    await target(scope, apps.receive, send)

            scopes: list[dict[str, Any]] = []

            async def setup() -> None:
                scopes[:] = [apps.http_scope(path) for _ in range(n)]
                statuses.clear()

            return _with_setup(setup, run)

        class DoNothing:
            """The least a class-based ASGI middleware can be: the floor for any."""

            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                await self.app(scope, receive, send)

        times = await interleaved(
            {
                "constant": calls(apps.raw_constant, "/readyz"),
                "constant behind a do-nothing middleware": calls(
                    DoNothing(apps.raw_constant), "/readyz"
                ),
                "constant behind middleware": calls(app, "/hello"),
                "/readyz": calls(app, "/readyz"),
                "/readyz endpoint alone": calls(endpoint, "/readyz"),
            },
            rounds,
        )
        assert set(statuses) == {200}, set(statuses)
    base = times["constant"]
    # Context: no middleware can be within 10% of a constant app (issue 19's
    # guards are the request path's and uncached /readyz's).
    rows.append(Row("/readyz / constant 200 app", ratios(times["/readyz"], base), "x"))
    rows.append(
        Row(
            "/readyz / constant app behind the same middleware",
            ratios(times["/readyz"], times["constant behind middleware"]),
            "x",
        )
    )
    rows.append(
        Row(
            "/readyz endpoint alone / constant 200 app",
            ratios(times["/readyz endpoint alone"], base),
            "x",
        )
    )
    rows.append(
        Row(
            "lifewatch middleware, added per request",
            diffs(times["constant behind middleware"], base, 1e9 / n),
            "ns",
            note=f"constant 200 app: {statistics.median(base) / n * 1e9:.0f} ns/request",
        )
    )
    rows.append(
        Row(
            "a do-nothing class middleware, added per request",
            diffs(times["constant behind a do-nothing middleware"], base, 1e9 / n),
            "ns",
            note="the floor for anything served behind a middleware: "
            "an instance call and one more coroutine",
        )
    )
    return rows


async def uncached_checks(rounds: int, scale: float) -> list[Row]:
    """``/readyz`` running its checks on every probe, against the least that can.

    The checks are trivial (an ``async def`` returning None), so what is
    measured is the machinery around them. The floor is a raw ASGI app doing
    ``asyncio.gather`` of the same checks and answering 200; fastapi-health
    is the same checks behind ``fastapi_health.health`` on a FastAPI route.
    One probe at a time, and bursts of 32 concurrent probes (lifewatch's
    concurrent probes share one run of each check; the others run them all).
    """
    from asgi_lifespan import LifespanManager
    from fastapi import FastAPI
    from fastapi_health import health  # type: ignore[import-untyped]
    from prometheus_client import CollectorRegistry

    from lifewatch import Lifewatch, LifewatchMiddleware

    def make_checks(count: int) -> list[Callable[[], Awaitable[bool]]]:
        def one(i: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return True

            check.__name__ = f"check{i}"
            return check

        return [one(i) for i in range(count)]

    rows: list[Row] = []
    for count in (1, 10, 100):
        checks = make_checks(count)

        async def floor(scope: Any, receive: Any, send: Any, checks: Any = checks) -> None:
            results = await asyncio.gather(*(c() for c in checks))
            status = 200 if all(results) else 503
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})

        watch = Lifewatch(service="bench", registry=CollectorRegistry(), drain_delay=0)
        for check in checks:
            watch.add_check(check.__name__, check)
        ours = LifewatchMiddleware(apps.raw_constant, watch=watch)
        peer = FastAPI()
        peer.add_api_route("/readyz", health(list(checks)))
        n = max(int((200 if count < 100 else 40) * scale), 5)
        statuses: list[int] = []

        async def send(message: dict[str, Any], statuses: list[int] = statuses) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        def one_at_a_time(target: Any, n: int = n) -> Callable[[], Awaitable[float]]:
            scopes: list[dict[str, Any]] = []

            async def setup() -> None:
                scopes[:] = [apps.http_scope("/readyz") for _ in range(n)]

            async def run() -> None:
                for scope in scopes:
                    await target(scope, apps.receive, send)

            return _with_setup(setup, run)

        def bursts(target: Any, n: int = n) -> Callable[[], Awaitable[float]]:
            groups: list[list[dict[str, Any]]] = []

            async def setup() -> None:
                groups[:] = [
                    [apps.http_scope("/readyz") for _ in range(32)] for _ in range(max(n // 8, 2))
                ]

            async def run() -> None:
                for group in groups:
                    await asyncio.gather(*(target(sc, apps.receive, send) for sc in group))

            return _with_setup(setup, run)

        probes = {"one at a time": n, "bursts of 32": max(n // 8, 2) * 32}

        async with LifespanManager(ours), LifespanManager(peer):
            for mode, make in (("one at a time", one_at_a_time), ("bursts of 32", bursts)):
                times = await interleaved(
                    {"floor": make(floor), "lifewatch": make(ours), "fastapi-health": make(peer)},
                    max(rounds // 2, 5),
                )
                assert set(statuses) == {200}, set(statuses)
                statuses.clear()
                label = f"/readyz, {count} uncached check{'s' if count > 1 else ''}, {mode}"
                rows.append(
                    Row(
                        f"{label}: lifewatch / gather floor",
                        ratios(times["lifewatch"], times["floor"]),
                        "x",
                        2.0,
                        note=f"floor: {statistics.median(times['floor']) / probes[mode] * 1e6:.1f}"
                        " µs per probe",
                    )
                )
                rows.append(
                    Row(
                        f"{label}: lifewatch / fastapi-health",
                        ratios(times["lifewatch"], times["fastapi-health"]),
                        "x",
                        1.0,
                    )
                )
    return rows


async def metrics(rounds: int, scale: float) -> list[Row]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
    from starlette.applications import Starlette

    from lifewatch import Lifewatch
    from lifewatch._metrics import metrics_for

    quiet()
    registry = CollectorRegistry()
    watch = Lifewatch(service="bench", registry=registry)
    families = metrics_for(registry, "lifespan")  # the watch's own, shared per registry

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for i in range(50):
            async with watch.phase(f"phase-{i:02d}", critical=i % 10 != 0):
                if i % 10 == 0:
                    raise RuntimeError("non-critical failure")
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    for i in range(10):
        check = f"check-{i}"
        families.check_status.labels(check, "readiness").set(1)
        for j in range(20):
            families.check_duration.labels(check).observe(0.001 * (j + 1))
        families.check_failures.labels(check, "error").inc()
    await _drive_startup(app)
    quiet()

    om = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    n = max(int(20 * scale), 5)
    rows: list[Row] = []
    cases: list[tuple[str, list[tuple[bytes, bytes]], Callable[[], bytes]]] = [
        ("text (curl)", [], lambda: generate_latest(registry)),
        (
            "OpenMetrics (Prometheus)",
            [(b"accept", om.encode())],
            lambda: openmetrics_latest(registry),  # type: ignore[no-untyped-call]
        ),
    ]
    for label, headers, floor in cases:
        endpoint = watch._routes["/metrics"]
        scope = apps.http_scope("/metrics", headers)

        async def ours(endpoint: Any = endpoint, scope: dict[str, Any] = scope) -> None:
            for _ in range(n):
                await endpoint(scope, apps.receive, apps.send)

        async def base(floor: Callable[[], bytes] = floor) -> None:
            for _ in range(n):
                floor()

        times = await interleaved({"floor": timed(base), "ours": timed(ours)}, rounds)
        rows.append(
            Row(
                f"/metrics {label} / generate_latest",
                ratios(times["ours"], times["floor"]),
                "x",
                1.5,
                note=f"floor: {statistics.median(times['floor']) / n * 1e6:.0f} µs per render "
                f"({len(generate_latest(registry))} bytes, 50 phases, 10 checks)",
            )
        )
    return rows


# -- import -------------------------------------------------------------------

IMPORT_PROBE = """
import time
import fastapi
t = time.perf_counter()
{statement}
t1 = time.perf_counter()
{construct}
print(t1 - t, time.perf_counter() - t1)
"""

IMPORT_PEERS = {
    # What an app writes to get the names it uses: what each import costs it.
    "lifewatch": ("lifewatch", "from lifewatch import Lifewatch", "Lifewatch(service='x')"),
    "starlette-exporter": (
        "starlette_exporter",
        "from starlette_exporter import PrometheusMiddleware, handle_metrics",
        "pass",
    ),
    "prometheus-fastapi-instrumentator": (
        "prometheus_fastapi_instrumentator",
        "from prometheus_fastapi_instrumentator import Instrumentator",
        "pass",
    ),
}


def import_cost(rounds: int) -> list[Row]:
    """Milliseconds, as installed (bytecode cached) and compiled from source each time.

    The import is what an app writes (``from lifewatch import Lifewatch``),
    timed after ``import fastapi`` in a fresh interpreter; building the
    default ``Lifewatch(service="x")``, which an app also does at import,
    is its own row. pip writes ``.pyc`` files when it installs a wheel; a
    source checkout run with ``PYTHONDONTWRITEBYTECODE=1`` compiles every
    module on every start. The cached figure is the one users see; the
    other is shown for context.
    """
    import tempfile

    def probe(env: dict[str, str], name: str = "lifewatch") -> tuple[float, float]:
        _, statement, construct = IMPORT_PEERS[name]
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE.format(statement=statement, construct=construct)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        imported, built = out.stdout.strip().splitlines()[-1].split()
        return float(imported) * 1000, float(built) * 1000

    import importlib.util

    peers = [k for k, (m, _, _) in IMPORT_PEERS.items() if importlib.util.find_spec(m) is not None]
    skip = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    base = {k: v for k, v in os.environ.items() if k not in skip}
    with tempfile.TemporaryDirectory() as cache:
        cached_env = {**base, "PYTHONPYCACHEPREFIX": cache}
        source_env = {**base, "PYTHONDONTWRITEBYTECODE": "1"}
        for name in peers:
            probe(cached_env, name)  # fills the cache
        cached: dict[str, list[float]] = {name: [] for name in peers}
        built: list[float] = []
        source: list[float] = []
        for _ in range(rounds):
            for name in peers:  # interleaved, side by side
                imported, made = probe(cached_env, name)
                cached[name].append(imported)
                if name == "lifewatch":
                    built.append(made)
            source.append(probe(source_env)[0])
    rows = [
        Row(
            "from lifewatch import Lifewatch, after fastapi (bytecode cached)",
            cached["lifewatch"],
            "ms",
        ),
        Row(
            'Lifewatch(service="x"), just after',
            built,
            "ms",
            note="what an app also runs at import; instrument() loads no more modules",
        ),
        Row(
            "from lifewatch import Lifewatch, after fastapi (compiled from source)",
            source,
            "ms",
            note="a checkout run with PYTHONDONTWRITEBYTECODE=1; pip-installed wheels have .pyc",
        ),
    ]
    for name in peers:
        if name != "lifewatch":
            rows.append(
                Row(
                    f"lifewatch import / {name} import (after fastapi)",
                    ratios(cached["lifewatch"], cached[name]),
                    "x",
                )
            )
    lighter = [n for n in ("starlette-exporter", "prometheus-fastapi-instrumentator") if n in peers]
    if lighter:
        floor = [min(times) for times in zip(*(cached[n] for n in lighter), strict=True)]
        rows.append(
            Row(
                "lifewatch import / the lighter of starlette-exporter and "
                "prometheus-fastapi-instrumentator",
                ratios(cached["lifewatch"], floor),
                "x",
                1.75,
            )
        )
    for name in peers:
        if name != "lifewatch":
            rows.append(Row(f"{name} import, for reference", cached[name], "ms"))
    return rows


# -- memory ---------------------------------------------------------------------


def memory(requests: int) -> list[Row]:
    import memory as mem

    report = asyncio.run(mem.measure(requests, checkpoints=4, verbose=False))
    rows = []
    for what, (rss_kib, objects) in report.items():
        rows.append(Row(f"{what}: resident memory growth", [rss_kib], "KiB", 1024.0))
        rows.append(Row(f"{what}: live objects growth", [objects], "objects", 100.0))
    rows[0].note = f"after warm-up, over {requests:,} requests each (memory.py prints checkpoints)"
    return rows


# -- main ---------------------------------------------------------------------

SECTIONS = ("passthrough", "uvicorn", "phases", "probes", "checks", "import", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~1 min)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--rounds", type=int, help="interleaved rounds in process")
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    rounds = args.rounds or (15 if args.quick else 41)
    scale = 0.5 if args.quick else 1.0
    started = time.monotonic()

    logging.basicConfig(level=logging.CRITICAL)
    quiet()

    sections: list[tuple[str, list[Row]]] = []
    if "passthrough" in only:
        sections.append(("passthrough, in process", asyncio.run(passthrough(rounds, scale))))
    if "uvicorn" in only:
        variants = list(apps.VARIANTS)
        if args.quick:
            variants = variants[:2]
        sections.append(
            (
                "passthrough under uvicorn (httptools, uvloop) + wrk, loopback",
                under_uvicorn(2 if args.quick else 5, 1 if args.quick else 2, variants),
            )
        )
    if "phases" in only:
        phase_rows = asyncio.run(phases(rounds // 2, 1000))
        # A startup's fixed cost: context (issue 19 retired its target).
        phase_rows += [
            dataclasses.replace(r, target=None)
            for r in asyncio.run(phases(rounds, 10))
            if r.unit == "x"
        ]
        sections.append(("phases: SDK tracer + JSON logs + metrics", phase_rows))
    if "probes" in only:
        probe_rows = asyncio.run(readyz(rounds, scale))
        probe_rows += asyncio.run(metrics(rounds, scale))
        sections.append(("probes, in process", probe_rows))
    if "checks" in only:
        sections.append(
            (
                "/readyz with uncached checks, in process",
                asyncio.run(uncached_checks(rounds, scale)),
            )
        )
    if "import" in only:
        sections.append(("import, fresh interpreter", import_cost(7 if args.quick else 15)))
    if "memory" in only:
        sections.append(("memory", memory(20_000 if args.quick else 100_000)))

    print(
        f"\nlifewatch benchmarks: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{rounds} interleaved rounds, {time.monotonic() - started:.0f} s"
    )
    print("median over rounds; spread p10..p90 (min..max under 10 rounds)\n")
    print_table(sections)


if __name__ == "__main__":
    main()
