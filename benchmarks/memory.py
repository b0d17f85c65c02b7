"""Does lifewatch hold on to anything per request? 100,000 of each, memory at checkpoints.

    PYTHONPATH=src python benchmarks/memory.py [--requests 100000] [--no-tracemalloc]

In process through the ASGI interface: requests passing through the
middleware to a raw app, ``/readyz`` probes on the kept-answer path, and
``/readyz?verbose`` on the path that builds its answer each time. After a
warm-up, it prints at each checkpoint the resident memory (``/proc/self/statm``),
the live objects the collector tracks (``len(gc.get_objects())``) and the
allocated blocks (``sys.getallocatedblocks()``, untracked objects too); then,
with tracemalloc, the largest growths between the first and last checkpoint.
Flat means: what is there after 1,000 requests is what is there after 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import apps

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_kib() -> float:
    """Resident memory now (not the peak, which ``resource`` would give)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1024


def live() -> tuple[float, int, int]:
    gc.collect()
    return rss_kib(), len(gc.get_objects()), sys.getallocatedblocks()


async def measure(
    requests: int, *, checkpoints: int = 5, verbose: bool = True, trace: bool = False
) -> dict[str, tuple[float, int]]:
    """Growth (resident KiB, live objects) after warm-up, per kind of request."""
    from asgi_lifespan import LifespanManager

    watch, app = apps.probed()
    kinds = {
        "passthrough (middleware)": ("/hello", b""),
        "/readyz (kept answer)": ("/readyz", b""),
        "/readyz?verbose (built each time)": ("/readyz", b"verbose"),
    }
    result: dict[str, tuple[float, int]] = {}
    async with LifespanManager(app):
        await asyncio.gather(*(watch.run_check(name) for name in watch.checks))
        for kind, (path, query) in kinds.items():

            async def burst(count: int, path: str = path, query: bytes = query) -> None:
                for _ in range(count):
                    scope = apps.http_scope(path)
                    scope["query_string"] = query
                    await app(scope, apps.receive, apps.send)

            await burst(1000)  # warm-up: first-call caches, kept answers
            if trace:
                tracemalloc.start()
            before = live()
            snapshot = tracemalloc.take_snapshot() if trace else None
            if verbose:
                print(f"\n{kind}: {requests:,} requests")
                print(f"{'requests':>10}{'RSS KiB':>12}{'gc objects':>12}{'alloc blocks':>14}")
                print(f"{0:>10}{before[0]:>12.0f}{before[1]:>12}{before[2]:>14}")
            step = requests // checkpoints
            now = before
            for i in range(1, checkpoints + 1):
                await burst(step)
                now = live()
                if verbose:
                    print(f"{i * step:>10}{now[0]:>12.0f}{now[1]:>12}{now[2]:>14}")
            if snapshot is not None:
                top = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")[:3]
                tracemalloc.stop()
                print("  tracemalloc, largest growth:")
                for stat in top:
                    print(f"    {stat}")
            result[kind] = (now[0] - before[0], now[1] - before[1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--no-tracemalloc", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    result = asyncio.run(measure(args.requests, trace=not args.no_tracemalloc))
    print("\ngrowth after warm-up:")
    for kind, (kib, objects) in result.items():
        print(f"  {kind:<36} {kib:+8.0f} KiB resident {objects:+6d} live objects")


if __name__ == "__main__":
    main()
