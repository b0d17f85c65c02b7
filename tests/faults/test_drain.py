"""Fault rows of the drain: one drain per process, no keep-alive client
reset at its end, and a worker of several that hangs or died."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, State
from lifewatch.__main__ import main
from lifewatch._rendezvous import ASK_TIMEOUT, PREFIX, group_of, members
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
    drain endpoint): both watches flip at once, and a SIGTERM during the drain
    reaches the server once, when the longest of them is over."""
    short, long = 0.2, 0.6
    outer = Lifewatch(service="outer", registry=CollectorRegistry(), drain_delay=short)
    inner = Lifewatch(service="inner", registry=CollectorRegistry(), drain_delay=long)
    outer_app = outer.instrument(Starlette())
    inner_app = inner.instrument(Starlette())
    async with LifespanManager(outer_app), LifespanManager(inner_app):
        started = time.monotonic()
        drain = outer.routes["/lifewatch/drain"]
        left = await asyncio.to_thread(drain.request)  # type: ignore[attr-defined]
        assert 0 < left <= short
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets: Linux")
async def test_a_member_that_never_answers_fails_within_the_bound(
    capsys: pytest.CaptureFixture[str], logs: list[dict[str, Any]]
) -> None:
    """A hung sibling costs the hook ``ASK_TIMEOUT``, is named, and the command
    still waits the drain out, then exits 1 (the kubelet's FailedPreStopHook)."""
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=0.3, ops_address="127.0.0.1:0")
    async with LifespanManager(watch.instrument(Starlette())):
        group = group_of(watch.ops_port)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
            silent.bind(f"\0{PREFIX}/{group}/4343-1")
            silent.listen()  # the backlog accepts; nobody ever answers
            url = f"http://127.0.0.1:{watch.ops_port}/lifewatch/drain"
            started = time.monotonic()
            status = await asyncio.to_thread(main, ["drain", url, "--timeout", "5"])
            took = time.monotonic() - started
    assert status == 1
    assert ASK_TIMEOUT <= took < (ASK_TIMEOUT + 0.3) * 3  # the drain, within the bound
    err = capsys.readouterr().err
    assert "lifewatch drain: draining, 0.3s to go" in err
    assert f"worker 4343 did not drain: no answer within {ASK_TIMEOUT:g}s" in err
    (told,) = [e for e in logs if e["event"] == "lifespan.drain.workers"]
    assert told["log_level"] == "warning" and "4343" in told["failed"]


@contextlib.contextmanager
def member_process(group: str) -> Iterator[None]:
    """Another process holding a member's name in ``group``; killed -9 at the end."""
    code = (
        "import os, socket, time\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.bind('\\0{PREFIX}/{group}/' + str(os.getpid()) + '-1')\n"
        "s.listen(); print('up', flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        yield
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets: Linux")
async def test_a_worker_killed_leaves_nothing_behind(capsys: pytest.CaptureFixture[str]) -> None:
    """A sibling killed -9 takes its name with it: the next drain neither waits
    for it nor calls it failed."""
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=0.2, ops_address="127.0.0.1:0")
    async with LifespanManager(watch.instrument(Starlette())):
        group = group_of(watch.ops_port)
        with member_process(group):
            assert len(members(group)) == 2
        assert len(members(group)) == 1  # gone with the killed process
        url = f"http://127.0.0.1:{watch.ops_port}/lifewatch/drain"
        assert await asyncio.to_thread(main, ["drain", url]) == 0
    assert "did not drain" not in capsys.readouterr().err
