"""Servers under load: uvicorn processes on loopback, driven by ``wrk``.

Shared by the suite (``run.py``) and ``bench_probes.py``: free ports, bounded
waits for readiness, every process stopped (then killed) on the way out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(
    target: str, args: Sequence[str], env: Mapping[str, str], ready_path: str, what: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", target, *args),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning", "--no-access-log"),
        ],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]),
            **env,
        },
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"uvicorn serving {what} did not come up")
        time.sleep(0.1)


@contextlib.contextmanager
def uvicorn_servers(
    specs: Mapping[str, tuple[str, Sequence[str], Mapping[str, str]]], ready_path: str
) -> Iterator[dict[str, int]]:
    """Start one uvicorn per ``name: (target, args, env)``; yield their ports."""
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name, (target, args, env) in specs.items():
            procs[name] = _start(target, args, env, ready_path, name)
        yield {name: port for name, (_, port) in procs.items()}
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wrk(port: int, path: str, seconds: float, connections: int) -> float:
    """Requests per second; any non-2xx answer or socket error is a failure."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))
