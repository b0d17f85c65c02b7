"""The drain channel: a directory private to the app's user, a FIFO read on the app's loop."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch, State
from lifewatch._channel import (
    MAX_AHEAD,
    WorkerState,
    ask_all,
    candidates,
    parse_state,
    read_state,
    service_token,
)


def unique(name: str) -> str:
    return f"{name}{os.getpid()}x{time.monotonic_ns()}"


def channels(service: str) -> list[str]:
    return candidates(service, tempfile.gettempdir())


async def listed(service: str) -> list[str]:
    """``channels``, off the event loop (the test reads the directory as the
    drain command does, from outside the app)."""
    return await asyncio.to_thread(channels, service)


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` (or the value it awaits) is true."""
    deadline = time.monotonic() + timeout
    while not ((await value) if inspect.isawaitable(value := predicate()) else value):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


NOW = 1_800_000_000.0
GOOD = {"pid": 42, "ppid": 1, "service": "orders", "state": "draining", "drain_until": NOW + 3}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({}, None),
        ({"drain_until": None, "state": "ready"}, None),
        ({"drain_until": NOW - 10}, None),  # over: nothing left
        ({"drain_until": NOW + 1e9}, "not within a day"),
        ({"drain_until": NOW + MAX_AHEAD + 1}, "not within a day"),
        ({"drain_until": -1}, "not within a day"),
        ({"drain_until": float("nan")}, "not a time"),
        ({"drain_until": "soon"}, "not a time"),
        ({"drain_until": True}, "not a time"),
        ({"pid": -5}, "not a process id"),
        ({"pid": 0}, "not a process id"),
        ({"pid": 2**40}, "not a process id"),
        ({"pid": "42"}, "not a process id"),
        ({"pid": True}, "not a process id"),
        ({"ppid": 0}, None),  # the parent of pid 1
        ({"ppid": -1}, "ppid -1 is not"),
        ({"ppid": None}, "ppid None is not"),
        ({"ppid": 2**40}, "ppid 1099511627776 is not"),
        ({"state": "hacked"}, "is not one of"),
        ({"state": None}, "is not one of"),
        ({"service": "payments"}, "is not 'orders'"),
    ],
)
def test_every_value_of_a_state_file_is_range_checked(
    change: dict[str, Any], error: str | None
) -> None:
    data = json.dumps({**GOOD, **change}).encode()
    if error is None:
        state = parse_state(data, "orders", NOW)
        assert state.pid == 42 and state.left(NOW) <= 3
    else:
        with pytest.raises(ValueError, match=error):
            parse_state(data, "orders", NOW)


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"\xff" * 10, "not JSON"), (b"[1, 2]", "not a JSON object"), (b" " * 5000, "over 4096")],
)
def test_a_state_file_that_is_not_one_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_state(data, "orders", NOW)


def test_a_service_name_becomes_a_path_part_apart_from_its_neighbours() -> None:
    assert service_token("orders-v2") == "orders_v2"
    assert service_token("../../etc") == ".._.._etc"
    assert service_token(None) == ""
    assert len(service_token("x" * 300)) == 64
    base = tempfile.mkdtemp()
    uid = os.geteuid()
    for name in ("lifewatch-{}-a-abc", "lifewatch-{}-a_b-abc", "lifewatch-{}-a-b-abc"):
        os.mkdir(os.path.join(base, name.format(uid)))
    found = [os.path.basename(p) for p in candidates("a", base)]
    assert found == [f"lifewatch-{uid}-a-abc"]  # not the a_b (a-b) service's


def fds_open_on(path: str) -> list[int]:
    """This process's descriptors open on ``path``."""
    return [
        int(fd)
        for fd in os.listdir("/proc/self/fd")
        if os.path.realpath(f"/proc/self/fd/{fd}") == path
    ]


async def test_the_channel_is_private_and_goes_with_the_lifespan() -> None:
    service = unique("private")
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=0.2)

    def look() -> tuple[os.stat_result, os.stat_result, WorkerState, int]:
        (path,) = channels(service)
        fifo = os.path.join(path, "drain")
        (held,) = fds_open_on(fifo)
        return os.lstat(path), os.lstat(fifo), read_state(path, service), held

    async with LifespanManager(watch.instrument(Starlette())):
        here, fifo, state, held = await asyncio.to_thread(look)
        assert not os.get_inheritable(held)  # closed across exec
    assert stat.S_ISDIR(here.st_mode) and stat.S_IMODE(here.st_mode) == 0o700
    assert here.st_uid == os.geteuid()
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o600
    assert (state.pid, state.state, state.drain_until) == (os.getpid(), "ready", None)
    assert await listed(service) == []  # removed at the end of shutdown


def _threads_and_sockets() -> tuple[int, int]:
    sockets = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.stat(f"/proc/self/fd/{entry}").st_mode):
                sockets += 1
        except OSError:
            continue
    # Not the default executor's workers (asyncio.to_thread, which the async
    # tests use to read /proc off the loop): one more may start between reads.
    threads = [t for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    return len(threads), sockets


def test_a_test_client_starts_no_thread_and_binds_no_socket_for_the_drain() -> None:
    """DESIGN §7: nothing runs that a single process does not need. Under
    starlette's TestClient the same app with and without lifewatch's drain
    holds as many threads and sockets (the client's own portal has some)."""
    counts = []
    for delay in (0.0, 5.0):
        service = unique("client")
        watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=delay)
        with TestClient(watch.instrument(Starlette())) as client:
            assert client.get("/readyz").status_code == 200
            assert len(channels(service)) == (1 if delay else 0)
            counts.append(_threads_and_sockets())
    assert counts[0] == counts[1], counts


async def test_asgi_lifespan_starts_no_thread_and_binds_no_socket_for_the_drain() -> None:
    service = unique("lifespan")
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=5)
    before = await asyncio.to_thread(_threads_and_sockets)
    async with LifespanManager(watch.instrument(Starlette())):
        assert len(await listed(service)) == 1
        during = await asyncio.to_thread(_threads_and_sockets)
    assert during == before


async def test_a_starting_worker_drains_for_what_is_left_once_ready() -> None:
    """The hook came while it started: no drain then (nobody routes to it), the
    rest of it once ready, not a whole new one."""
    service = unique("starting")
    release = asyncio.Event()
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=1.0)

    async def lifespan(app: Any) -> Any:
        await release.wait()
        yield

    from contextlib import asynccontextmanager

    app = watch.instrument(Starlette(lifespan=asynccontextmanager(lifespan)))
    manager = LifespanManager(app)
    entered = asyncio.create_task(manager.__aenter__())

    async def made() -> bool:
        return len(await listed(service)) == 1

    await until(made)
    (worker,), _ = await asyncio.to_thread(ask_all, service, tempfile.gettempdir())
    asked = time.monotonic()
    await asyncio.sleep(0.3)
    assert watch.state is State.STARTING
    release.set()
    await entered
    try:
        await until(lambda: watch.state is State.DRAINING)
        left = (await asyncio.to_thread(read_state, worker.path, service)).left(time.time())
        assert left <= 1.0 - (time.monotonic() - asked) + 0.05
        assert left > 0.2
    finally:
        await manager.__aexit__(None, None, None)


async def test_a_worker_ready_while_its_siblings_drain_drains_for_the_rest(
    tmp_path: Any,
) -> None:
    """A worker the server restarts during the hook reads its siblings' state
    files: it drains for what is left of theirs, never longer than its own
    delay; a value out of range is not believed, and neither is a worker of
    another server (another parent) or one that died while draining."""
    service = unique("sibling")
    base = tempfile.gettempdir()
    server = os.getppid()  # the test process plays a worker: its parent is the server
    cases = [  # drain end, parent, alive, drains
        (1e9, server, True, False),
        (0.6, server + 1, True, False),
        (0.6, server, False, False),
        (0.6, server, True, True),
    ]

    def make_sibling() -> str:
        path = tempfile.mkdtemp(prefix=f"lifewatch-{os.geteuid()}-{service_token(service)}-")
        os.mkfifo(os.path.join(path, "drain"), 0o600)
        return path

    sibling = await asyncio.to_thread(make_sibling)
    state = os.path.join(sibling, "state.json")

    def write_state(ahead: float, parent: int) -> None:
        fields = {"pid": 1, "ppid": parent, "service": service, "state": "draining"}
        with open(state, "w") as f:
            json.dump({**fields, "drain_until": time.time() + ahead}, f)

    def own_left() -> float:
        (own,) = [p for p in candidates(service, base) if p != sibling]
        return read_state(own, service).left(time.time())

    try:
        for ahead, parent, alive, drains in cases:
            keep = os.open(os.path.join(sibling, "drain"), os.O_RDWR | os.O_NONBLOCK)
            if not alive:
                os.close(keep)
            await asyncio.to_thread(write_state, ahead, parent)
            try:
                watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=5)
                async with LifespanManager(watch.instrument(Starlette())):
                    await asyncio.sleep(0.05)
                    assert (watch.state is State.DRAINING) is drains, (ahead, parent, alive)
                    if drains:
                        assert 0.3 < await asyncio.to_thread(own_left) <= 0.6
            finally:
                if alive:
                    os.close(keep)
    finally:
        import shutil

        await asyncio.to_thread(shutil.rmtree, sibling)


def forked_child_holds(path: str) -> bool:
    """Whether a child forked now holds ``path`` open."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        held = any(
            os.path.realpath(f"/proc/self/fd/{fd}") == path for fd in os.listdir("/proc/self/fd")
        )
        os.write(write, b"held" if held else b"free")
        os._exit(0)
    os.close(write)
    try:
        return os.read(read, 10) == b"held"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


@pytest.mark.blockbuster_off(
    "it forks a child and waits for it, on the loop's thread, mid-lifespan"
)
async def test_a_forked_child_does_not_hold_the_fifo() -> None:
    """A process forked in a phase (a pool) closes it: when the worker goes,
    nobody reads the FIFO, and its directory counts as dead."""
    service = unique("fork")
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=5)
    async with LifespanManager(watch.instrument(Starlette())):
        (path,) = channels(service)
        fifo = os.path.join(path, "drain")
        assert forked_child_holds(fifo) is False
        assert forked_child_holds(os.path.join(path)) is False


async def test_without_a_private_directory_startup_says_so_once(
    monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]
) -> None:
    """A read-only /tmp (no emptyDir): one warning, then the app runs as ever,
    and SIGTERM still drains."""
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/lifewatch-test")
    watch = Lifewatch(service=unique("readonly"), registry=CollectorRegistry(), drain_delay=5)
    async with LifespanManager(watch.instrument(Starlette())):
        assert watch.state is State.READY
    off = [e for e in logs if e["event"] == "lifespan.drain.channel.off"]
    assert len(off) == 1 and off[0]["log_level"] == "warning"
    assert "/nonexistent/lifewatch-test" in off[0]["detail"]
    assert "SIGTERM still drains it" in off[0]["detail"]


def test_a_channel_being_made_is_not_taken_for_a_dead_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sibling between ``mkfifo`` and opening its FIFO has no reader yet:
    neither a start nor the hook removes it; once old, it is a dead worker's."""
    from lifewatch.__main__ import main

    service = unique("making")
    path = tempfile.mkdtemp(prefix=f"lifewatch-{os.geteuid()}-{service_token(service)}-")
    os.mkfifo(os.path.join(path, "drain"), 0o600)
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=0.1)
    with TestClient(watch.instrument(Starlette())):
        assert os.path.isdir(path)
        assert main(["drain", "--service", service]) == 0
        assert "draining (1 not ready), 0.1s to go" in capsys.readouterr().err
        assert os.path.isdir(path)
        old = time.time() - 60
        os.utime(os.path.join(path, "drain"), (old, old))
        assert main(["drain", "--service", service]) == 0
    assert not os.path.exists(path)
