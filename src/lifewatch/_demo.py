"""``python -m lifewatch demo``: every feature, no outside service (the ``demo`` extra).

A FastAPI app whose lifespan loads configuration, opens SQLite in memory,
tries a cache warmup that fails but is not critical, and loads a "model" in
the background while the server already answers probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

import structlog
from fastapi import FastAPI, Request

from ._lifewatch import Lifewatch

MODEL_LOAD_SECONDS = 4.0


def configure_json_logging(level: int = logging.INFO) -> None:
    """One JSON object per line for every record: structlog's, the stdlib's, uvicorn's.

    structlog hands its records to the stdlib, and one ``ProcessorFormatter``
    renders them all; ``ExtraAdder`` turns a stdlib record's ``extra`` into
    fields. uvicorn's loggers send to the root handler too (uvicorn configures
    them before importing the app, so this may run at import).
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def wants_colour(stream: TextIO) -> bool:
    """Colours only on a terminal, and not when ``NO_COLOR`` is set (no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return not os.environ.get("NO_COLOR") and bool(isatty is not None and isatty())


def configure_logging(json: bool, verbose: bool = False, colour: bool = False) -> None:
    """Readable lines in a terminal, JSON for a log pipeline; ``verbose`` shows
    the debug lines (phase begins, one per finished span)."""
    if json:
        configure_json_logging(logging.DEBUG if verbose else logging.INFO)
        return
    renderer = (
        structlog.dev.ConsoleRenderer()
        if colour
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.set_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
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


def build_app(watch: Lifewatch, model_seconds: float = MODEL_LOAD_SECONDS) -> Any:
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with watch.phase("load-config"):
            await asyncio.sleep(0.05)
            settings = {"greeting": "hello from lifewatch"}
        async with watch.phase("database", timeout=5, tags={"engine": "sqlite"}):
            db = sqlite3.connect(":memory:", check_same_thread=False)
            async with watch.phase("migrations"):
                db.execute("create table orders (id integer primary key, item text)")
                db.execute("insert into orders (item) values ('coffee'), ('bagel')")
                await asyncio.sleep(0.1)
        state["db"] = db
        async with watch.phase("cache-warmup", critical=False, timeout=1):
            await asyncio.sleep(0.05)
            raise ConnectionRefusedError("redis://cache:6379 refused (there is no cache here)")
        watch.background("model-load", load_model, timeout=max(60.0, 2 * model_seconds))
        consumer = watch.supervise(asyncio.create_task(consume_orders()), name="order-consumer")
        yield {"db": db, "settings": settings}
        consumer.cancel()
        async with watch.phase("drain-consumer"):
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        async with watch.phase("database"):
            db.close()

    async def load_model() -> None:
        """A slow model load that does not block the server from binding."""
        await asyncio.sleep(model_seconds)

    async def consume_orders() -> None:
        """A task that should run until shutdown: if it dies, /livez fails."""
        orders: asyncio.Queue[str] = asyncio.Queue()
        while True:
            await orders.get()  # no broker here: it waits, as a consumer does

    @watch.check("database", timeout=0.5, interval=2)
    def database() -> bool:
        """Critical, refreshed every 2 s (sync: in a thread)."""
        db = state.get("db")
        return db is not None and db.execute("select 1").fetchone() == (1,)

    @watch.check("cache", critical=False, timeout=0.2)
    async def cache() -> None:
        """Non-critical: it fails, and /readyz says warn, not fail."""
        raise ConnectionRefusedError("redis://cache:6379 refused")

    @watch.check("event-loop", probes=("liveness",), timeout=0.2)
    async def event_loop() -> None:
        """Liveness depends on nothing outside the process."""
        await asyncio.sleep(0)

    app = FastAPI(title="lifewatch demo", lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        orders = request.state.db.execute("select item from orders").fetchall()
        return {
            "greeting": request.state.settings["greeting"],
            "orders": [item for (item,) in orders],
        }

    return watch.instrument(app)
