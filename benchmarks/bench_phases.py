"""Added cost per phase: span + metrics + log record, vs the same empty phases bare.

Runs a Starlette app's lifespan through the ASGI lifespan protocol, whose
startup runs N empty phases, once bare (an empty async context manager) and
once under lifewatch with the OpenTelemetry SDK tracer (batch processor, an
exporter that drops spans) and structlog rendering JSON to /dev/null.
Rounds alternate bare/wrapped so machine noise hits both alike.

    python benchmarks/bench_phases.py [--phases 1000] [--rounds 15] [--log-level debug|info]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Empty:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def drive(app: Any) -> float:
    """Run startup through the lifespan protocol; return its duration in seconds."""
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


def bare_app(names: list[str]) -> Any:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for _name in names:
            async with Empty():
                pass
        yield

    return Starlette(lifespan=lifespan)


def wrapped_app(names: list[str], provider: TracerProvider) -> Any:
    watch = Lifewatch(service="bench", registry=CollectorRegistry(), tracer_provider=provider)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        for name in names:
            async with watch.phase(name):
                pass
        yield

    return watch.instrument(Starlette(lifespan=lifespan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--log-level",
        choices=("debug", "info"),
        default="debug",
        help="debug renders every record (phase begin too); info is a usual production filter",
    )
    args = parser.parse_args()

    devnull = open(os.devnull, "w")  # noqa: SIM115
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=devnull),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if args.log_level == "debug" else logging.INFO
        ),
        cache_logger_on_first_use=True,
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=100_000))
    names = [f"phase-{i}" for i in range(args.phases)]

    async def run() -> tuple[list[float], list[float]]:
        bare: list[float] = []
        wrapped: list[float] = []
        await drive(bare_app(names))  # warm-up
        await drive(wrapped_app(names, provider))
        for _ in range(args.rounds):
            bare.append(await drive(bare_app(names)))
            wrapped.append(await drive(wrapped_app(names, provider)))
        return bare, wrapped

    bare, wrapped = asyncio.run(run())
    provider.shutdown()
    n = args.phases
    per_bare = [t / n * 1e6 for t in bare]
    per_wrapped = [t / n * 1e6 for t in wrapped]
    added = [w - b for w, b in zip(per_wrapped, per_bare, strict=True)]
    ratios = [w / b for w, b in zip(wrapped, bare, strict=True)]

    def spread(xs: list[float]) -> str:
        return f"{statistics.median(xs):9.2f}  [{min(xs):.2f} .. {max(xs):.2f}]"

    print(f"{n} phases per startup, {args.rounds} rounds, interleaved, log level {args.log_level}")
    print(f"{'':28}{'median':>9}  [min .. max]")
    print(f"{'bare, µs/phase':28}{spread(per_bare)}")
    print(f"{'lifewatch, µs/phase':28}{spread(per_wrapped)}")
    print(f"{'added, µs/phase':28}{spread(added)}")
    print(f"{'ratio wrapped/bare':28}{spread(ratios)}")


if __name__ == "__main__":
    main()
