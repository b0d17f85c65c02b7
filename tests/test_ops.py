"""The ops listener and the drain endpoint, in process: a real socket, a real lifespan."""

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
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, State, _ops
from lifewatch._ops import CLOSE_WAIT
from tests.support.probes import get
from tests.support.servers import env, free_port

pytestmark = pytest.mark.anyio


def fetch(url: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, str, float]:
    """Status, body and seconds taken, from a thread other than the app's loop."""
    start = time.perf_counter()
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    return status, body, time.perf_counter() - start


async def fetch_async(url: str, method: str = "GET") -> tuple[int, str, float]:
    return await asyncio.to_thread(fetch, url, method)


@pytest.mark.blockbuster_off("a phase blocks the loop: the ops listener answers anyway")
async def test_answers_during_startup_while_the_loop_is_blocked_then_closes() -> None:
    release = threading.Event()
    watch = Lifewatch(
        registry=CollectorRegistry(), ops_address="127.0.0.1:0", ops_only=True, drain_delay=0
    )

    @watch.check("db", timeout=0.3)
    async def db() -> None:
        await asyncio.sleep(0)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watch.phase("load-model"):
            release.wait(10)  # blocks the event loop, as a sync model load does
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    answers: list[tuple[int, str, float]] = []

    def poll() -> None:
        while watch.ops_port is None:
            time.sleep(0.01)
        base = f"http://127.0.0.1:{watch.ops_port}"
        for _ in range(5):
            answers.append(fetch(f"{base}/startupz?verbose"))
        answers.append(fetch(f"{base}/readyz?verbose"))
        answers.append(fetch(f"{base}/metrics"))
        release.set()

    poller = threading.Thread(target=poll)
    poller.start()
    async with LifespanManager(app, startup_timeout=20):
        poller.join()
        port = watch.ops_port
        assert port is not None
        base = f"http://127.0.0.1:{port}"
        for status, body, _ in answers[:5]:
            assert status == 503
            assert "[-]lifespan failed: starting: phase 'load-model' running\n" in body
        # The kubelet's probe timeout is 1 s: every answer came well within it.
        assert max(t for *_, t in answers[:5]) < 0.5, answers
        status, body, took = answers[5]
        # The readiness check could not run on the blocked loop: it failed on
        # its own timeout, not the probe's.
        assert status == 503 and "[-]db failed: reason withheld" in body, body
        assert took < 0.3 * 3, took
        assert answers[6][0] == 200 and "lifespan_state" in answers[6][1]
        # Once serving: the same endpoints, the checks on the app's loop.
        status, body, _ = await fetch_async(f"{base}/readyz?verbose")
        assert status == 200 and "[+]db ok" in body, body
        assert (await fetch_async(f"{base}/nope"))[0] == 404
        # ops_only: no /metrics on the app's port; the probes stay.
        assert (await get(app, "/metrics")).status_code == 404
        assert (await get(app, "/readyz")).status_code == 200
    # Closed with the shutdown, within a second.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            break
        time.sleep(0.05)  # noqa: ASYNC251 - the app is gone
    else:
        raise AssertionError("the ops listener still accepts connections after shutdown")


@pytest.mark.blockbuster_off("the loop is blocked: what a probe costs then")
async def test_a_blocked_loop_costs_a_probe_its_check_timeout_not_more() -> None:
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)

    @watch.check("db", timeout=0.2)
    async def db() -> None:
        await asyncio.sleep(0)

    app = watch.instrument(Starlette())
    async with LifespanManager(app):
        url = f"http://127.0.0.1:{watch.ops_port}/readyz?verbose"
        pending = asyncio.get_running_loop().run_in_executor(None, fetch, url)
        time.sleep(1.0)  # noqa: ASYNC251 - the loop is blocked for 5x the check's timeout
        status, body, took = await pending
        assert status == 503 and "[-]db failed" in body
        assert took < 1.0 + 0.2  # answered when the timeout passed, not when the loop woke
    assert watch.ops_port is None


async def test_a_port_in_use_is_one_line_naming_the_address(
    logs: list[dict[str, Any]],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        watch = Lifewatch(registry=CollectorRegistry(), ops_address=address)
        app = watch.instrument(Starlette())
        async with LifespanManager(app):
            assert watch.ops_port is None
            assert (await get(app, "/readyz")).status_code == 200  # the app still starts
    (failed,) = [e for e in logs if e["event"] == "lifespan.ops.failed"]
    assert failed["address"] == address and "exc_info" not in failed
    assert failed["detail"].startswith(f"cannot listen on {address}: ")
    assert "\n" not in failed["detail"]


_WORKER = """
import asyncio, socket, sys
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from lifewatch import Lifewatch

held = None if sys.argv[2] == "-" else socket.socket(fileno=int(sys.argv[2]))  # its server's
watch = Lifewatch(service=sys.argv[3], ops_address="127.0.0.1:" + sys.argv[1], drain_delay=0)

async def main():
    async with LifespanManager(watch.instrument(Starlette())):
        print("PORT", watch.ops_port, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test is done

asyncio.run(main())
"""


def _worker(stack: ExitStack, ops: int, held: socket.socket | None, name: str) -> tuple[int, str]:
    """A process as a server's worker starts it (holding ``held``, its server's
    listening socket), with a lifewatch on ``ops``: its pid, and its ops port or
    the line saying why it has none."""
    args = [sys.executable, "-c", _WORKER, str(ops), "-" if held is None else str(held.fileno())]
    proc = stack.enter_context(
        subprocess.Popen(
            [*args, name],
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=() if held is None else (held.fileno(),),
        )
    )
    stack.callback(proc.kill)
    assert proc.stdout is not None
    said = ""
    for line in proc.stdout:
        if line.startswith("PORT "):
            return proc.pid, said if line.split()[1] == "None" else "listening"
        said += line
    raise AssertionError(f"worker {name} exited: {proc.wait()}")


def _server_socket(listen: bool) -> socket.socket:
    """A socket as a server binds one before starting its workers: gunicorn
    listens on it first, uvicorn and hypercorn leave that to each worker."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    if listen:
        held.listen()
    held.set_inheritable(True)
    return held


def test_the_workers_of_one_server_share_the_port_and_nothing_else_does() -> None:
    """Workers holding their server's socket share the ops port; a worker of
    another server and a process of no server are refused it, in one line
    naming the port and a process that listens there."""
    port = free_port()
    with ExitStack() as stack, _server_socket(False) as ours, _server_socket(True) as theirs:
        first, answer = _worker(stack, port, ours, "a")
        assert answer == "listening"
        assert _worker(stack, port, ours, "a")[1] == "listening"  # its sibling
        assert fetch(f"http://127.0.0.1:{port}/livez")[0] == 200
        for held in (theirs, None):
            said = _worker(stack, port, held, "b")[1]
            assert f"cannot listen on 127.0.0.1:{port}: " in said, said
            assert f"pid {first} (" in said, said
            if held is not None:
                assert "no worker of this server: not shared" in said, said


def _ask(
    connection: http.client.HTTPConnection, method: str, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


async def test_one_kept_alive_connection_answers_what_changes() -> None:
    """What the kubelet, a scraper and wrk do, on one connection: kept answers
    (written by the serving thread) follow every change, HEAD among GETs included."""
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)
    app = watch.instrument(Starlette())
    async with LifespanManager(app):
        assert watch._ops is not None

        def exchange() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", watch.ops_port, timeout=5)
            for _ in range(3):  # the second and third from what was kept
                status, headers, body = _ask(connection, "GET", "/readyz")
                assert (status, body) == (200, b"ok"), (status, body)
                assert headers["content-length"] == "2" and "date" in headers
                assert headers["cache-control"] == "no-store"
            status, headers, body = _ask(connection, "HEAD", "/readyz")
            assert (status, headers["content-length"], body) == (200, "2", b"")
            watch.refuse_traffic("maintenance")
            for _ in range(2):  # built, then kept
                status, _, body = _ask(connection, "GET", "/readyz")
                assert status == 503 and b"refusing traffic: maintenance" in body, body
            watch.accept_traffic()
            for _ in range(2):
                assert _ask(connection, "GET", "/readyz")[::2] == (200, b"ok")
            status, _, body = _ask(connection, "GET", "/readyz?verbose")
            assert status == 200 and b"readyz check passed" in body, body
            assert _ask(connection, "GET", "/read%79z")[::2] == (200, b"ok")  # decoded
            assert _ask(connection, "GET", "/nope")[0] == 404
            assert _ask(connection, "POST", "/livez")[0] == 405
            status, headers, _ = _ask(connection, "GET", "/livez", Connection="close")
            assert status == 200 and headers.get("connection") == "close"
            connection.close()
            # HEAD between GETs, then a close, pipelined: http.client would drop
            # a body sent after a HEAD's headers unseen; the raw bytes show it.
            with socket.create_connection(("127.0.0.1", watch.ops_port), timeout=5) as raw:
                ask = b"%s /readyz HTTP/1.1\r\nHost: x\r\n%s\r\n"
                close = b"Connection: close\r\n"
                raw.sendall(b"".join(ask % m for m in [(b"GET", b""), (b"HEAD", b"")] * 2))
                raw.sendall(ask % (b"GET", b"") + ask % (b"GET", close))
                data = b""
                while chunk := raw.recv(65536):
                    data += chunk
            # A GET's body runs into the next head; a HEAD's head into the next head.
            parts = data.split(b"\r\n\r\n")
            assert [p[:16] for p in parts] == [
                *[b"HTTP/1.1 200 OK\r", b"okHTTP/1.1 200 O"] * 2,
                b"HTTP/1.1 200 OK\r",
                b"okHTTP/1.1 200 O",
                b"ok",
            ], data
            assert b"connection: close" in parts[-2].lower() and parts[-1] == b"ok", data

        await asyncio.to_thread(exchange)


async def test_probes_waiting_on_a_hung_check_leave_livez_answering() -> None:
    """Eight ``/readyz`` waiting on a check that hangs, more than any small
    fixed pool of handlers: ``/livez`` on the same listener answers meanwhile."""
    started, release = asyncio.Event(), asyncio.Event()
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)

    @watch.check("hung", timeout=60)
    async def hung() -> None:
        started.set()
        await release.wait()

    async with LifespanManager(watch.instrument(Starlette())):
        base = f"http://127.0.0.1:{watch.ops_port}"
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(9)  # its own: the default executor may have fewer
        waiting = [
            loop.run_in_executor(pool, fetch, f"{base}/readyz?verbose", "GET", 60) for _ in range(8)
        ]
        await started.wait()
        await asyncio.sleep(0.2)  # the other seven arrive and join the run
        assert (await loop.run_in_executor(pool, fetch, f"{base}/livez"))[0] == 200
        assert not any(w.done() for w in waiting)  # answered while they all wait
        release.set()
        assert [(await w)[0] for w in waiting] == [200] * 8
        pool.shutdown(wait=False)  # its threads are done


async def test_closing_cuts_off_an_answer_still_under_way_after_close_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The listener closes: an answer waiting on a slow check gets ``CLOSE_WAIT``,
    then a 503 saying why, quietly."""
    release = asyncio.Event()
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)

    @watch.check("slow", timeout=CLOSE_WAIT * 10)
    async def slow() -> None:
        await release.wait()

    app = watch.instrument(Starlette())
    async with LifespanManager(app):
        url = f"http://127.0.0.1:{watch.ops_port}/readyz?verbose"
        pending = asyncio.create_task(asyncio.to_thread(fetch, url, "GET", CLOSE_WAIT * 10))
        await asyncio.sleep(0.2)
        closed_at = time.perf_counter()
    status, body, _ = await pending
    took = time.perf_counter() - closed_at
    release.set()
    assert status == 503 and "is closing" in body, (status, body)
    assert CLOSE_WAIT * 0.9 < took < CLOSE_WAIT * 3, took
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []


_EXITING = """
import asyncio, socket, sys, time
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from lifewatch import Lifewatch

watch = Lifewatch(ops_address="127.0.0.1:0", drain_delay=0)
held = []  # open until the process is gone

async def main():
    async with LifespanManager(watch.instrument(Starlette())):
        address = ("127.0.0.1", watch.ops_port)
        idle = socket.create_connection(address)  # kept alive, idle
        idle.sendall(b"GET /livez HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        halfway = socket.create_connection(address)  # a request not sent in full
        halfway.sendall(b"GET /livez HTTP/1.1\\r\\nHost: x\\r\\n")
        held.extend((idle, halfway))
        await asyncio.sleep(0.3)
    print(time.monotonic(), flush=True)

asyncio.run(main())
"""


def test_connections_under_way_never_hold_up_the_exit() -> None:
    """An idle kept-alive connection and a request sent halfway, still open:
    the process exits within a second of its shutdown all the same."""
    with subprocess.Popen(
        [sys.executable, "-c", _EXITING], env=env(), stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.wait(30)
        exited = time.monotonic()
    assert proc.returncode == 0, line
    shut_down = line.strip()
    assert exited - float(shut_down) < CLOSE_WAIT, exited - float(shut_down)


async def test_refuse_and_accept_traffic(
    registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    watch = Lifewatch(registry=registry)
    app = watch.instrument(Starlette())
    async with LifespanManager(app):
        watch.refuse_traffic("maintenance: reindexing")
        assert watch.state is State.DRAINING
        response = await get(app, "/readyz?verbose")
        assert response.status_code == 503
        assert "[-]lifespan failed: refusing traffic: maintenance: reindexing\n" in response.text
        assert (await get(app, "/livez")).status_code == 200
        assert registry.get_sample_value("lifespan_state", {"state": "draining"}) == 1
        watch.accept_traffic()
        assert watch.state is State.READY
        assert (await get(app, "/readyz")).status_code == 200
    moves = [(e["from"], e["to"]) for e in logs if e["event"] == "lifespan.state"]
    assert ("ready", "draining") in moves and ("draining", "ready") in moves
    assert [e["reason"] for e in logs if e["event"] == "lifespan.traffic.refused"] == [
        "maintenance: reindexing"
    ]
    assert any(e["event"] == "lifespan.traffic.accepted" for e in logs)


async def test_refused_before_ready_stays_out_until_accepted(registry: CollectorRegistry) -> None:
    watch = Lifewatch(registry=registry)
    watch.refuse_traffic("warming up by hand")
    app = watch.instrument(Starlette())
    async with LifespanManager(app):
        assert watch.state is State.DRAINING
        watch.accept_traffic()
        assert watch.state is State.READY


_ELSEWHERE = """
import asyncio, logging, sys
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from lifewatch import Lifewatch

watch = Lifewatch(ops_address="127.0.0.1:0", drain_delay=0)

async def main():
    async with LifespanManager(watch.instrument(Starlette())):
        print(watch.ops_port > 0, "uvicorn" in sys.modules, logging.getLevelName(5))

asyncio.run(main())
"""


def test_under_another_server_uvicorn_is_not_imported() -> None:
    """uvicorn installed but not serving the app (hypercorn, granian): the
    listener answers, and uvicorn's import-time effects (its ``TRACE`` level
    name) stay out of the app's process."""
    out = subprocess.run(
        [sys.executable, "-c", _ELSEWHERE], env=env(), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "Level", "5"], out.stdout


async def test_an_endpoint_that_raises_answers_503_and_is_logged(
    logs: list[dict[str, Any]],
) -> None:
    """Either server, one router: the error is logged once, the client gets a 503."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)
    async with LifespanManager(watch.instrument(Starlette())):
        assert watch._ops is not None
        watch._ops.routes["/broken"] = broken  # type: ignore[index]
        status, body, _ = await fetch_async(f"http://127.0.0.1:{watch.ops_port}/broken")
    assert status == 503 and "the endpoint failed" in body, (status, body)
    (error,) = [e for e in logs if e["event"] == "lifespan.probe.error"]
    assert error["path"] == "/broken" and error["listener"] == "ops"


def _exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection, then read until the listener closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with contextlib.suppress(OSError):  # cut off while sending: what was answered counts
            raw.sendall(data)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := raw.recv(65536):
                answer += chunk
    return answer


_GET = b"GET /livez HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_GET + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (_GET + b"".join(b"X-%d: a\r\n" % i for i in range(101)) + b"\r\n", b"431"),
        (_GET + b"X-A: a\r\n" * 2_000, b"431"),  # no end in sight: refused before it
        (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (_GET + b"Content-Length: 5000\r\n\r\n" + b"a" * 5000, b"413"),
        (_GET + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"GET /livez\r\n\r\n", b"400"),
        (_GET + b"Bad Header: a\r\n\r\n", b"400"),
        (b"GET /livez HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    ],
    ids=[
        "70KB-header",
        "101-lines",
        "lines-without-end",
        "long-target",
        "body",
        "chunked",
        "no-version",
        "bad-name",
        "http2",
    ],
)
async def test_a_request_out_of_bounds_is_refused_with_its_status_then_closed(
    request_bytes: bytes, status: bytes
) -> None:
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)
    async with LifespanManager(watch.instrument(Starlette())):
        port = watch.ops_port
        assert port is not None
        answer = await asyncio.to_thread(_exchange, port, request_bytes)
        assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
        assert b"connection: close" in answer.lower() and answer.endswith(b"\n"), answer
        # Within the bounds: served (a body up to the cap is read and dropped).
        within = _GET + b"Content-Length: 4\r\nConnection: close\r\n\r\nabcd"
        assert (await asyncio.to_thread(_exchange, port, within)).startswith(b"HTTP/1.1 200")


def _threads(port: int) -> int:
    """Threads of the listener on ``port`` (those of listeners still closing apart)."""
    return sum(t.name == f"lifewatch-ops:{port}" for t in threading.enumerate())


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_threads_are_fixed_connections_capped_and_slow_ones_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the load: the listener's threads are made once, connections
    beyond the cap wait in the backlog (no fd taken), and a connection idle or
    sending its request too slowly is closed after its timeout."""
    cap = 4
    monkeypatch.setattr(_ops, "MAX_CONNECTIONS", cap)
    monkeypatch.setattr(_ops, "HEAD_TIMEOUT", 1.0)
    monkeypatch.setattr(_ops, "KEEP_ALIVE", 1.0)
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0", drain_delay=0)
    async with LifespanManager(watch.instrument(Starlette())):
        port = watch.ops_port
        assert port is not None
        assert _threads(port) == 1

        def load() -> None:
            fds = _fds()
            with ExitStack() as stack:
                held = [
                    stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                    for _ in range(20)
                ]
                for raw in held:
                    raw.sendall(b"GET /livez HTTP/1.1\r\n")  # a head begun, never ended
                time.sleep(0.3)
                assert _threads(port) == 1
                # 20 of the test's, MAX_CONNECTIONS of the listener's: the rest
                # wait in the backlog (uncapped, it would hold 20). The count is
                # the whole process's: a few fds it opens or closes meanwhile
                # (an earlier test's socket, collected) are allowed for.
                listener = _fds() - fds - 20
                assert listener <= cap + 3, listener
                # Slow senders are cut off once HEAD_TIMEOUT has passed, the
                # backlog's turn comes, and they are cut off in turn.
                for raw in held:
                    assert raw.recv(100) == b""
            # Idle after an answer: closed once KEEP_ALIVE has passed.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(_GET + b"\r\n")
                assert raw.recv(4096).startswith(b"HTTP/1.1 200")
                assert raw.recv(4096) == b""
            # A slowloris: a byte at a time, never done, is closed too.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                deadline = time.monotonic() + 10 * _ops.HEAD_TIMEOUT
                with pytest.raises(OSError):  # cut off while trickling
                    while time.monotonic() < deadline:
                        raw.sendall(b"a")
                        time.sleep(0.05)
                        raw.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            if raw.recv(1) == b"":
                                raise ConnectionResetError("closed by the listener")
                        raw.setblocking(True)
                assert time.monotonic() < deadline

        await asyncio.to_thread(load)


_FORKING = """
import asyncio, os, subprocess, time
from contextlib import asynccontextmanager
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from lifewatch import Lifewatch

watch = Lifewatch(ops_address="127.0.0.1:0", drain_delay=0)
children = []

@asynccontextmanager
async def lifespan(app):
    async with watch.phase("pool"):
        pid = os.fork()
        if pid == 0:  # a process pool's worker, say: it outlives the app
            time.sleep(30)
            os._exit(0)
        # exec'd, offered every inheritable fd
        children.extend((pid, subprocess.Popen(["sleep", "30"], close_fds=False).pid))
    yield

async def main():
    async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
        assert not os.get_inheritable(watch._ops._served.socket.fileno())
        print(watch.ops_port, *children, flush=True)

asyncio.run(main())
"""


def test_a_child_forked_or_spawned_holds_no_ops_socket_so_the_port_refuses_once_the_app_exits() -> (
    None
):
    with subprocess.Popen(
        [sys.executable, "-c", _FORKING], env=env(), stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.wait(30)
    port, *children = map(int, line.split())
    try:
        for child in children:
            os.kill(child, 0)  # still alive
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
