"""What a ``/readyz`` request costs: in process, and under uvicorn with wrk.

Not a test: a measurement, printed as a table. Run from the repository root:

    PYTHONPATH=src python benchmarks/bench_probes.py            # both parts
    PYTHONPATH=src python benchmarks/bench_probes.py --no-wrk   # in process only

In process, each ASGI app is called directly (the scope, ``receive`` and
``send`` a server would hand over, minus the server), in interleaved rounds so
that drift in the machine hits every contender alike; the figure is the median
per-request time and the ratio of medians, with the spread over rounds.

Contenders:

* ``constant``: a raw ASGI app that answers a constant 200 ``ok``;
* ``lifewatch /readyz``: that app behind ``LifewatchMiddleware``, ``/readyz``
  with three ``interval`` checks (so their results are cached, as in production);
* ``pass-through``: a non-probe path through the same middleware (the cost the
  middleware adds to every other request of the app);
* under uvicorn only, ``fastapi-health``: FastAPI with ``fastapi_health.health``
  serving the same three checks (which it runs on every request).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import uvicorn_servers, wrk

import apps

constant_app = apps.raw_constant  # the baseline: a raw ASGI app answering 200 ``ok``


lifewatch_watch, lifewatch_app = apps.probed(constant_app)


def make_fastapi_health_app() -> Any:
    from fastapi import FastAPI
    from fastapi_health import health  # type: ignore[import-untyped]

    app = FastAPI()
    app.add_api_route("/readyz", health(list(apps.CHECKS)))
    return app


try:
    fastapi_health_app = make_fastapi_health_app()
except ImportError:  # pragma: no cover - only the uvicorn part needs it
    fastapi_health_app = None


# -- in process -------------------------------------------------------------


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        # What the kubelet sends.
        "headers": [
            (b"host", b"10.0.0.7:8000"),
            (b"user-agent", b"kube-probe/1.31"),
            (b"accept", b"*/*"),
            (b"connection", b"close"),
        ],
        "client": ("10.0.0.1", 40000),
        "server": ("10.0.0.7", 8000),
    }


async def _time_calls(app: Any, path: str, n: int) -> float:
    scope = _scope(path)
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.perf_counter()
    for _ in range(n):
        await app(scope, receive, send)
    elapsed = time.perf_counter() - start
    assert set(statuses) == {200}, set(statuses)
    return elapsed / n


async def in_process(rounds: int, n: int) -> dict[str, list[float]]:
    from asgi_lifespan import LifespanManager

    async with LifespanManager(lifewatch_app):
        # Every interval check's first result in, so probes answer from it.
        await asyncio.gather(*(lifewatch_watch.run_check(n) for n in lifewatch_watch.checks))
        contenders = {
            "constant": (constant_app, "/readyz"),
            "lifewatch /readyz": (lifewatch_app, "/readyz"),
            "pass-through": (lifewatch_app, "/orders"),
        }
        for app, path in contenders.values():  # warm up
            await _time_calls(app, path, n // 10)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, (app, path) in contenders.items():
                times[name].append(await _time_calls(app, path, n))
    return times


# -- under uvicorn, with wrk ------------------------------------------------


def under_uvicorn(
    rounds: int, seconds: int, connections: int, server_args: list[str]
) -> dict[str, list[float]]:
    targets = {"constant": "constant_app", "lifewatch /readyz": "lifewatch_app"}
    if fastapi_health_app is not None:
        targets["fastapi-health"] = "fastapi_health_app"
    specs = {name: (f"bench_probes:{target}", server_args, {}) for name, target in targets.items()}
    with uvicorn_servers(specs, "/readyz") as ports:
        for port in ports.values():
            wrk(port, "/readyz", 1, connections)  # warm up
        rps: dict[str, list[float]] = {name: [] for name in ports}
        for _ in range(rounds):
            for name, port in ports.items():
                rps[name].append(wrk(port, "/readyz", seconds, connections))
        return rps


# -- report -----------------------------------------------------------------


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved in-process rounds")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per in-process round")
    parser.add_argument("--wrk-rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-wrk", action="store_true", help="skip the uvicorn + wrk part")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    times = asyncio.run(in_process(args.rounds, args.calls))
    base = times["constant"]
    print(f"\nIn process: {args.rounds} interleaved rounds x {args.calls} calls")
    print(f"{'contender':<22}{'median ns/req':>14}{'ratio':>9}{'ratio spread':>16}")
    for name, values in times.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"{name:<22}{statistics.median(values) * 1e9:>14.0f}"
            f"{statistics.median(ratios):>9.3f}{_spread(ratios):>16}"
        )
    added = [(p - b) * 1e9 for p, b in zip(times["pass-through"], base, strict=True)]
    print(f"pass-through adds {statistics.median(added):.0f} ns/request (median)")
    vs_pass = [
        r / p for r, p in zip(times["lifewatch /readyz"], times["pass-through"], strict=True)
    ]
    print(
        f"/readyz vs the constant app behind the same middleware: "
        f"{statistics.median(vs_pass):.3f} ({_spread(vs_pass)})"
    )

    if args.no_wrk:
        return
    configs = [("h11, asyncio", ["--http", "h11", "--loop", "asyncio"])]
    if importlib.util.find_spec("httptools") and importlib.util.find_spec("uvloop"):
        configs.append(("httptools, uvloop", ["--http", "httptools", "--loop", "uvloop"]))
    for label, server_args in configs:
        rps = under_uvicorn(args.wrk_rounds, args.wrk_seconds, args.connections, server_args)
        print(
            f"\nUnder uvicorn (1 worker, {label}), wrk -t1 -c{args.connections} "
            f"-d{args.wrk_seconds}s x {args.wrk_rounds} interleaved rounds, GET /readyz"
        )
        print(
            f"{'contender':<22}{'median req/s':>14}{'vs constant':>13}{'spread':>14}"
            f"{'lifewatch is':>14}"
        )
        lw = rps["lifewatch /readyz"]
        for name, values in rps.items():
            ratio = statistics.median(values) / statistics.median(rps["constant"])
            per_round = [v / c for v, c in zip(values, rps["constant"], strict=True)]
            speedup = statistics.median(lw) / statistics.median(values)
            print(
                f"{name:<22}{statistics.median(values):>14.0f}{ratio:>13.3f}"
                f"{_spread(per_round):>14}{speedup:>13.2f}x"
            )


if __name__ == "__main__":
    main()
