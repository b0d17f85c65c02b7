"""Health produces results as events: metrics and logs are sinks' work, isolated.

A metric write or a log record that fails must never change a probe's answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch, LifewatchMiddleware
from tests.support.broken_logging import broken_logging
from tests.support.probes import call

ROOT = Path(__file__).resolve().parents[1]


def raw_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"  # no lifespan: the middleware speaks it
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_a_failing_non_critical_check_says_warn_even_when_logging_raises() -> None:
    watch = Lifewatch(registry=CollectorRegistry())

    @watch.check("cache", critical=False)
    async def cache() -> None:
        raise ConnectionError("redis down")

    app = LifewatchMiddleware(raw_app(), watch=watch)
    with broken_logging() as attempted:
        async with LifespanManager(app):
            status, _, body = await call(
                app, "/readyz", headers=[(b"accept", b"application/health+json")]
            )
    assert status == 200
    assert json.loads(body)["status"] == "warn"
    assert "lifespan.check.failed" in attempted  # it was tried, and it broke


async def test_a_broken_probe_answers_503_even_when_its_error_log_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watch = Lifewatch(registry=CollectorRegistry())

    @watch.check("db")
    async def db() -> None:
        pass

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in a renderer")

    monkeypatch.setattr("lifewatch._health.render_text", broken)
    app = LifewatchMiddleware(raw_app(), watch=watch)
    with broken_logging() as attempted:
        async with LifespanManager(app):
            status, _, body = await call(app, "/readyz", query=b"verbose")
    assert status == 503
    assert body == b"lifewatch: the probe itself failed (see the log)\n"
    assert "lifespan.probe.error" in attempted


def test_an_unusable_multiprocess_directory_does_not_fail_a_passing_check(
    tmp_path: Path,
) -> None:
    """The directory is deleted under a running pod (a tmp cleaner, a volume gone):
    every new series then fails to write. prometheus-client picks its
    multiprocess values at import, hence a process of its own."""
    gone = tmp_path / "deleted"
    gone.mkdir()
    script = textwrap.dedent(
        """
        import asyncio, json, shutil, sys
        sys.path.insert(0, sys.argv[1])
        from asgi_lifespan import LifespanManager
        from lifewatch import Lifewatch, LifewatchMiddleware
        from tests.support.probes import call
        from tests.test_health import raw_app

        watch = Lifewatch()

        @watch.check("db")
        async def db():
            pass

        async def main():
            shutil.rmtree(sys.argv[2])
            app = LifewatchMiddleware(raw_app(), watch=watch)
            async with LifespanManager(app):
                status, _, body = await call(app, "/readyz")
            print(json.dumps({"status": status, "body": body.decode()}))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(gone)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), str(gone)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer == {"status": 200, "body": "ok"}, proc.stderr
    assert not gone.exists()
    assert "lifespan.sink.failed" in proc.stdout + proc.stderr  # said, not hidden


async def test_startupz_names_the_phase_running_now_from_its_kept_answer() -> None:
    """The plain answer is kept between probes; every phase that begins or
    ends makes it stale, however many come between two probes."""
    watch = Lifewatch(registry=CollectorRegistry())
    seen: list[bytes] = []

    async def probe() -> None:
        for _ in range(2):  # the second one is answered from the kept answer
            status, _, body = await call(app, "/startupz")
            assert status == 503
            seen.append(body.split(b"\n")[0])

    async def lifespan(app_: Any) -> Any:
        async with watch.phase("database"):
            await probe()
        async with watch.phase("cache"):
            async with watch.phase("warm"):
                await probe()
            async with watch.phase("index"):
                pass
            await probe()  # three phases began and ended since the last probe
        yield

    from contextlib import asynccontextmanager

    from starlette.applications import Starlette

    app = watch.instrument(Starlette(lifespan=asynccontextmanager(lifespan)))
    async with LifespanManager(app):
        status, _, body = await call(app, "/startupz")
    assert status == 200 and body == b"ok"
    assert seen == [
        b"[-]lifespan failed: starting: phase 'database' running",
        b"[-]lifespan failed: starting: phase 'database' running",
        b"[-]lifespan failed: starting: phase 'warm' running",
        b"[-]lifespan failed: starting: phase 'warm' running",
        b"[-]lifespan failed: starting: phase 'cache' running",
        b"[-]lifespan failed: starting: phase 'cache' running",
    ]


async def test_a_kept_answer_holds_until_health_says_something_changed() -> None:
    """Every phase begins and ends with an invalidation: the plain answer kept
    until then is stale after it, and the next request builds it anew."""
    from lifewatch._health import Health, ProbeEndpoint
    from lifewatch._lifecycle import Lifecycle

    health = Health(Lifecycle(service=None, startup_timeout=None, shutdown_timeout=None, log=None))
    endpoint = ProbeEndpoint(health, "liveness")
    scope = {"method": "GET", "query_string": b"", "headers": [(b"host", b"probe")]}
    assert endpoint.kept(scope) is None  # nothing answered yet
    answer = await call(endpoint, "/livez")
    assert endpoint.kept(scope) is not None
    health.invalidate()
    assert endpoint.kept(scope) is None
    assert await call(endpoint, "/livez") == answer
    assert endpoint.kept(scope) is not None
