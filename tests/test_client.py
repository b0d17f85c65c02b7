"""``python -m lifewatch probe`` and ``drain``: exit status, one line on stderr, bounded."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, State
from lifewatch.__main__ import main
from tests.support.servers import env, free_port


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_probe_exit_status_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0")
    async with LifespanManager(watch.instrument(Starlette())):
        base = f"http://127.0.0.1:{watch.ops_port}"
        assert await run("probe", f"{base}/readyz") == 0
        assert capsys.readouterr().err == f"lifewatch probe: {base}/readyz: ok\n"
        watch.refuse_traffic("maintenance")
        assert await run("probe", f"{base}/readyz") == 1
        err = capsys.readouterr().err
        assert err == (
            f"lifewatch probe: {base}/readyz: 503 "
            "([-]lifespan failed: refusing traffic: maintenance)\n"
        )
    assert await run("probe", f"http://127.0.0.1:{free_port()}/livez") == 1
    assert capsys.readouterr().err.endswith(": connection refused\n")


async def test_probe_is_bounded_by_its_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:  # accepts (the backlog does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/livez"
        start = time.monotonic()
        assert await run("probe", url, "--timeout", "0.3") == 1
        assert time.monotonic() - start < 0.3 * 5
    assert capsys.readouterr().err == f"lifewatch probe: {url}: no answer within 0.3s\n"


async def test_drain_returns_when_the_drain_is_over(capsys: pytest.CaptureFixture[str]) -> None:
    service = f"client{os.getpid()}"
    watch = Lifewatch(service=service, registry=CollectorRegistry(), drain_delay=0.4)
    async with LifespanManager(watch.instrument(Starlette())):
        start = time.monotonic()
        assert await run("drain", "--service", service) == 0
        assert time.monotonic() - start >= 0.4 - 0.05
        assert watch.state is State.DRAINING
        assert "lifewatch drain: draining, 0.4s to go" in capsys.readouterr().err
    assert await run("drain", "--service", service) == 1
    err = capsys.readouterr().err
    assert err.startswith("lifewatch drain: no lifewatch worker of this user found: looked for ")
    assert f"lifewatch-{os.geteuid()}-client{os.getpid()}-*" in err
    assert err.count("\n") == 1
    other = Lifewatch(service=f"named{os.getpid()}", registry=CollectorRegistry())
    async with LifespanManager(other.instrument(Starlette())):
        assert await run("drain") == 1  # no --service: the unnamed one, and a hint
    err = capsys.readouterr().err
    assert "this user runs --service " in err and f"named{os.getpid()}" in err


DOCKERFILE = Path(__file__).resolve().parents[1] / "examples" / "Dockerfile"


async def test_the_dockerfile_healthcheck_command() -> None:
    """examples/Dockerfile's HEALTHCHECK, run as Docker would, against a live listener."""
    text = (await asyncio.to_thread(DOCKERFILE.read_text)).replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK")]
    argv = json.loads(line.split(" CMD ", 1)[1])
    assert argv[:4] == ["python", "-m", "lifewatch", "probe"]
    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0")
    async with LifespanManager(watch.instrument(Starlette())):
        live = [a.replace(":9000", f":{watch.ops_port}") for a in argv]
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, *live[1:]], env=env(), capture_output=True
        )
        assert done.returncode == 0, done.stderr
    dead = [a.replace(":9000", f":{free_port()}") for a in argv]
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, *dead[1:]], env=env(), capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
