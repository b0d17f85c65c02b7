"""Configure the OpenTelemetry SDK and structlog (JSON) in your app: once, at
startup, before the first request. lifewatch uses the global tracer provider
(or ``Lifewatch(tracer_provider=...)``) and the structlog configuration you set;
it never configures either itself.

    python -m examples.observability     # runs the FastAPI example's lifespan
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def configure(
    service: str, *, out: TextIO = sys.stdout, exporter: SpanExporter | None = None
) -> TracerProvider:
    # Traces: in production, OTLPSpanExporter from opentelemetry-exporter-otlp.
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter or ConsoleSpanExporter(out=out)))
    trace.set_tracer_provider(provider)

    # Logs: one JSON object per line; lifewatch adds service, trace_id, span_id.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    return provider


if __name__ == "__main__":
    provider = configure("orders")
    from starlette.testclient import TestClient

    from examples.fastapi_lifespan import app

    with TestClient(app):
        pass
    provider.shutdown()
