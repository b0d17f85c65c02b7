"""Attacks on the drain (DESIGN §8): nobody but the app's user takes it out of rotation.

Each test is an attack the issue found on the operations layer, run against
real servers: a forged forwarding header, a second user squatting every name
and path lifewatch uses (before and after the app starts, answering with lies
or silence), and that user running the drain hook itself. The second user is
real (``useradd``; the suite runs as root in CI), its processes started with
``subprocess``'s ``user=``/``group=``. Every wait is bounded.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.servers import ROOT, env, free_ports, running, wait_for, which_worker

ATTACKER = "lifewatch-attacker"
APP = "tests.apps.matrix:app"
DRAIN = 2.0
HOOK_BOUND = DRAIN + 20
"""Seconds the hook may take at most here: a stalled drain fails, never hangs the suite."""
FORGED = [
    ("x-forwarded-for", "127.0.0.1"),
    ("forwarded", "for=127.0.0.1"),
    ("x-real-ip", "127.0.0.1"),
]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes a second user: run as root (CI)")


def unique(name: str) -> str:
    return f"{name}{os.getpid()}x{time.monotonic_ns()}"


def outside_address() -> str:
    """This host's address on its network (not loopback): a client from elsewhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.254", 9))  # no packet is sent: the route picks the source
        address = str(probe.getsockname()[0])
    assert not address.startswith("127."), "no non-loopback address to attack from"
    return address


def readyz(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


# -- forged forwarding headers ---------------------------------------------------


@pytest.mark.parametrize("on", ["app", "ops"])
def test_no_request_with_any_forwarding_header_drains(on: str, tmp_path: Path) -> None:
    """uvicorn trusting every proxy (``--proxy-headers --forwarded-allow-ips='*'``,
    common behind an ingress) rewrites the client to 127.0.0.1 on a forged
    ``X-Forwarded-For``; a sidecar on the pod's loopback adds no header at
    all. No request, from anywhere, with any header, drains: the drain path
    is not served, and the app stays ready."""
    port, ops = free_ports(2)
    extra = {"OPS_PORT": str(ops)} if on == "ops" else {}
    environ = env(SERVICE=unique("forged"), DRAIN=str(DRAIN), **extra)
    argv = [
        sys.executable, "-m", "uvicorn", APP, "--host", "0.0.0.0", "--port", str(port),
        "--proxy-headers", "--forwarded-allow-ips", "*", "--lifespan", "on",
    ]  # fmt: skip
    # The app's port from another host; the ops port from the pod itself (a sidecar).
    host, target = (outside_address(), port) if on == "app" else ("127.0.0.1", ops)
    base = f"http://{host}:{target}"
    with running(argv, tmp_path / "server.log", environ):
        wait_for("ready", lambda: readyz(f"{base}/readyz") == 200, 30)
        answers = []
        for name, value in [*FORGED, ("x-none", "")]:
            for method in ("POST", "PUT", "GET"):
                response = httpx.request(
                    method, f"{base}/lifewatch/drain", headers={name: value}, timeout=5
                )
                answers.append((name, method, response.status_code))
        time.sleep(0.2)  # a drain would have begun by now
        still = readyz(f"{base}/readyz")
    assert {status for _, _, status in answers} <= {404, 405}, answers
    assert still == 200


# -- a second user --------------------------------------------------------------


def as_attacker() -> dict[str, Any]:
    """``subprocess`` arguments that run a command as the second user, with a
    Python it can run and lifewatch importable."""
    uid, gid = attacker()
    path = os.pathsep.join([str(ROOT / "src"), sysconfig.get_paths()["purelib"]])
    python = _python_for(uid, gid, path)
    libs = str(Path(python).parent.parent / "lib")  # a copy's libpython, if it has one
    return {
        "python": python,
        "user": uid,
        "group": gid,
        "extra_groups": [],
        "cwd": "/",
        "env": {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": path, "LD_LIBRARY_PATH": libs},
    }


_copies: dict[str, str] = {}


def _python_for(uid: int, gid: int, path: str) -> str:
    """This interpreter, if the second user can run it with the test's packages;
    else a copy of its installation (less its site-packages) where that user can
    read it: pyenv's interpreters live in root's home, mode 0700, and the
    packages built for this Python need this Python's version."""

    def runs(python: str) -> bool:
        try:
            subprocess.run(
                [python, "-c", "import lifewatch"],
                user=uid,
                group=gid,
                extra_groups=[],
                cwd="/",
                env={
                    "PYTHONPATH": path,
                    "LD_LIBRARY_PATH": str(Path(python).parent.parent / "lib"),
                },
                check=True,
                timeout=60,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError):
            return False
        return True

    if runs(sys.executable):
        return sys.executable
    if sys.base_prefix not in _copies:
        copy = Path(tempfile.mkdtemp(prefix="lifewatch-python-"))
        atexit.register(shutil.rmtree, copy, ignore_errors=True)
        shutil.copytree(
            sys.base_prefix,
            copy / "python",
            symlinks=True,
            ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__", "idlelib"),
        )
        for part in [copy, *copy.rglob("*")]:
            if not part.is_symlink():
                part.chmod(
                    part.stat().st_mode | 0o055 if part.is_dir() else part.stat().st_mode | 0o044
                )
        name = f"python{sys.version_info.major}.{sys.version_info.minor}"
        _copies[sys.base_prefix] = str(copy / "python" / "bin" / name)
    python = _copies[sys.base_prefix]
    assert runs(python), f"the user {ATTACKER} cannot run {python} with lifewatch"
    return python


def attacker() -> tuple[int, int]:
    """The second user's uid and gid, made if missing."""
    try:
        entry = pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", ATTACKER], check=True, timeout=30
        )
        entry = pwd.getpwnam(ATTACKER)
    return entry.pw_uid, entry.pw_gid


SQUAT = r"""
import json, os, socket, stat, sys, tempfile, threading, time
prefix, service, stage = sys.argv[1], sys.argv[2], sys.argv[3]
base = tempfile.gettempdir()
now = time.time()
held = []

def fifo(path):
    os.mkfifo(path, 0o666)
    held.append(os.open(path, os.O_RDWR | os.O_NONBLOCK))  # a reader that never reads

def lying_dir(name, mode, state):
    path = os.path.join(base, prefix + name)
    os.mkdir(path)
    fifo(os.path.join(path, "drain"))
    with open(os.path.join(path, "state.json"), "wb") as f:
        f.write(state if isinstance(state, bytes) else json.dumps(state).encode())
    os.chmod(path, mode)
    return path

lies = [
    {"pid": 1, "service": service, "state": "draining", "drain_until": now + 1e9},
    {"pid": -5, "service": service, "state": "draining", "drain_until": -1},
    {"pid": 2, "service": service, "state": "ready", "drain_until": None},
    {"pid": "x", "service": service, "state": "draining", "drain_until": "soon"},
    b"\xff" * 5000,
]
for i, lie in enumerate(lies):
    for mode in (0o700, 0o777):
        lying_dir(f"{stage}{i}{mode:o}", mode, lie)
os.symlink(os.path.join(base, prefix + f"{stage}0700"), os.path.join(base, prefix + f"{stage}ln"))
fifo(os.path.join(base, prefix + f"{stage}fifo"))
with open(os.path.join(base, prefix + f"{stage}file"), "w") as f:
    json.dump(lies[0], f)
# After the app started: links to its own directories, under names the hook lists.
for name in os.listdir(base):
    if name.startswith(prefix) and os.lstat(os.path.join(base, name)).st_uid != os.getuid():
        os.symlink(os.path.join(base, name), os.path.join(base, prefix + f"{stage}to{len(held)}"))
        held.append(-1)

# Abstract unix sockets (what the old rendezvous used): a sibling of every
# name seen, answering a drain with lies (1e9 s to go) or with silence.
def squat_sockets():
    bound = set()
    while True:
        try:
            lines = open("/proc/net/unix").read().splitlines()[1:]
        except OSError:
            return
        for line in lines:
            fields = line.split()
            if len(fields) != 8 or not fields[7].startswith("@lifewatch"):
                continue
            group = fields[7][1:].rsplit("/", 1)[0]
            for role in ("liar", "silent"):
                name = f"{group}/4343{role}-1"
                if name in bound:
                    continue
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.bind("\0" + name)
                except OSError:
                    continue
                s.listen(64)
                bound.add(name)
                threading.Thread(target=serve, args=(s, role), daemon=True).start()
        time.sleep(0.05)

def serve(s, role):
    while True:
        conn, _ = s.accept()
        held.append(conn)
        if role == "liar":
            conn.sendall(json.dumps(
                {"pid": 4343, "draining": True, "remaining": 1e9, "left": 1e9, "member": True}
            ).encode() + b"\n")

threading.Thread(target=squat_sockets, daemon=True).start()
print("squatting", flush=True)
time.sleep(300)
"""


@contextlib.contextmanager
def squatter(prefix: str, service: str, stage: str) -> Iterator[None]:
    """The second user squatting every name and path lifewatch uses, until killed."""
    them = as_attacker()
    python = them.pop("python")
    child = subprocess.Popen(
        [python, "-c", SQUAT, prefix, service, stage], stdout=subprocess.PIPE, text=True, **them
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "squatting\n"
        yield
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def prestop_command(service: str, port: int) -> list[str]:
    """The ``preStop`` command, taken from ``python -m lifewatch k8s``'s own output."""
    done = subprocess.run(
        [sys.executable, "-m", "lifewatch", "k8s", APP, "--port", str(port)],
        env=env(SERVICE=service, DRAIN=str(DRAIN)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (deployment,) = yaml.safe_load_all(done.stdout)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = list(container["lifecycle"]["preStop"]["exec"]["command"])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def statuses(fresh: httpx.Client, url: str, workers: set[int]) -> dict[int, int]:
    """Each worker's /readyz status, asked until every one answered (bounded)."""
    seen: dict[int, int] = {}

    def every() -> bool:
        pid, status = which_worker(fresh, url)
        if pid in workers:
            seen[pid] = status
        return set(seen) == workers

    wait_for("every worker to answer", every, 30, step=0.01)
    return seen


@contextlib.contextmanager
def two_workers(service: str, tmp_path: Path) -> Iterator[tuple[int, set[int], httpx.Client]]:
    """``uvicorn --workers 2`` serving the app; its port, its workers' pids once each is ready."""
    (port,) = free_ports(1)
    environ = env(SERVICE=service, DRAIN=str(DRAIN), NAME_WORKER="1")
    argv = [
        sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
        "--workers", "2", "--lifespan", "on",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/readyz?verbose"
    fresh = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))
    with fresh, running(argv, tmp_path / "server.log", environ):
        seen: set[int] = set()

        def both_ready() -> bool:
            pid, status = which_worker(fresh, url)
            if status == 200:
                seen.add(pid)
            return len(seen) == 2

        try:
            wait_for("2 workers ready", both_ready, 60, step=0.01)
            yield port, seen, fresh
        except BaseException:
            print((tmp_path / "server.log").read_text()[-3000:])
            raise


def remove_squats(prefix: str) -> None:
    for entry in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)


@needs_root
def test_a_second_user_squatting_every_name_cannot_stall_fake_or_block_the_drain(
    tmp_path: Path,
) -> None:
    """Look-alike directories with the app's uid in their name, symlinks to
    them and to the app's own, FIFOs read by nobody, state files that lie
    (a drain 1e9 s long, negative, garbage), and sockets answering with lies
    or silence, made before the app starts and again once it runs: the app
    becomes ready, and the preStop command from ``python -m lifewatch k8s``
    drains both workers for the app's own delay and exits 0."""
    service = unique("squat")
    prefix = f"lifewatch-{os.geteuid()}-{service}-"
    try:
        with (
            squatter(prefix, service, "before"),
            two_workers(service, tmp_path) as (port, workers, fresh),
        ):
            url = f"http://127.0.0.1:{port}/readyz?verbose"
            with squatter(prefix, service, "after"):
                time.sleep(0.3)  # the sockets' squatter looks every 50 ms
                assert set(statuses(fresh, url, workers).values()) == {200}
                hook = prestop_command(service, port)
                started = time.monotonic()
                done = subprocess.run(
                    hook, env=env(), capture_output=True, text=True, timeout=HOOK_BOUND
                )
                took = time.monotonic() - started
                after = statuses(fresh, url, workers)
    finally:
        remove_squats(prefix)
    assert done.returncode == 0, done.stderr
    said = done.stderr.splitlines()
    assert len(said) == 1 and "lifewatch drain: draining 2 workers, " in said[0], said
    to_go = float(said[0].split(", ")[1].split("s to go")[0])
    assert 0 < to_go <= DRAIN, said
    assert took >= to_go - 0.05
    assert set(after.values()) == {503}, after


@needs_root
def test_another_user_running_the_hook_reaches_no_worker(tmp_path: Path) -> None:
    """The preStop command, run by the second user: it finds no worker of its
    own, says so and exits non-zero; the app stays ready."""
    service = unique("intruder")
    them = as_attacker()
    python = them.pop("python")
    with two_workers(service, tmp_path) as (port, workers, fresh):
        hook = [python, *prestop_command(service, port)[1:]]
        done = subprocess.run(hook, capture_output=True, text=True, timeout=HOOK_BOUND, **them)
        # Straight at the app's own FIFOs: the kernel refuses.
        pattern = f"lifewatch-{os.geteuid()}-{service}-*"
        channels = [str(c) for c in Path(tempfile.gettempdir()).glob(pattern)]
        tried = subprocess.run(
            [python, "-c", TRY_OPEN, *channels], capture_output=True, text=True, timeout=30, **them
        )
        time.sleep(0.2)  # a drain would have begun by now
        after = statuses(fresh, f"http://127.0.0.1:{port}/readyz?verbose", workers)
    assert done.returncode != 0, done.stderr
    assert "no lifewatch worker of this user found" in done.stderr
    assert len(channels) == 2
    assert tried.stdout.split() == ["EACCES", "EACCES"], tried.stdout + tried.stderr
    assert set(after.values()) == {200}, (after, done.stderr)


TRY_OPEN = """
import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(os.path.join(path, "drain"), os.O_WRONLY | os.O_NONBLOCK))
        print("OPENED")
    except OSError as exc:
        print(errno.errorcode[exc.errno])
"""
