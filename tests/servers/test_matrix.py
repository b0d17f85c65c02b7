"""The server matrix: each server really installed and run with the same app.

For every server: a failed startup exits non-zero with one line naming the
phase; the probes answer on the ops listener from startup on, while a phase
blocks the event loop; a drain under
load through the ``preStop`` path (``python -m lifewatch drain``, then
SIGTERM) fails no request, runs the shutdown phases and exits within drain +
shutdown + 2 s; where lifewatch stands in front of the server's SIGTERM
handler, the signal alone does the same. With several workers sharing the
port (gunicorn, ``uvicorn --workers``, ``hypercorn -w``, ``granian
--workers``), one ``preStop`` hook takes every worker out of rotation,
a worker restarted during it included. The README's server table is this
file's results.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.servers import env, free_ports, running, wait_for, which_worker

DRAIN, SHUTDOWN = 1.0, 3.0
APP = "tests.apps.matrix:app"


@dataclass(frozen=True)
class Server:
    command: str
    """``python -m`` this, with ``{port}`` and ``{app}`` filled in."""
    signal_drain: bool
    """lifewatch stands in front of its SIGTERM handler."""
    workers: int = 1
    every_shutdown: bool = True
    """Every worker's shutdown phases run: the server lets each finish."""

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", *self.command.format(port=port, app=APP).split()]


PY = sys.executable
SERVERS = {
    "uvicorn-h11": Server(
        "uvicorn {app} --port {port} --http h11 --loop asyncio --lifespan on", signal_drain=True
    ),
    "uvicorn-httptools": Server(
        "uvicorn {app} --port {port} --http httptools --loop uvloop --lifespan on",
        signal_drain=True,
    ),
    # -w 0: one process, the server itself (hypercorn's worker processes exit
    # 0 after a failed startup: pgjones/hypercorn#269).
    "hypercorn": Server("hypercorn -w 0 --bind 127.0.0.1:{port} {app}", signal_drain=True),
    "granian": Server(
        "granian --interface asgi --host 127.0.0.1 --port {port} --workers 1 {app}",
        signal_drain=False,
    ),
    "gunicorn-uvicorn-workers": Server(
        "gunicorn -k uvicorn_worker.UvicornWorker -w 2 --bind 127.0.0.1:{port} "
        "--graceful-timeout 10 {app}",
        signal_drain=True,
        workers=2,
    ),
}
ALL = [pytest.param(s, id=name) for name, s in SERVERS.items()]
SIGNAL = [pytest.param(s, id=name) for name, s in SERVERS.items() if s.signal_drain]


@pytest.mark.parametrize("server", ALL)
def test_a_failed_startup_exits_non_zero_naming_the_phase(server: Server, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    done = subprocess.run(
        server.argv(port),
        env=env(FAIL="1"),
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "lifewatch: startup phase 'database' failed (error)" in output.splitlines(), output


class Load:
    """Requests without pause on a kept-alive and a fresh connection; every failure kept."""

    def __init__(self, base: str) -> None:
        self.kept = httpx.Client(base_url=base, timeout=5)
        self.fresh = httpx.Client(
            base_url=base, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.failures: list[str] = []
        self.served = 0

    def once(self) -> None:
        for client in (self.kept, self.fresh):
            try:
                response = client.get("/")
                if response.status_code == 200 and response.text == "home":
                    self.served += 1
                else:
                    self.failures.append(f"{response.status_code} {response.text[:80]}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))

    def close(self) -> None:
        self.kept.close()
        self.fresh.close()


def readyz(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def starting(url: str) -> str | None:
    """The body of a 503 answer naming the phase that blocks, else None."""
    try:
        response = httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return None  # not listening yet
    named = "phase 'load-model' running" in response.text
    return response.text if response.status_code == 503 and named else None


@pytest.mark.parametrize("server", ALL)
def test_prestop_drain_under_load(server: Server, tmp_path: Path) -> None:
    port, ops = free_ports(2)
    mark = tmp_path / "shutdown.txt"
    service = unique("load")
    environ = env(
        SERVICE=service,
        OPS_PORT=str(ops),
        BLOCK="1",
        DRAIN=str(DRAIN),
        SHUTDOWN=str(SHUTDOWN),
        MARK_FILE=str(mark),
    )
    log = tmp_path / "server.log"
    base, opsbase = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops}"
    with running(server.argv(port), log, environ) as proc:
        try:
            # While a startup phase blocks the event loop for 1 s, the ops
            # listener answers, naming it.
            during = wait_for(
                "/startupz?verbose on the ops listener during startup",
                lambda: starting(f"{opsbase}/startupz?verbose"),
                30,
                step=0.02,
            )
            assert "[-]lifespan failed: starting: phase 'load-model' running" in during
            wait_for(
                "/readyz 200 on the ops listener", lambda: readyz(f"{opsbase}/readyz") == 200, 30
            )
            wait_for("the app's port", lambda: readyz(f"{base}/readyz") == 200, 30)
            # The probes, as documented, on the ops listener; /metrics only there.
            for path in ("/livez", "/startupz", "/readyz/loop"):
                assert httpx.get(f"{opsbase}{path}").status_code == 200, path
            assert "lifespan_state" in httpx.get(f"{opsbase}/metrics").text
            assert httpx.get(f"{base}/metrics").status_code == 404
            load = Load(base)
            codes: list[int] = []
            started = time.monotonic()
            while time.monotonic() - started < 0.3:
                load.once()
            drain = subprocess.Popen(
                [PY, "-m", "lifewatch", "drain", "--service", service],
                env=env(),
                stderr=subprocess.PIPE,
                text=True,
            )
            drain_at, drain_wall = time.monotonic(), time.time()
            while drain.poll() is None:  # the preStop hook runs: traffic goes on
                load.once()
                codes.append(readyz(f"{opsbase}/readyz"))
            assert drain.returncode == 0, drain.stderr.read() if drain.stderr else ""
            assert time.monotonic() - drain_at >= DRAIN - 0.05
            load.close()
            os.kill(proc.pid, signal.SIGTERM)  # then the kubelet's SIGTERM
            returncode = proc.wait(DRAIN + SHUTDOWN + 2 + 5)
            exited = time.monotonic() - drain_at
        except BaseException:
            print(log.read_text()[-5000:])
            raise
    output = log.read_text()
    assert load.failures == [], load.failures[:5]
    assert load.served > 20
    assert 503 in codes[len(codes) // 2 :], codes  # readiness failed during the drain
    if server.workers == 1:
        assert set(codes[len(codes) // 2 :]) == {503}, codes
    assert exited <= DRAIN + SHUTDOWN + 2, (exited, output[-3000:])
    assert returncode in (0, -signal.SIGTERM), (returncode, output[-3000:])
    # Every worker's shutdown phases ran, after the drain began.
    marks = [float(t) for t in mark.read_text().split()]
    assert len(marks) == server.workers, output[-3000:]
    assert min(marks) - drain_wall >= DRAIN - 0.05


@pytest.mark.parametrize("server", SIGNAL)
def test_signal_drain_under_load(server: Server, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    mark = tmp_path / "shutdown.txt"
    environ = env(DRAIN=str(DRAIN), SHUTDOWN=str(SHUTDOWN), MARK_FILE=str(mark))
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with running(server.argv(port), log, environ) as proc:
        try:
            wait_for("/readyz 200", lambda: readyz(f"{base}/readyz") == 200, 30)
            if server.workers > 1:  # every worker up
                time.sleep(0.5)
            load = Load(base)
            codes: list[tuple[float, int]] = []
            started = time.monotonic()
            sigterm_at: float | None = None
            sigterm_wall = 0.0
            while sigterm_at is None or time.monotonic() < sigterm_at + DRAIN - 0.2:
                if sigterm_at is None and time.monotonic() - started >= 0.3:
                    os.kill(proc.pid, signal.SIGTERM)
                    sigterm_at, sigterm_wall = time.monotonic(), time.time()
                load.once()
                codes.append((time.monotonic(), readyz(f"{base}/readyz")))
            load.close()
            assert sigterm_at is not None
            returncode = proc.wait(DRAIN + SHUTDOWN + 2 + 5)
            exited = time.monotonic() - sigterm_at
        except BaseException:
            print(log.read_text()[-5000:])
            raise
    output = log.read_text()
    assert load.failures == [], load.failures[:5]
    after = [code for t, code in codes if t > sigterm_at + 0.2]
    assert after and set(after) == {503}, codes
    assert exited <= DRAIN + SHUTDOWN + 2, (exited, output[-3000:])
    assert returncode in (0, -signal.SIGTERM), (returncode, output[-3000:])
    marks = [float(t) for t in mark.read_text().split()]
    assert len(marks) == server.workers, output[-3000:]
    assert min(marks) - sigterm_wall >= DRAIN - 0.05


# Several workers in one container: the hook must take every one out of rotation.
MULTI = {
    "gunicorn-uvicorn-workers": SERVERS["gunicorn-uvicorn-workers"],
    "uvicorn-workers": Server(
        "uvicorn {app} --port {port} --workers 2 --lifespan on", signal_drain=True, workers=2
    ),
    # hypercorn's supervisor sends SIGTERM to the other workers as soon as one
    # exits (hypercorn/run.py: terminate() after the first sentinel), which
    # kills them in their lifespan shutdown: the first one's phases run, the
    # others' only if they are quick enough.
    "hypercorn-workers": Server(
        "hypercorn -w 2 --bind 127.0.0.1:{port} {app}",
        signal_drain=False,
        workers=2,
        every_shutdown=False,
    ),
    "granian-workers": Server(
        "granian --interface asgi --host 127.0.0.1 --port {port} --workers 2 {app}",
        signal_drain=False,
        workers=2,
    ),
}


def every_worker_ready(fresh: httpx.Client, readyz: str, workers: int) -> set[int]:
    """The pids of the workers sharing the port, once each answered ready."""
    seen: set[int] = set()

    def all_ready() -> bool:
        pid, status = which_worker(fresh, readyz)
        if status == 200:
            seen.add(pid)
        return len(seen) == workers

    wait_for(f"{workers} workers ready", all_ready, 60, step=0.01)
    return seen


def prestop(service: str) -> subprocess.Popen[str]:
    """``python -m lifewatch drain --service NAME``, as the kubelet runs the hook;
    its lines on stderr."""
    return subprocess.Popen(
        [PY, "-m", "lifewatch", "drain", "--service", service],
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )


SERVICES: list[str] = []


def unique(name: str) -> str:
    """A service name no other test running at the same time uses."""
    SERVICES.append(f"{name}{os.getpid()}x{time.monotonic_ns()}")
    return SERVICES[-1]


@pytest.fixture(autouse=True)
def _no_channel_left() -> Iterator[None]:
    """Workers killed on purpose (or cut short by their server) leave their
    drain channel's directory, as a dead worker does: removed here."""
    yield
    while SERVICES:
        pattern = f"lifewatch-{os.geteuid()}-{SERVICES.pop()}-*"
        for path in Path(tempfile.gettempdir()).glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("on", ["ops", "app"])
@pytest.mark.parametrize("server", [pytest.param(s, id=n) for n, s in MULTI.items()])
def test_prestop_drain_reaches_every_worker(server: Server, on: str, tmp_path: Path) -> None:
    """One preStop hook, probes on the ops listener or the app's port: every
    worker's /readyz fails for the whole drain, the hook returns after it,
    no request fails, and SIGTERM then runs every worker's shutdown phases."""
    port, ops = free_ports(2)
    mark = tmp_path / "shutdown.txt"
    extra = {"OPS_PORT": str(ops)} if on == "ops" else {}
    service = unique("every")
    environ = env(
        SERVICE=service,
        DRAIN=str(DRAIN),
        SHUTDOWN=str(SHUTDOWN),
        MARK_FILE=str(mark),
        NAME_WORKER="1",
        **extra,
    )
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    probes = f"http://127.0.0.1:{ops if on == 'ops' else port}"
    readyz = f"{probes}/readyz?verbose"
    fresh = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))
    with fresh, running(server.argv(port), log, environ) as proc:
        try:
            # Every worker answers on the shared port, ready.
            seen = every_worker_ready(fresh, readyz, server.workers)
            load = Load(base)
            drain = prestop(service)
            drain_at, drain_wall = time.monotonic(), time.time()
            said: list[tuple[float, str]] = []  # the hook's lines, when they came

            def read() -> None:
                assert drain.stderr is not None
                for line in drain.stderr:
                    said.append((time.monotonic() - drain_at, line))

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            answers: list[tuple[float, int, int]] = []
            while drain.poll() is None:  # the preStop hook runs: traffic goes on
                load.once()
                for _ in range(3):
                    answers.append((time.monotonic() - drain_at, *which_worker(fresh, readyz)))
            took = time.monotonic() - drain_at
            reader.join(5)
            assert drain.returncode == 0, said
            load.close()
            os.kill(proc.pid, signal.SIGTERM)  # then the kubelet's SIGTERM
            returncode = proc.wait(DRAIN + SHUTDOWN + 2 + 5)
            exited = time.monotonic() - drain_at
        except BaseException:
            print(log.read_text()[-5000:])
            raise
    output = log.read_text()
    assert said, "the hook said nothing"
    answered = said[0][0]  # every worker has begun draining
    # From the hook's answer to its end, every worker answers 503.
    late = [(pid, status) for t, pid, status in answers if t > answered]
    assert {pid for pid, _ in late} == seen, (seen, answers)
    assert {status for _, status in late} == {503}, (
        said,
        [a for a in answers if a[0] > answered][:20],
    )
    assert f"draining {server.workers} workers" in said[0][1], said
    assert took - answered >= DRAIN - 0.05, said
    assert load.failures == [], load.failures[:5]
    assert load.served > 20
    assert exited <= DRAIN + SHUTDOWN + 2, (exited, output[-3000:])
    assert returncode in (0, -signal.SIGTERM), (returncode, output[-3000:])
    marks = [float(t) for t in mark.read_text().split()]
    per_worker = {pid: sum(1 for p, _ in late if p == pid) for pid in seen}
    print(
        f"{server.command.split()[0]} {on}: hook answered at {answered:.2f}s, returned at"
        f" {took:.2f}s; 503 from every worker after it {per_worker}; {load.served} requests"
        f" served, {len(load.failures)} failed; exit {exited:.2f}s after the hook began"
    )
    expected = {server.workers} if server.every_shutdown else set(range(1, server.workers + 1))
    assert len(marks) in expected, output[-3000:]
    assert min(marks) - drain_wall >= DRAIN - 0.05


def test_a_worker_restarted_during_the_prestop_drain_drains_too(tmp_path: Path) -> None:
    """gunicorn restarts a worker killed during the hook: the new one never
    answers ready, it drains for what its sibling has left."""
    server, drain_delay = SERVERS["gunicorn-uvicorn-workers"], 4.0
    port, ops = free_ports(2)
    service = unique("restart")
    environ = env(SERVICE=service, OPS_PORT=str(ops), DRAIN=str(drain_delay), NAME_WORKER="1")
    log = tmp_path / "server.log"
    readyz = f"http://127.0.0.1:{ops}/readyz?verbose"
    fresh = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))
    with fresh, running(server.argv(port), log, environ) as proc:
        try:
            seen = every_worker_ready(fresh, readyz, server.workers)
            drain = prestop(service)
            drain_at = time.monotonic()
            assert drain.stderr is not None
            said = drain.stderr.readline()  # the answer: both workers drain
            assert "draining 2 workers" in said, said
            victim = min(seen)
            os.kill(victim, signal.SIGKILL)
            answers: list[tuple[int, int]] = []
            while drain.poll() is None:
                answers.append(which_worker(fresh, readyz))
            assert drain.returncode == 0, drain.stderr.read()
            assert time.monotonic() - drain_at >= drain_delay - 0.05
            drain.stderr.close()
            os.kill(proc.pid, signal.SIGTERM)
            stopping = time.monotonic()
            proc.wait(drain_delay + SHUTDOWN + 2 + 5)
            exited = time.monotonic() - stopping
        except BaseException:
            print(log.read_text()[-5000:])
            raise
    restarted = {pid for pid, _ in answers} - seen - {0}
    assert restarted, f"no restarted worker answered: {answers[-5:]}"
    theirs = [status for pid, status in answers if pid in restarted]
    print(f"restarted worker {restarted}: {len(theirs)} answers, {theirs.count(200)} of them 200")
    assert set(theirs) == {503}, theirs
    # The workers shut down by themselves, before gunicorn's --graceful-timeout
    # (10 s) would kill them: far past the time a clean shutdown takes.
    assert exited < 10, f"{exited:.2f}s from SIGTERM to exit"
