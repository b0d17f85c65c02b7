"""Draining on SIGTERM: in process with a stand-in handler, then under real uvicorn."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, StartupInterrupted, State
from lifewatch._channel import ask_all, read_state
from tests.support.broken_logging import broken_logging
from tests.support.probes import get
from tests.support.servers import free_port

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def server_handler() -> Iterator[list[int]]:
    """A SIGTERM handler standing in for uvicorn's ``Server.handle_exit``."""
    received: list[int] = []

    def handle_exit(sig: int, frame: Any) -> None:
        received.append(sig)

    previous = signal.signal(signal.SIGTERM, handle_exit)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_sigterm_drains_then_hands_the_signal_on(
    server_handler: list[int], registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    original = signal.getsignal(signal.SIGTERM)
    watch = Lifewatch(registry=registry, drain_delay=0.3)
    app = watch.instrument(Starlette())

    async def main() -> None:
        async with LifespanManager(app):
            assert signal.getsignal(signal.SIGTERM) is not original  # hooked
            assert (await get(app, "/readyz")).status_code == 200
            sent = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: watch.state is State.DRAINING)
            response = await get(app, "/readyz?verbose")
            assert response.status_code == 503
            assert "[-]lifespan failed: draining\n" in response.text
            assert (await get(app, "/livez")).status_code == 200
            assert server_handler == []  # the server has not heard of it yet
            await _until(lambda: server_handler == [signal.SIGTERM])
            assert time.monotonic() - sent >= 0.3
        # Shutdown put the server's handler back.
        assert signal.getsignal(signal.SIGTERM) is original

    asyncio.run(main())
    events = [e["event"] for e in logs]
    assert events.index("lifespan.drain.begin") < events.index("lifespan.drain.end")
    assert events.index("lifespan.drain.end") < events.index("lifespan.shutdown.begin")
    assert [(e["from"], e["to"]) for e in logs if e["event"] == "lifespan.state"][-3:] == [
        ("ready", "draining"),
        ("draining", "stopping"),
        ("stopping", "stopped"),
    ]
    assert registry.get_sample_value("lifespan_state", {"state": "stopped"}) == 1


def test_a_second_sigterm_or_a_not_ready_app_goes_through_at_once(
    server_handler: list[int], registry: CollectorRegistry
) -> None:
    watch = Lifewatch(registry=registry, drain_delay=30)
    app = watch.instrument(Starlette())

    async def main() -> None:
        async with LifespanManager(app):
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: watch.state is State.DRAINING)
            assert server_handler == []
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: server_handler == [signal.SIGTERM])
            server_handler.clear()
            watch._lifecycle.readiness.move(State.FAILED)  # as after a failed background phase
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: server_handler == [signal.SIGTERM])

    asyncio.run(main())


def test_a_sigterm_during_a_non_critical_phase_still_ends_the_startup(
    server_handler: list[int], registry: CollectorRegistry
) -> None:
    watch = Lifewatch(registry=registry)
    closed: list[str] = []

    async def config(app: Any) -> AsyncIterator[None]:
        yield
        closed.append("config")

    async def cache(app: Any) -> AsyncIterator[None]:
        async with watch.phase("warm-cache", critical=False):
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(60)
        yield

    app = watch.instrument(Starlette(lifespan=watch.lifespan(config, cache)))

    async def main() -> None:
        with pytest.raises(StartupInterrupted, match="startup cut by SIGTERM in phase 'warm"):
            async with LifespanManager(app, startup_timeout=30):
                pass

    asyncio.run(main())
    assert server_handler == [signal.SIGTERM]  # handed on at once, no drain
    assert closed == ["config"]  # what started is shut down
    assert watch.timeline.find("warm-cache").outcome == "signal"  # not degraded
    assert watch.state is State.STOPPED
    assert registry.get_sample_value(
        "lifespan_phase_failures_total",
        {"phase": "warm-cache", "event": "startup", "reason": "signal"},
    )


def test_no_hook_without_a_python_handler(registry: CollectorRegistry) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=1)
    app = watch.instrument(Starlette())

    async def main() -> None:
        async with LifespanManager(app):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    asyncio.run(main())


def test_with_drain_off_a_sigterm_when_ready_goes_to_the_server_at_once(
    server_handler: list[int], registry: CollectorRegistry
) -> None:
    # The hook is in (a signal during startup still ends it), but drains nothing.
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=0)
    app = watch.instrument(Starlette())

    async def main() -> None:
        async with LifespanManager(app):
            os.kill(os.getpid(), signal.SIGTERM)
            await _until(lambda: server_handler == [signal.SIGTERM])
            assert watch.state is State.READY

    asyncio.run(main())


# -- a real uvicorn process --------------------------------------------------

APP = textwrap.dedent(
    """
    import os, time
    from contextlib import asynccontextmanager
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from lifewatch import Lifewatch

    watch = Lifewatch(service="drain", drain_delay={drain}, shutdown_timeout={shutdown})

    @asynccontextmanager
    async def lifespan(app):
        yield
        async with watch.phase("close"):
            with open(os.environ["MARK_FILE"], "a") as f:
                f.write(f"{{time.time()}}\\n")

    async def home(request):
        return PlainTextResponse("home")

    app = watch.instrument(Starlette(routes=[Route("/", home)], lifespan=lifespan))
    """
)


SERVERS = [
    pytest.param(["--http", "h11", "--loop", "asyncio"], id="h11-asyncio"),
    pytest.param(
        ["--http", "httptools", "--loop", "uvloop"],
        id="httptools-uvloop",  # uvicorn[standard], in the test extra: never skipped
    ),
]


@pytest.mark.parametrize("server_args", SERVERS)
def test_uvicorn_drains_without_dropping_a_request(tmp_path: Path, server_args: list[str]) -> None:
    drain, shutdown = 2.0, 3.0
    (tmp_path / "drainapp.py").write_text(APP.format(drain=drain, shutdown=shutdown))
    mark = tmp_path / "shutdown.txt"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{tmp_path}",
        "MARK_FILE": str(mark),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "drainapp:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *server_args,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "uvicorn did not become ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)

        failures: list[str] = []
        readyz: list[tuple[float, int]] = []
        served = 0
        kept = httpx.Client(base_url=base, timeout=5)  # keep-alive, as a proxy pools
        fresh = httpx.Client(  # a new connection per request, as new clients come
            base_url=base, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)
        )
        sigterm_at: float | None = None
        sigterm_wall = 0.0
        started = time.monotonic()
        with kept, fresh:
            # Without pause: from 0.5 s before SIGTERM until the drain ends.
            while sigterm_at is None or time.monotonic() < sigterm_at + drain - 0.2:
                now = time.monotonic()
                if sigterm_at is None and now - started >= 0.5:
                    proc.send_signal(signal.SIGTERM)
                    sigterm_at, sigterm_wall = time.monotonic(), time.time()
                for client in (kept, fresh):
                    try:
                        response = client.get("/")
                        if response.status_code == 200 and response.text == "home":
                            served += 1
                        else:
                            failures.append(f"{response.status_code} {response.text[:80]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                try:
                    answer = kept.get("/readyz")
                    readyz.append((time.monotonic(), answer.status_code))
                except httpx.HTTPError as exc:
                    failures.append(f"/readyz: {exc!r}")
        assert sigterm_at is not None
        returncode = proc.wait(timeout=drain + shutdown + 2 + 5)
        exited = time.monotonic() - sigterm_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert failures == [], failures[:5]
    assert served > 50
    before = [code for t, code in readyz if t < sigterm_at]
    after = [code for t, code in readyz if t > sigterm_at + 0.1]
    assert before and set(before) == {200}
    assert after and set(after) == {503}, after
    assert exited <= drain + shutdown + 2, exited
    assert returncode in (0, -signal.SIGTERM), (returncode, output)
    # The lifespan shutdown phases ran, after the drain.
    shutdown_at = float(mark.read_text().split()[0])
    assert shutdown_at - sigterm_wall >= drain - 0.05


def test_logging_that_raises_never_keeps_the_signal_from_the_server(
    server_handler: list[int], registry: CollectorRegistry
) -> None:
    """The drain's log lines fail (a broken pipe, a processor's bug): the SIGTERM
    lifewatch took is still handed on, so the shutdown phases still run."""
    watch = Lifewatch(registry=registry, drain_delay=0.2)
    shut_down: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        shut_down.append("closed")

    app = watch.instrument(Starlette(lifespan=lifespan))

    async def main() -> None:
        with broken_logging() as attempted:
            async with LifespanManager(app):
                os.kill(os.getpid(), signal.SIGTERM)
                await _until(lambda: server_handler == [signal.SIGTERM])
                assert watch.state is State.DRAINING
                assert "lifespan.drain.begin" in attempted
                assert "lifespan.drain.end" in attempted

    asyncio.run(main())
    assert shut_down == ["closed"]
    assert watch.state is State.STOPPED


def test_a_sigterm_during_a_requested_drain_waits_for_its_end(
    server_handler: list[int], registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    """preStop drained first: the signal that follows reaches the server when the
    drain is over, not before, and once."""
    service = f"held-{os.getpid()}"
    watch = Lifewatch(service=service, registry=registry, drain_delay=0.3)
    app = watch.instrument(Starlette())

    async def main() -> None:
        async with LifespanManager(app):
            started = time.monotonic()
            assert watch.state is State.READY
            (worker,), _ = await asyncio.to_thread(ask_all, service, tempfile.gettempdir())
            await _until(lambda: watch.state is State.DRAINING)
            state = await asyncio.to_thread(read_state, worker.path, service)
            assert 0.2 < state.left(time.time()) <= 0.3
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
            assert server_handler == []  # held: the drain goes on
            await _until(lambda: server_handler == [signal.SIGTERM])
            assert time.monotonic() - started >= 0.3 - 0.02
            # Asking again once it is over: nothing left to wait for.
            await asyncio.to_thread(ask_all, service, tempfile.gettempdir())
            await asyncio.sleep(0.05)
            state = await asyncio.to_thread(read_state, worker.path, service)
            assert state.left(time.time()) == 0.0

    asyncio.run(main())
    begins = [e for e in logs if e["event"] == "lifespan.drain.begin"]
    assert [b["signal"] for b in begins] == ["request"]


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_a_loop_signal_handler_is_stood_in_front_of(registry: CollectorRegistry, kind: str) -> None:
    """hypercorn's way: ``loop.add_signal_handler`` before the lifespan starts,
    on asyncio's loop or uvloop's.

    lifewatch holds the signal back from the loop's wakeup fd, drains, then
    hands it on, and the server's handler runs.
    """
    run = asyncio.run if kind == "asyncio" else pytest.importorskip("uvloop").run
    watch = Lifewatch(registry=registry, drain_delay=0.3)
    app = watch.instrument(Starlette())
    received: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: received.append(time.monotonic()))
        try:
            async with LifespanManager(app):
                sent = time.monotonic()
                os.kill(os.getpid(), signal.SIGTERM)
                await _until(lambda: watch.state is State.DRAINING)
                assert received == []
                assert (await get(app, "/readyz")).status_code == 503
                await _until(lambda: received != [])
                assert received[0] - sent >= 0.3 - 0.02
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    run(main())
