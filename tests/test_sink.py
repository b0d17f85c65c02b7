"""The three signals: spans, metrics and logs, from one record per phase event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asgi_lifespan import LifespanManager
from opentelemetry import trace
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lifewatch import Lifewatch, PhaseRecord, Sink
from lifewatch._process import process_start_time
from tests.conftest import Spans, sample


def build(watch: Lifewatch) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("database", timeout=5, tags={"pool": "main"}):
            await asyncio.sleep(0.01)
        async with watch.phase("cache", critical=False):
            raise ConnectionError("no redis")
        yield
        async with watch.phase("database"):
            pass

    async def current_span(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(trace.get_current_span().get_span_context().is_valid))

    return Starlette(lifespan=lifespan, routes=[Route("/span", current_span)])


def test_spans_roots_children_attributes_and_link(watch: Lifewatch, spans: Spans) -> None:
    app = watch.instrument(build(watch))
    with TestClient(app) as client:
        # No span stays open while serving: nothing lifewatch started is current.
        assert client.get("/span").text == "False"
        assert {s.name for s in spans.finished()} >= {"lifespan.startup"}
    startup = spans.named("lifespan.startup")
    shutdown = spans.named("lifespan.shutdown")
    db = spans.named("lifespan.startup database")
    assert startup.parent is None and shutdown.parent is None
    assert startup.context.trace_id != shutdown.context.trace_id  # two traces
    assert [link.context.span_id for link in shutdown.links] == [startup.context.span_id]
    wrapper = spans.named("lifespan.startup lifespan")  # the user's lifespan as a whole
    assert wrapper.parent is not None and wrapper.parent.span_id == startup.context.span_id
    assert db.parent is not None and db.parent.span_id == wrapper.context.span_id
    assert db.attributes == {
        "lifespan.event": "startup",
        "service.name": "test",
        "lifespan.phase": "database",
        "lifespan.phase.critical": True,
        "lifespan.phase.timeout": 5.0,
        "lifespan.tag.pool": "main",
        "lifespan.outcome": "ok",
    }
    cache = spans.named("lifespan.startup cache")
    assert cache.status.status_code.name == "ERROR"
    assert cache.attributes["lifespan.outcome"] == "degraded"
    assert cache.events[0].attributes["exception.type"] == "ConnectionError"
    down = spans.named("lifespan.shutdown database")
    assert down.parent is not None
    assert down.parent.span_id == spans.named("lifespan.shutdown lifespan").context.span_id
    assert all(s.end_time is not None for s in spans.finished())


def test_metrics_for_phases_runs_and_state(watch: Lifewatch, registry: CollectorRegistry) -> None:
    with TestClient(watch.instrument(build(watch))):
        pass
    db = sample(registry, "lifespan_phase_duration_seconds", phase="database", event="startup")
    assert db is not None and db >= 0.01
    # parent: the enclosing phase (instrument() makes the app's lifespan one), "" at top level
    assert (
        sample(
            registry,
            "lifespan_phase_duration_seconds",
            phase="database",
            parent="lifespan",
            event="startup",
        )
        == db
    )
    assert (
        sample(
            registry,
            "lifespan_phase_duration_seconds",
            phase="lifespan",
            parent="",
            event="startup",
        )
        is not None
    )
    boot = sample(registry, "lifespan_boot_duration_seconds")
    assert boot is not None and 0 < boot < time.time() - process_start_time()
    assert (
        sample(registry, "lifespan_phase_duration_seconds", phase="database", event="shutdown")
        is not None
    )
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="cache",
            event="startup",
            reason="error",
        )
        == 1
    )
    assert (
        sample(
            registry,
            "lifespan_phase_failures_total",
            phase="database",
            event="startup",
            reason="error",
        )
        is None
    )
    startup = sample(registry, "lifespan_startup_duration_seconds")
    assert startup is not None and startup >= db
    assert sample(registry, "lifespan_shutdown_duration_seconds") is not None
    assert sample(registry, "lifespan_state", state="stopped") == 1
    assert (
        sum(
            sample(registry, "lifespan_state", state=s) or 0
            for s in ("starting", "ready", "draining", "stopping", "stopped", "failed")
        )
        == 1
    )


def test_log_events_carry_service_and_span_ids(
    watch: Lifewatch, spans: Spans, logs: list[dict[str, Any]]
) -> None:
    with TestClient(watch.instrument(build(watch))):
        pass
    events = [e["event"] for e in logs]
    for name in (
        "lifespan.startup.begin",
        "lifespan.phase.begin",
        "lifespan.phase.end",
        "lifespan.phase.failed",
        "lifespan.startup.complete",
        "lifespan.state",
        "lifespan.shutdown.begin",
        "lifespan.shutdown.complete",
    ):
        assert name in events, name
    assert all(e["service"] == "test" for e in logs)
    db_end = next(
        e for e in logs if e["event"] == "lifespan.phase.end" and e["phase"] == "database"
    )
    span = spans.named("lifespan.startup database")
    assert db_end["trace_id"] == format(span.context.trace_id, "032x")
    assert db_end["span_id"] == format(span.context.span_id, "016x")
    assert db_end["lifespan_event"] == "startup" and db_end["outcome"] == "ok"
    assert db_end["duration_s"] >= 0.01
    failed = next(e for e in logs if e["event"] == "lifespan.phase.failed")
    assert failed["phase"] == "cache" and failed["reason"] == "error"
    # The traceback as text lifewatch rendered and scrubbed, never the exception.
    assert "exc_info" not in failed
    assert failed["exception"].startswith("Traceback (most recent call last)")
    assert "ConnectionError" in failed["exception"]
    complete = next(e for e in logs if e["event"] == "lifespan.startup.complete")
    assert complete["phase_count"] == 3 and complete["outcome"] == "degraded"
    assert complete["trace_id"] == format(spans.named("lifespan.startup").context.trace_id, "032x")


def test_two_watches_in_one_process_do_not_collide(registry: CollectorRegistry) -> None:
    first = Lifewatch(service="a", registry=registry)
    second = Lifewatch(service="b", registry=registry)
    other_ns = Lifewatch(service="c", registry=registry, namespace="other")
    for w, name in ((first, "one"), (second, "two"), (other_ns, "three")):

        @asynccontextmanager
        async def lifespan(app: Any, w: Lifewatch = w, name: str = name) -> AsyncIterator[None]:
            async with w.phase(name):
                pass
            yield

        with TestClient(w.instrument(Starlette(lifespan=lifespan))):
            pass
    assert sample(registry, "lifespan_phase_duration_seconds", phase="one", event="startup")
    assert sample(registry, "lifespan_phase_duration_seconds", phase="two", event="startup")
    assert sample(registry, "other_phase_duration_seconds", phase="three", event="startup")
    # the global registry too: constructing twice must not raise "Duplicated timeseries"
    Lifewatch()
    Lifewatch()


class Collecting(Sink):
    def __init__(self) -> None:
        self.ended: list[PhaseRecord] = []

    def phase_end(self, phase: PhaseRecord) -> None:
        self.ended.append(phase)


class Exploding(Sink):
    def phase_begin(self, phase: PhaseRecord) -> None:
        raise RuntimeError("sink bug")


async def test_a_sink_is_one_class_and_a_broken_sink_breaks_nothing(
    registry: CollectorRegistry,
) -> None:
    collecting = Collecting()
    watch = Lifewatch(registry=registry, sinks=(Exploding(), collecting))

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("db"):
            pass
        yield

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        pass
    assert [p.name for p in collecting.ended] == ["db", "lifespan", "lifespan"]


def test_making_a_lifewatch_logs_nothing(logs: list[dict[str, Any]]) -> None:
    """It is often made at import, before the app configures structlog."""
    Lifewatch(registry=CollectorRegistry())
    assert logs == []


def test_logs_follow_a_structlog_configuration_made_after_the_lifewatch() -> None:
    """The usual order: ``watch = Lifewatch(...)`` at import, structlog set up in main()."""
    import io
    import json
    import logging

    import structlog

    watch = Lifewatch(service="late", registry=CollectorRegistry())
    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    try:
        with TestClient(watch.instrument(Starlette())):
            pass
    finally:
        structlog.reset_defaults()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {r["event"] for r in records} >= {"lifespan.startup.complete", "lifespan.state"}
    assert all(r["service"] == "late" for r in records)
    assert "lifespan.phase.begin" not in {r["event"] for r in records}  # debug, filtered
