"""The drain's rendezvous: every worker of a group drains on one request, bounded.

Siblings are stood in for by members bound in this process under names of
their own (a real multi-worker server is in ``tests/servers/test_matrix.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, State
from lifewatch._rendezvous import (
    PREFIX,
    Rendezvous,
    _Member,
    ask,
    ask_all,
    group_of,
    listens_on,
    members,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract unix sockets: Linux only"
)


def ops_watch(delay: float) -> Lifewatch:
    return Lifewatch(registry=CollectorRegistry(), drain_delay=delay, ops_address="127.0.0.1:0")


def fetch(url: str) -> tuple[int, dict[str, Any]]:
    import http.client

    host, _, rest = url.removeprefix("http://").partition("/")
    connection = http.client.HTTPConnection(host, timeout=10)
    try:
        connection.request("POST", "/" + rest)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def serving(name: str, answer: Callable[[int | None, bool, float | None], Any]) -> _Member:
    """A member answering from a thread of its own, as a sibling process's does."""
    member = _Member(name, answer)
    threading.Thread(target=member.serve, daemon=True).start()
    return member


@contextmanager
def sibling(group: str, answer: Callable[[int | None], dict[str, Any]]) -> Iterator[list[Any]]:
    """A member of ``group`` that is not this process's own: what it was asked."""
    asked: list[Any] = []

    def record(port: int | None, drain: bool, left: float | None) -> dict[str, Any]:
        if not drain:  # a worker that just became ready, asking what is left
            return {"pid": 4242, "left": 0.0}
        asked.append(port)
        return answer(port)

    member = serving(f"{PREFIX}/{group}/4242-1", record)
    try:
        yield asked
    finally:
        member.close()


async def test_a_worker_is_a_member_from_startup_to_shutdown() -> None:
    watch = ops_watch(0.2)
    async with LifespanManager(watch.instrument(Starlette())):
        assert watch.ops_port is not None
        group = group_of(watch.ops_port)
        (name,) = members(group)
        assert name.startswith(f"{PREFIX}/{os.getuid()}/ops-{watch.ops_port}/{os.getpid()}-")
    deadline = time.monotonic() + 5
    while members(group):  # left at shutdown (its thread lets go at once)
        assert time.monotonic() < deadline, members(group)
        await asyncio.sleep(0.01)


async def test_a_drain_reaches_every_member_and_answers_with_the_longest(
    logs: list[dict[str, Any]],
) -> None:
    watch = ops_watch(0.2)
    async with LifespanManager(watch.instrument(Starlette())):
        group = group_of(watch.ops_port)
        answer = {"pid": 4242, "draining": True, "remaining": 0.7}
        with sibling(group, lambda port: answer) as asked:
            url = f"http://127.0.0.1:{watch.ops_port}/lifewatch/drain"
            status, body = await asyncio.to_thread(fetch, url)
        assert status == 202
        assert body["workers"] == 2 and body["failed"] == {} and body["remaining"] == 0.7
        assert asked == [None]  # on the ops port: no port check
        assert watch.state is State.DRAINING
    (told,) = [e for e in logs if e["event"] == "lifespan.drain.workers"]
    assert told["workers"] == 2 and told["failed"] == {} and told["log_level"] == "info"


async def test_another_group_is_never_asked() -> None:
    """Another ops port is another pod's (or app's): no cross-talk."""
    watch = ops_watch(0.2)
    async with LifespanManager(watch.instrument(Starlette())):
        other = group_of(free_port())
        with sibling(other, lambda port: {"draining": True, "remaining": 9}) as asked:
            url = f"http://127.0.0.1:{watch.ops_port}/lifewatch/drain"
            status, body = await asyncio.to_thread(fetch, url)
        assert status == 202 and body["workers"] == 1 and 0 < body["remaining"] <= 0.2
        assert asked == []


async def test_on_the_app_port_only_members_listening_there_drain() -> None:
    """The app's port groups by parent process; a member that does not listen
    on the port the request came to (another app of the same parent) stays."""
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=0.2)
    requested: list[int] = []

    def request(seconds: float | None) -> float:
        requested.append(1)
        return 0.0

    rendezvous = Rendezvous(watch.lifecycle, request, lambda: None, None)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert listens_on(port) is True
        assert rendezvous._answer(port)["draining"] is False  # asked: not ready, no drain
        assert requested == [1]
    assert listens_on(port) is False
    assert rendezvous._answer(port) == {"pid": os.getpid(), "member": False}
    assert requested == [1]
    async with LifespanManager(watch.instrument(Starlette())):
        (name,) = members(group_of(None))
        assert name.startswith(f"{PREFIX}/{os.getuid()}/app-")
        assert f"-{os.getppid()}/{os.getpid()}-" in name


def test_an_ask_of_a_member_gone_is_none() -> None:
    assert ask(f"{PREFIX}/{os.getuid()}/ops-1/1-1", None, timeout=0.5) is None


def test_members_are_the_listening_names_of_the_group(tmp_path: Path) -> None:
    table = tmp_path / "unix"
    g = f"{PREFIX}/0/ops-9000"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"0000000000000001: 00000002 00000000 00010000 0001 01 11 @{g}/7-1\n"
        f"0000000000000002: 00000003 00000000 00000000 0001 03 12 @{g}/7-1\n"  # accepted
        f"0000000000000003: 00000002 00000000 00010000 0001 01 13 @{g}/8-1\n"
        f"0000000000000004: 00000002 00000000 00010000 0001 01 14 @{PREFIX}/0/ops-9001/9-1\n"
        f"0000000000000005: 00000002 00000000 00010000 0001 01 15 /{g}/10-1\n"  # a file
        "0000000000000006: 00000002 00000000 00010000 0001 01 16\n"
    )
    assert members("0/ops-9000", str(table)) == [f"{g}/7-1", f"{g}/8-1"]
    assert members("0/ops-9000", str(tmp_path / "missing")) == []


def test_a_member_that_closes_without_answering_is_named() -> None:
    """A peer of another user is hung up on: the asker says so, in words."""
    name = f"{PREFIX}/{os.getuid()}/ops-1/4444-1"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
        rude.bind("\0" + name)
        rude.listen()

        def hang_up() -> None:
            conn, _ = rude.accept()
            conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        results = ask_all([name], None, timeout=2)
        thread.join(5)
    assert results == {name: "closed the connection without an answer"}


async def test_a_worker_ready_during_its_siblings_drain_drains_for_what_they_have_left(
    logs: list[dict[str, Any]],
) -> None:
    """A worker the server restarted during the preStop hook does not come
    back into rotation: it drains for the rest of its siblings' drain."""
    port = free_port()
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=5, ops_address=f"127.0.0.1:{port}")
    asked: list[bool] = []

    def draining_sibling(port: int | None, drain: bool, left: float | None) -> dict[str, Any]:
        asked.append(drain)
        return {"pid": 4545, "left": 0.6}

    # The sibling, draining since before this worker joined its group.
    member = serving(f"{PREFIX}/{group_of(port)}/4545-1", draining_sibling)
    try:
        async with LifespanManager(watch.instrument(Starlette())):
            deadline = time.monotonic() + 5
            while watch.state is not State.DRAINING:
                assert time.monotonic() < deadline, watch.state
                await asyncio.sleep(0.01)
            started = time.monotonic()
            assert asked and set(asked) == {False}  # asked what is left, not told to drain
            while not any(e["event"] == "lifespan.drain.end" for e in logs):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            # Its own drain is the siblings' rest (0.6 s), not its drain_delay (5 s).
            assert time.monotonic() - started < 0.6 * 3
            assert watch.state is State.DRAINING  # out of rotation until SIGTERM
    finally:
        member.close()
    (begin,) = [e for e in logs if e["event"] == "lifespan.drain.begin"]
    assert begin["signal"] == "request"


async def test_a_worker_asked_to_drain_while_starting_drains_once_ready(
    logs: list[dict[str, Any]],
) -> None:
    """A sibling's drain that began while this worker was starting reaches it
    as a member; it cannot drain yet, and drains for the rest once ready."""
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=5, ops_address="127.0.0.1:0")
    answers: list[dict[str, Any] | None] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        (ours,) = members(group_of(watch.ops_port))
        answers.append(await asyncio.to_thread(ask, ours, None, left=0.6))
        yield

    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        deadline = time.monotonic() + 5
        while watch.state is not State.DRAINING:
            assert time.monotonic() < deadline, watch.state
            await asyncio.sleep(0.01)
        started = time.monotonic()
        while not any(e["event"] == "lifespan.drain.end" for e in logs):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 0.6 * 3  # the rest of 0.6 s, not 5 s
    assert answers and answers[0] is not None and answers[0]["draining"] is False, answers


async def test_a_worker_ready_while_no_sibling_drains_stays_ready() -> None:
    watch = ops_watch(5)
    with_sibling: list[_Member] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        with_sibling.append(
            serving(f"{PREFIX}/{group_of(watch.ops_port)}/4646-1", lambda p, d, left: {"left": 0.0})
        )
        yield

    try:
        async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
            await asyncio.sleep(0.3)
            assert watch.state is State.READY
    finally:
        for member in with_sibling:
            member.close()


def test_a_member_that_dies_while_asked_is_gone_not_failed() -> None:
    name = f"{PREFIX}/{os.getuid()}/ops-1/4747-1"
    dying = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dying.bind("\0" + name)
    dying.listen()

    def die() -> None:
        conn, _ = dying.accept()
        dying.close()  # the name goes first, as when a process dies
        conn.close()

    thread = threading.Thread(target=die, daemon=True)
    thread.start()
    assert ask_all([name], None, timeout=2) == {name: None}
    thread.join(5)
