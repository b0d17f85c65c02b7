"""Real servers for the tests: free loopback ports, bounded waits, always killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
T = TypeVar("T")


def binary(name: str) -> str:
    """A binary the test needs: missing means a failure, never a skip."""
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed; .ci/run installs it "
        "(apt: prometheus, prometheus-pushgateway, redis-server)"
    )
    return path


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def env(**extra: str) -> dict[str, str]:
    """This environment, with the worktree's ``src`` (and the repo root) importable first."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT), e.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    e.pop("PROMETHEUS_MULTIPROC_DIR", None)
    e.update(extra)
    return e


def http_get(url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return str(response.read().decode())


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, step: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


@contextlib.contextmanager
def running(
    argv: list[str], log: Path, environ: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process (its own process group), kill the group whatever happens."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(environ) if environ is not None else env(),
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def uvicorn_argv(port: int, app: str = "tests.apps.demo:app") -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "on",
    ]


def pushgateway(tmp: Path, port: int) -> list[str]:
    return [
        binary("prometheus-pushgateway"),
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={tmp / 'pushgateway.db'}",
    ]


def redis_server(tmp: Path, port: int) -> list[str]:
    """A throwaway redis-server on loopback: no persistence, no config file."""
    return [
        binary("redis-server"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp),
    ]


def prometheus(
    tmp: Path, port: int, *, rules: Path | str, app: dict[str, Any], gateway: int
) -> list[str]:
    """The argv of a real Prometheus on loopback, scraping every second: ``app``
    (a scrape config) and the Pushgateway on ``gateway`` (``honor_labels``),
    evaluating ``rules``."""
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    app,
                    {
                        "job_name": "pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway}"]}],
                    },
                ],
            }
        )
    )
    return [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


WORKER = re.compile(rb"worker-(\d+)")
"""The pid in the body of tests/apps/matrix.py's answers."""


def which_worker(fresh: httpx.Client, url: str) -> tuple[int, int]:
    """(the pid of the worker that answered, its status); ``fresh`` keeps no
    connection, so the kernel picks a worker each time."""
    try:
        response = fresh.get(url)
    except httpx.HTTPError:
        return 0, 0
    found = WORKER.search(response.content)
    return (int(found.group(1)) if found else 0), response.status_code
