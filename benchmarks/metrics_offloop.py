"""/metrics rendered on the loop or in a thread: python benchmarks/metrics_offloop.py [mp].

One process (the default registry, its process collector reading /proc) or,
with ``mp``, a multiprocess directory holding the files of 200 workers. The
figures decide where ``MetricsEndpoint`` renders (see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

MULTIPROCESS = sys.argv[1:] == ["mp"]
if MULTIPROCESS:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()

import anyio.to_thread  # noqa: E402
from prometheus_client import REGISTRY, Counter, Gauge, generate_latest, values  # noqa: E402

from lifewatch import Lifewatch  # noqa: E402
from lifewatch._exposition import MetricsEndpoint  # noqa: E402

RUNS = 200


def median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


async def median_hop_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        await anyio.to_thread.run_sync(fn)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    Lifewatch(service="bench")
    if MULTIPROCESS:
        for worker in range(200):  # each "worker" writes its own files
            values.ValueClass = values.MultiProcessValue(lambda pid=100_000 + worker: pid)
            gauge = Gauge(f"g{worker}", "g", ["a"], multiprocess_mode="liveall", registry=None)
            for label in range(5):
                gauge.labels(str(label)).set(label)
            Counter(f"c{worker}", "c", registry=None).inc()
    endpoint = MetricsEndpoint(REGISTRY)

    def render() -> object:
        return endpoint.render("", "")

    what = "multiprocess, 200 workers" if MULTIPROCESS else "one process, default registry"
    print(
        f"{what}: on the loop {median_ms(render):.3f} ms, "
        f"in a thread {asyncio.run(median_hop_ms(render)):.3f} ms, "
        f"generate_latest(REGISTRY) {median_ms(lambda: generate_latest(REGISTRY)):.3f} ms "
        f"(median of {RUNS})"
    )


if __name__ == "__main__":
    main()
