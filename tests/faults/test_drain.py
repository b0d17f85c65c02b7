"""Fault rows of the drain: one drain per process, no keep-alive client
reset at its end, and a worker of several that is stuck or died."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, State
from lifewatch.__main__ import main
from lifewatch._channel import ask_all
from tests.support.probes import call
from tests.support.servers import env, free_port, http_get, running, uvicorn_argv, wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def server_handler() -> Iterator[list[float]]:
    """A SIGTERM handler standing in for uvicorn's: when it heard the signal."""
    heard: list[float] = []

    def handle_exit(sig: int, frame: Any) -> None:
        heard.append(time.monotonic())

    previous = signal.signal(signal.SIGTERM, handle_exit)
    try:
        yield heard
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_two_watches_drain_as_one(
    server_handler: list[float], logs: list[dict[str, Any]]
) -> None:
    """Row (issue point 6): an app mounted in another, each with its watch.
    Both flip at once; the server hears the signal once, after the longest
    delay (not after their sum); responses during the drain ask to close.
    The delays are close, so their sum is far past the longest (a loaded box)."""
    short, long = 0.5, 0.6
    outer = Lifewatch(service="outer", registry=CollectorRegistry(), drain_delay=short)
    inner = Lifewatch(service="inner", registry=CollectorRegistry(), drain_delay=long)
    outer_app = outer.instrument(Starlette())
    inner_app = inner.instrument(Starlette())
    async with LifespanManager(outer_app), LifespanManager(inner_app):
        _, sent, _ = await call(outer_app, "/readyz")
        assert b"connection" not in sent
        sent_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while outer.state is not State.DRAINING and inner.state is not State.DRAINING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        assert (outer.state, inner.state) == (State.DRAINING, State.DRAINING)  # at once
        for app in (outer_app, inner_app):
            status, sent, _ = await call(app, "/readyz")
            assert status == 503 and sent[b"connection"] == b"close"
            _, sent, _ = await call(app, "/readyz", http_version="2")
            assert b"connection" not in sent  # forbidden in HTTP/2
        while not server_handler:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(long)
        assert len(server_handler) == 1  # once, not once per watch
    took = server_handler[0] - sent_at
    assert long <= took < short + long, f"{took:.2f}s: the delays added up"
    ends = [e["service"] for e in logs if e["event"] == "lifespan.drain.end"]
    assert sorted(ends) == ["inner", "outer"]


async def test_a_requested_drain_drains_every_watch_and_holds_the_signal(
    server_handler: list[float], logs: list[dict[str, Any]]
) -> None:
    """One drain per process on request too (a preStop on the outer app's
    drain channel): both watches flip at once, and a SIGTERM during the drain
    reaches the server once, when the longest of them is over."""
    short, long = 0.2, 0.6
    outer = Lifewatch(service="outer", registry=CollectorRegistry(), drain_delay=short)
    inner = Lifewatch(service="inner", registry=CollectorRegistry(), drain_delay=long)
    outer_app = outer.instrument(Starlette())
    inner_app = inner.instrument(Starlette())
    async with LifespanManager(outer_app), LifespanManager(inner_app):
        started = time.monotonic()
        (_asked,), _ = await asyncio.to_thread(ask_all, "outer", tempfile.gettempdir())
        deadline = time.monotonic() + 5
        while outer.state is not State.DRAINING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        assert (outer.state, inner.state) == (State.DRAINING, State.DRAINING)  # at once
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(short / 2)
        assert server_handler == []  # held: the drain goes on
        while not server_handler:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(short)
        assert len(server_handler) == 1
    took = server_handler[0] - started
    assert took >= long - 0.02, f"{took:.2f}s: the signal did not wait for the longest drain"
    begins = sorted(
        (e["service"], e["signal"]) for e in logs if e["event"] == "lifespan.drain.begin"
    )
    assert begins == [("inner", "request"), ("outer", "request")]


def test_no_keep_alive_client_is_reset_at_the_end_of_a_drain(tmp_path: Path) -> None:
    """Row (issue point 7): 100 keep-alive clients through a drain under a real
    uvicorn. Told ``Connection: close`` during the drain, each goes (as it
    would to another pod); none is reset when the server closes."""
    port = free_port()
    delay = 1.5
    clients = 100
    resets: list[str] = []
    answered = 0
    closed_by_server = 0
    started = threading.Barrier(clients + 1)
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        nonlocal answered, closed_by_server
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        first = True
        try:
            while not stop.is_set():
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                with lock:
                    answered += 1
                if first:
                    first = False
                    started.wait(30)
                if response.getheader("connection", "").lower() == "close":
                    with lock:
                        closed_by_server += 1
                    return  # it goes to another pod
                time.sleep(0.02)
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            with lock:
                resets.append(repr(exc))
        finally:
            conn.close()

    argv = uvicorn_argv(port, "tests.apps.faults:app")
    with running(argv, tmp_path / "drain.log", env(DRAIN_DELAY=str(delay))) as proc:
        wait_for("ready", lambda: http_get(f"http://127.0.0.1:{port}/readyz") == "ok", 20)
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        started.wait(30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stop.set()
        for thread in threads:
            thread.join(10)
    assert code == -signal.SIGTERM
    assert resets == [], f"{len(resets)} of {clients} clients reset: {resets[:3]}"
    assert closed_by_server == clients
    assert answered >= clients * 2


@contextlib.contextmanager
def fake_worker(service: str, state: str = "ready", *, keep: bool = False) -> Iterator[str]:
    """Another process of this user holding a channel of ``service`` that
    never acts on a request (a worker whose loop is stuck); killed -9 at the
    end, its directory removed unless ``keep`` (a dead worker's, left behind)."""
    code = (
        "import json, os, sys, tempfile, time\n"
        f"path = tempfile.mkdtemp(prefix=f'lifewatch-{os.geteuid()}-{service}-')\n"
        "os.mkfifo(os.path.join(path, 'drain'), 0o600)\n"
        "fd = os.open(os.path.join(path, 'drain'), os.O_RDWR | os.O_NONBLOCK)\n"
        "with open(os.path.join(path, 'state.json'), 'w') as f:\n"
        "    json.dump({'pid': os.getpid(), 'ppid': os.getppid(),"
        f" 'service': '{service}', 'state': '{state}', 'drain_until': None}}, f)\n"
        "print(path, flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    path = ""
    try:
        assert child.stdout is not None
        path = child.stdout.readline().strip()
        yield path
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
        if path and not keep:
            shutil.rmtree(path, ignore_errors=True)
        elif path:  # dead for a while: not a worker still starting
            old = time.time() - 60
            os.utime(os.path.join(path, "drain"), (old, old))


@contextlib.asynccontextmanager
async def fake_worker_off_loop(service: str, *, keep: bool = False) -> AsyncIterator[str]:
    """``fake_worker`` from a coroutine: the process started and killed in a thread."""
    worker = fake_worker(service, keep=keep)
    path = await asyncio.to_thread(worker.__enter__)
    try:
        yield path
    finally:
        await asyncio.to_thread(worker.__exit__, None, None, None)


async def test_a_worker_that_never_drains_fails_within_the_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stuck sibling costs the hook its ``--timeout``, is named, and the
    command still waits the drain out, then exits 1 (the kubelet's FailedPreStopHook)."""
    service = f"stuck{os.getpid()}"
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=0.3)
    async with LifespanManager(watch.instrument(Starlette())), fake_worker_off_loop(service):
        started = time.monotonic()
        status = await asyncio.to_thread(main, ["drain", "--service", service, "--timeout", "1"])
        took = time.monotonic() - started
        assert watch.state is State.DRAINING
    assert status == 1
    assert took >= 1.0  # the bound, then the rest of the drain
    err = capsys.readouterr().err
    assert "lifewatch drain: draining, " in err
    assert "did not drain: ready, but did not begin draining within 1s" in err


def test_a_worker_killed_leaves_nothing_behind(capsys: pytest.CaptureFixture[str]) -> None:
    """A sibling killed -9 leaves its directory, which the next hook removes:
    it neither waits for it nor calls it failed."""
    service = f"killed{os.getpid()}"
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=0.2)
    with fake_worker(service, keep=True) as path:
        pass
    assert os.path.isdir(path)  # left behind by the killed process

    async def drain() -> int:
        async with LifespanManager(watch.instrument(Starlette())):
            # the start removed it already; made again to see the hook remove it
            async with fake_worker_off_loop(service, keep=True) as again:
                pass
            status = await asyncio.to_thread(main, ["drain", "--service", service])
            return status if not await asyncio.to_thread(os.path.exists, again) else -1

    assert asyncio.run(drain()) == 0
    assert not os.path.exists(path)  # removed by the start
    err = capsys.readouterr().err
    assert "did not drain" not in err and "draining, 0.2s to go" in err
