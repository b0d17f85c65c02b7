"""Per-phase cost and import time of two source trees, side by side.

Not a test: a measurement for a change to the phase path, printed as ratios.
Each round runs both trees in fresh interpreters, one after the other, so
drift in a shared machine hits both alike. Run from the repository root:

    python benchmarks/compare_trees.py OLD/src src            # e.g. a worktree of main
    python benchmarks/compare_trees.py OLD/src src --rounds 21

Per phase: 1,000 phases in one startup through ``instrument()`` with the
OpenTelemetry SDK (batch processor, spans dropped), JSON logs through
structlog and the metrics, minus a bare startup of 1,000 empty context
managers; the best of three startups per round. Import: ``from lifewatch import
Lifewatch`` after ``import fastapi``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

PHASES = r"""
import asyncio, contextlib, os, time
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from lifewatch import Lifewatch

class Drop(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=100_000))
structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    wrapper_class=structlog.make_filtering_bound_logger(20),
    logger_factory=structlog.WriteLoggerFactory(open(os.devnull, "w")),
    cache_logger_on_first_use=True,
)
N = 1000

def watched():
    watch = Lifewatch(service="b", registry=CollectorRegistry(), tracer_provider=provider)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for i in range(N):
            async with watch.phase(f"p{i}"):
                pass
        yield

    return watch.instrument(Starlette(lifespan=lifespan))

def bare():
    @contextlib.asynccontextmanager
    async def lifespan(app):
        for _ in range(N):
            async with contextlib.AsyncExitStack():
                pass
        yield

    return Starlette(lifespan=lifespan)

async def startup(app):
    inbox = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message):
        if message["type"].startswith("lifespan.startup"):
            started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    begin = time.perf_counter()
    task = asyncio.ensure_future(app(scope, inbox.get, send))
    await started.wait()
    took = time.perf_counter() - begin
    await inbox.put({"type": "lifespan.shutdown"})
    await task
    return took

async def main():
    lw = min([await startup(watched()) for _ in range(3)])
    floor = min([await startup(bare()) for _ in range(3)])
    print((lw - floor) / N * 1e6)

asyncio.run(main())
"""

IMPORT = (
    "import fastapi, time; t = time.perf_counter(); from lifewatch import Lifewatch; "
    "print((time.perf_counter() - t) * 1000)"
)


def run(code: str, src: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the src directory of the tree to compare against")
    parser.add_argument("new", help="the src directory of the tree under test")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    for what, code, unit in (("per phase, added", PHASES, "µs"), ("import", IMPORT, "ms")):
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.rounds):
            old.append(run(code, args.old))
            new.append(run(code, args.new))
        for name, values in (("old", old), ("new", new)):
            values.sort()
            low, high = values[len(values) // 10], values[-len(values) // 10 - 1]
            median = statistics.median(values)
            spread = f"p10..p90 {low:.1f}..{high:.1f}"
            print(f"{what:17s} {name}: median {median:7.1f} {unit} ({spread})")
        print(f"{what:17s} new / old: {statistics.median(new) / statistics.median(old):.3f}")


if __name__ == "__main__":
    main()
