"""Attacks on the ops listener, against an app under a real server in a process of its own.

Real sockets on loopback, bounded loops that stop by themselves; what the
app's process spends is read from /proc (its RSS, threads and fds).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import env, free_ports, http_get, running, uvicorn_argv, wait_for

APP = """
import os
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from lifewatch import Lifewatch

watch = Lifewatch(
    service=os.environ["SERVICE"],
    ops_address="127.0.0.1:" + os.environ["OPS_PORT"],
    drain_delay=0,
)

async def home(request):
    return PlainTextResponse("app")

app = watch.instrument(Starlette(routes=[Route("/", home)]))
"""


def _argv(server: str, port: int) -> list[str]:
    if server == "hypercorn":  # -w 0: the server's own process serves
        return [sys.executable, "-m", "hypercorn", "-w", "0", "--bind", f"127.0.0.1:{port}"]
    return uvicorn_argv(port, "ops_app:app")


@contextlib.contextmanager
def app_process(
    tmp_path: Path,
    service: str,
    ports: tuple[int, int],
    server: str = "uvicorn",
    fds: int | None = None,
) -> Iterator[int]:
    """The app (its port, then its ops port) under ``server``, ready: its pid."""
    (tmp_path / "ops_app.py").write_text(APP)
    port, ops = ports
    environ = env(SERVICE=service, OPS_PORT=str(ops))
    environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{environ['PYTHONPATH']}"
    argv = _argv(server, port)
    argv += ["ops_app:app"] if server == "hypercorn" else []
    if fds is not None:  # as `ulimit -n` does, then the server
        limit = (
            f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({fds}, {fds}))"
        )
        argv = [sys.executable, "-c", limit + "; os.execv(sys.argv[1], sys.argv[1:])", *argv]
    log = tmp_path / f"{service}.log"
    with running(argv, log, environ) as proc:
        wait_for(f"{service} answering", lambda: http_get(f"http://127.0.0.1:{port}/") == "app", 60)
        yield proc.pid


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _count(pid: int, what: str) -> int:
    return len(os.listdir(f"/proc/{pid}/{what}"))


def test_100_mb_of_headers_grow_the_app_by_less_than_32_mb(tmp_path: Path) -> None:
    ports = free_ports(2)
    with app_process(tmp_path, "headers", (ports[0], ports[1])) as pid:
        before = _status(pid, "VmRSS")  # kB
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        chunk = line * 64  # 64 KiB
        sent, refused = 0, 0
        while sent < 100 * 2**20:  # on one connection as long as the listener keeps it
            with socket.create_connection(("127.0.0.1", ports[1]), timeout=10) as raw:
                raw.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                with contextlib.suppress(OSError):
                    while sent < 100 * 2**20:
                        raw.sendall(chunk)
                        sent += len(chunk)
                with contextlib.suppress(OSError):
                    refused += raw.recv(4096).startswith(b"HTTP/1.1 431 ")
        grown = (_status(pid, "VmRSS") - before) / 1024
        assert grown < 32, f"RSS grew {grown:.1f} MB after 100 MB of headers"
        assert refused > 0  # each connection got a 431 (when it could read it)
        assert http_get(f"http://127.0.0.1:{ports[0]}/") == "app"


class SlowClients:
    """``n`` connections sending a request's head a byte at a time, never ending it."""

    def __init__(self, port: int, n: int) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(n):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            self.sockets.append(sock)
        self.begun: set[socket.socket] = set()

    def trickle(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # not connected yet, or cut off
                if sock in self.begun:
                    sock.send(b"a")
                else:
                    sock.send(b"GET /livez HTTP/1.1\r\nX-Slow: ")
                    self.begun.add(sock)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _under_slow_clients(pid: int, ports: tuple[int, int], n: int) -> tuple[int, int]:
    """``n`` slow clients on the ops port for about two seconds, the app's port
    asked meanwhile; the threads the app added, and its fds once they left."""
    port, ops = ports
    threads, fds = _count(pid, "task"), _count(pid, "fd")
    clients = SlowClients(ops, n)
    most = 0
    try:
        for _ in range(8):
            clients.trickle()
            most = max(most, _count(pid, "task"))
            time.sleep(0.25)
        assert http_get(f"http://127.0.0.1:{port}/", timeout=10) == "app"
        most = max(most, _count(pid, "task"))
    finally:
        clients.close()
    # Every fd the clients took comes back once they left.
    wait_for(
        f"the app's fds back to {fds} once the clients left",
        lambda: _count(pid, "fd") <= fds,
        5,
        step=0.05,
    )
    return most - threads, _count(pid, "fd")


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_600_slow_clients_leave_the_app_answering_with_few_threads(
    server: str, tmp_path: Path
) -> None:
    port, ops = free_ports(2)
    with app_process(tmp_path, f"slow-{server}", (port, ops), server) as pid:
        added, _ = _under_slow_clients(pid, (port, ops), 600)
        assert added <= 64, f"{added} threads added by 600 slow clients"


def test_1100_slow_clients_with_1024_fds_leave_the_app_port_answering(tmp_path: Path) -> None:
    port, ops = free_ports(2)
    with app_process(tmp_path, "fds", (port, ops), fds=1024) as pid:
        limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
        (files,) = [line.split()[3:5] for line in limits if line.startswith("Max open files")]
        assert files == ["1024", "1024"]
        _under_slow_clients(pid, (port, ops), 1100)


def test_two_unrelated_apps_never_share_one_ops_port(tmp_path: Path) -> None:
    """The second app started on the same ops port says so, naming the port
    and the first app's process; the port answers for the first app only."""
    first_port, second_port, ops = free_ports(3)
    with (
        app_process(tmp_path, "first", (first_port, ops)) as first,
        app_process(tmp_path, "second", (second_port, ops)),
    ):
        said = (tmp_path / "second.log").read_text()
        assert f"cannot listen on 127.0.0.1:{ops}: " in said, said
        assert f"pid {first} (" in said, said
        for _ in range(20):  # each a new connection: the kernel would spread them
            metrics = http_get(f"http://127.0.0.1:{ops}/metrics")
            assert 'service="first"' in metrics and 'service="second"' not in metrics
