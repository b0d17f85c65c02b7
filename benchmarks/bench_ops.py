"""The ops listener: answers while startup blocks the loop, and what a probe costs there.

1. A startup phase blocks the event loop for ``--block`` seconds (10): the
   ops listener's ``/startupz`` is polled every 100 ms all along; each answer's
   latency is reported as a ratio to the kubelet's default probe timeout (1 s).
2. ``/readyz`` under ``wrk`` on the ops listener and on the app's port of the
   same uvicorn process, in interleaved rounds, under uvicorn's h11 and its
   httptools: the cost per probe on the ops listener as a ratio to the app's
   port (requests/s of the app's port over the ops listener's). The server
   process's CPU time per request (from ``/proc``) is printed beside: less
   swayed than requests/s by what else runs on the machine.

Run: ``PYTHONPATH=src python benchmarks/bench_ops.py`` (needs ``wrk``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import free_port, wrk  # noqa: E402

PROBE_TIMEOUT = 1.0
"""The kubelet's default ``timeoutSeconds``."""


def build_app() -> Any:
    """The app under test, set up by the environment (``OPS_PORT``, ``BLOCK``)."""
    from starlette.applications import Starlette

    from lifewatch import Lifewatch

    watch = Lifewatch(
        service="bench-ops", ops_address=f"127.0.0.1:{os.environ['OPS_PORT']}", drain_delay=0
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("load-model"):
            time.sleep(float(os.environ.get("BLOCK", "0")))  # noqa: ASYNC251 - on purpose
        yield

    return watch.instrument(Starlette(lifespan=lifespan))


if "OPS_PORT" in os.environ:
    app = build_app()


def get(url: str) -> tuple[int, float]:
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - start


def start(block: float, server_args: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    port, ops = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "bench_ops:app", "--port", str(port)),
            *(*server_args, "--log-level", "warning", "--no-access-log"),
        ],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
            "OPS_PORT": str(ops),
            "BLOCK": str(block),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port, ops


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def blocked_startup(block: float) -> None:
    proc, _, ops = start(block, [])
    url = f"http://127.0.0.1:{ops}/startupz"
    latencies: list[float] = []
    codes: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the listener is up
            try:
                get(url)
                break
            except OSError:
                time.sleep(0.02)
        while True:
            status, took = get(url)
            if status == 200:
                break
            codes.append(status)
            latencies.append(took)
            time.sleep(0.1)
    finally:
        stop(proc)
    worst = max(latencies)
    print(
        f"\n1. startup blocking the event loop for {block:g} s; /startupz on the ops "
        "listener every 100 ms\n"
        f"   polls answered during startup: {len(codes)}, all 503: {set(codes) == {503}}\n"
        f"   latency: median {statistics.median(latencies) * 1e3:.1f} ms, "
        f"max {worst * 1e3:.1f} ms\n"
        f"   max latency / probe timeout ({PROBE_TIMEOUT:g} s): {worst / PROBE_TIMEOUT:.3f} "
        f"(target: every poll within 100 ms, ratio <= 0.1: "
        f"{'met' if worst <= 0.1 else 'missed'})"
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def up(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not come up")
        time.sleep(0.1)


def under_wrk(rounds: int, seconds: int, connections: int, server_args: list[str]) -> None:
    """Every contender of every round in turn: app's port, then ops listener."""
    procs = {"lifewatch": start(0, server_args)}
    rps: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for _, port, ops in procs.values():
            up(port)
            wrk(port, "/readyz", 1, connections)  # warm up
            wrk(ops, "/readyz", 1, connections)
        for _ in range(rounds):
            for name, (proc, port, ops) in procs.items():
                for where, target in (("app's port", port), ("ops listener", ops)):
                    before = cpu_seconds(proc.pid)
                    rate = wrk(target, "/readyz", seconds, connections)
                    spent = cpu_seconds(proc.pid) - before
                    rps.setdefault((name, where), []).append(rate)
                    cpu.setdefault((name, where), []).append(spent / (rate * seconds))
    finally:
        for proc, _, _ in procs.values():
            stop(proc)
    label = " ".join(server_args)
    print(
        f"\n2. GET /readyz under wrk -t1 -c{connections} -d{seconds}s x {rounds} "
        f"interleaved rounds (uvicorn {label})"
    )
    for name in procs:
        app, ops = rps[(name, "app's port")], rps[(name, "ops listener")]
        ratios = [a / o for a, o in zip(app, ops, strict=True)]
        cpu_app, cpu_ops = cpu[(name, "app's port")], cpu[(name, "ops listener")]
        cpu_ratios = [o / a for a, o in zip(cpu_app, cpu_ops, strict=True)]
        median = statistics.median(ratios)
        for where, values, spent in (("app's port", app, cpu_app), ("ops listener", ops, cpu_ops)):
            print(
                f"     {where:<14} {statistics.median(values):>7.0f} req/s (median; "
                f"{min(values):.0f}-{max(values):.0f}), "
                f"{statistics.median(spent) * 1e6:5.1f} us CPU/request"
            )
        print(
            f"     cost on the ops listener / on the app's port: {median:.2f} "
            f"(spread {min(ratios):.2f}-{max(ratios):.2f}; target <= 1.5: "
            f"{'met' if median <= 1.5 else 'missed'}); CPU per request: "
            f"{statistics.median(cpu_ratios):.2f} "
            f"({min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--skip-startup", action="store_true", help="part 2 only")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load}")
    if not args.skip_startup:
        blocked_startup(args.block)
    for server_args in (["--http", "h11", "--loop", "asyncio"], ["--http", "httptools"]):
        under_wrk(args.rounds, args.seconds, args.connections, server_args)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load}")


if __name__ == "__main__":
    main()
