"""The demo app: every lifewatch feature on an embedded default, no outside service.

A FastAPI app whose lifespan loads configuration, opens a database (SQLite in
memory), tries a cache warmup that fails but is not critical, and loads a
"model" in the background while the server already answers probes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog

from ._watch import Lifewatch

MODEL_LOAD_SECONDS = 4.0


def configure_logging(json: bool, verbose: bool = False) -> None:
    """Readable lines in a terminal, JSON for a log pipeline (the demo is an app).

    Phase begin records and one line per finished span are at debug level,
    shown with ``--verbose``.
    """
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if verbose else logging.INFO
        ),
        cache_logger_on_first_use=True,
    )


def configure_tracing() -> Any:
    """The OpenTelemetry SDK, with each finished span logged as one line."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    log = structlog.get_logger("demo.spans")

    class LogExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            for span in spans:
                assert span.end_time is not None and span.start_time is not None
                log.debug(
                    "otel.span",
                    name=span.name,
                    duration_ms=round((span.end_time - span.start_time) / 1e6, 2),
                    status=span.status.status_code.name,
                    trace_id=format(span.context.trace_id, "032x"),
                )
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "lifewatch-demo"}))
    provider.add_span_processor(SimpleSpanProcessor(LogExporter()))
    return provider


def build_app(watch: Lifewatch) -> Any:
    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with watch.phase("load-config"):
            await asyncio.sleep(0.05)
            settings = {"greeting": "hello from lifewatch"}
        async with watch.phase("database", timeout=5):
            db = sqlite3.connect(":memory:", check_same_thread=False)
            async with watch.phase("migrations"):
                db.execute("create table orders (id integer primary key, item text)")
                db.execute("insert into orders (item) values ('coffee'), ('bagel')")
                await asyncio.sleep(0.1)
        async with watch.phase("cache-warmup", critical=False, timeout=1):
            await asyncio.sleep(0.05)
            raise ConnectionRefusedError("redis://cache:6379 refused (there is no cache here)")
        watch.background("model-load", load_model, timeout=60)
        yield {"db": db, "settings": settings}
        async with watch.phase("database"):
            db.close()

    async def load_model() -> None:
        await asyncio.sleep(MODEL_LOAD_SECONDS)

    app = FastAPI(title="lifewatch demo", lifespan=lifespan)

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {"see": ["/livez", "/readyz?verbose", "/startupz", "/metrics"]}

    return watch.instrument(app)
