"""Health checks: how they run, fail, time out, share runs, refresh, report."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa  # imported here: importing it reads files, not on the loop
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from lifewatch import Lifewatch, LifewatchMiddleware
from tests.conftest import sample
from tests.support.probes import call, get
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def detailed(registry: CollectorRegistry, **options: Any) -> Lifewatch:
    return Lifewatch(service="test", registry=registry, expose_details=True, **options)


async def test_each_way_of_failing_is_reported_clearly(registry: CollectorRegistry) -> None:
    watch = detailed(registry)

    @watch.check("raises")
    async def raises() -> None:
        raise ConnectionError("refused")

    @watch.check("false")
    def false() -> bool:
        return False

    @watch.check("number")
    async def number() -> int:
        return 42

    @watch.check("coroutine-from-sync")
    def coroutine_from_sync() -> Any:
        return asyncio.sleep(0)

    @watch.check("slow", timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(10)

    @watch.check("none")
    def none() -> None:
        return None

    @watch.check("true")
    async def true() -> bool:
        return True

    text = (await get(LifewatchMiddleware(Starlette(), watch=watch), "/readyz?verbose")).text
    assert "[-]raises failed: ConnectionError: refused\n" in text
    assert "[-]false failed: returned False\n" in text
    assert "[-]number failed: returned int; a check returns None or a bool, or raises\n" in text
    assert "[-]coroutine-from-sync failed: returned an awaitable from a sync function" in text
    assert "[-]slow failed: timed out after 0.05s\n" in text
    assert "[+]none ok\n[+]true ok\n" in text
    for name, reason in [
        ("raises", "error"),
        ("false", "false"),
        ("number", "invalid"),
        ("slow", "timeout"),
    ]:
        assert sample(registry, "lifespan_check_failures_total", check=name, reason=reason) == 1
        assert sample(registry, "lifespan_check_status", check=name, probe="readiness") == 0
    assert sample(registry, "lifespan_check_status", check="none", probe="readiness") == 1
    assert sample(registry, "lifespan_check_duration_seconds_count", check="slow") == 1


def test_bad_registrations_are_clear_errors(watch: Lifewatch) -> None:
    watch.add_check("postgres", lambda: None)
    with pytest.raises(ValueError, match="'postgres' is already registered"):
        watch.add_check("postgres", lambda: None)
    with pytest.raises(ValueError, match="liveness, readiness, startup"):
        watch.add_check("a", lambda: None, probes=("readyness",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"probes=\('readiness',\)"):
        watch.add_check("a", lambda: None, probes="readiness")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        watch.add_check("a", lambda: None, probes=())
    with pytest.raises(ValueError, match="timeout of check 'a' must be a positive number"):
        watch.add_check("a", lambda: None, timeout=0)
    with pytest.raises(ValueError, match="timeout of check 'a'"):
        watch.add_check("a", lambda: None, timeout=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval of check 'a'"):
        watch.add_check("a", lambda: None, interval=-1)
    for bad in ("has space", "db\n", "x" * 101):  # a newline once passed "$"
        with pytest.raises(ValueError, match="check name must be"):
            watch.add_check(bad, lambda: None)
    with pytest.raises(ValueError, match="reserved"):
        watch.add_check("lifespan", lambda: None)
    with pytest.raises(TypeError, match="callable"):
        watch.add_check("a", "SELECT 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a name"):
        watch.check(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="critical"):
        watch.add_check("a", lambda: None, critical="no")  # type: ignore[arg-type]
    assert list(watch.checks) == ["postgres"]


def test_a_registered_check_is_its_definition_frozen(watch: Lifewatch) -> None:
    """What ``add_check`` returns says what was registered and cannot be changed
    behind the runner's back; running it is ``watch.run_check``'s job."""
    import dataclasses

    async def postgres() -> None:
        pass

    check = watch.add_check("postgres", postgres, timeout=2.0, critical=False, interval=5)
    assert (check.name, check.func, check.timeout, check.probes) == (
        "postgres",
        postgres,
        2.0,
        frozenset({"readiness"}),
    )
    assert (check.critical, check.interval, check.is_async) == (False, 5.0, True)
    assert watch.checks == {"postgres": check}
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.timeout = 10  # type: ignore[misc]
    assert not hasattr(check, "run") and not hasattr(check, "result")


def test_the_checks_modules_use_no_private_asyncio_names() -> None:
    """Runs are plain tasks under a timer: nothing of asyncio's own bookkeeping
    (``_enter_task``, ``_leave_task``), which a CPython release may rename."""
    import ast

    import lifewatch

    names: list[str] = []
    for module in ("_checks.py", "_health.py"):
        tree = ast.parse((Path(lifewatch.__file__).parent / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asyncio"):
                names += [a.name for a in node.names if a.name.startswith("_")]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
                and node.attr.startswith("_")
            ):
                names.append(node.attr)
    assert names == []


async def test_concurrent_probes_share_one_run(watch: Lifewatch) -> None:
    calls = 0
    release = asyncio.Event()

    @watch.check("postgres", timeout=5)
    async def postgres() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    app = LifewatchMiddleware(Starlette(), watch=watch)
    probes = [asyncio.ensure_future(call(app, "/readyz")) for _ in range(20)]
    probes.append(asyncio.ensure_future(call(app, "/readyz/postgres")))
    await asyncio.sleep(0.05)
    release.set()
    answers = await asyncio.gather(*probes)
    assert calls == 1
    # /readyz is 503 (no lifespan ran: not ready); the check alone passes.
    assert [status for status, _, _ in answers] == [503] * 20 + [200]
    assert "[+]postgres ok" in (await get(app, "/readyz?verbose")).text
    assert calls == 2  # a new request, a new run


async def test_checks_run_concurrently(watch: Lifewatch) -> None:
    running = 0
    peak = 0

    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    for name in ("a", "b", "c"):
        watch.add_check(name, slow)
    watch.add_check("d", lambda: time.sleep(0.05))
    await get(LifewatchMiddleware(Starlette(), watch=watch), "/readyz")
    assert peak == 3


async def test_interval_checks_refresh_between_startup_and_shutdown(
    registry: CollectorRegistry,
) -> None:
    watch = detailed(registry)
    calls: list[float] = []
    in_startup: dict[str, int] = {}

    @watch.check("postgres", interval=0.02)
    async def postgres() -> None:
        calls.append(time.monotonic())

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with watch.phase("database"):
            await asyncio.sleep(0.05)
            in_startup["calls"] = len(calls)
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        await asyncio.sleep(0.1)
        assert len(calls) >= 2
        # Probes read the cached result: a thousand of them run nothing.
        before = len(calls)
        started = time.monotonic()
        for _ in range(1000):
            assert (await call(app, "/readyz"))[0] == 200
        elapsed = time.monotonic() - started
        assert len(calls) - before <= elapsed / 0.02 + 2
    assert in_startup["calls"] == 0
    stopped = len(calls)
    await asyncio.sleep(0.1)
    assert len(calls) == stopped  # the refresher stopped at shutdown
    assert all(r.refresher is None for r in watch._health.runners.values())


async def test_a_flipping_cached_result_changes_the_answer(watch: Lifewatch) -> None:
    up = True

    @watch.check("postgres", interval=0.01)
    def postgres() -> bool:
        return up

    app = LifewatchMiddleware(Starlette(), watch=watch)
    async with LifespanManager(app):
        await asyncio.sleep(0.05)
        assert (await call(app, "/readyz"))[0] == 200
        up = False
        for _ in range(200):
            await asyncio.sleep(0.01)
            if (await call(app, "/readyz"))[0] == 503:
                break
        status, _, body = await call(app, "/readyz")
        assert status == 503
        assert body == b"[+]lifespan ok\n[-]postgres failed: reason withheld\nreadyz check failed\n"


async def test_logs_on_transitions_only_and_slow_checks_warn(
    registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    watch = Lifewatch(service="svc", registry=registry, slow_check_threshold=0.02)
    up = False
    slow = False

    @watch.check("postgres", critical=False)
    async def postgres() -> bool:
        if slow:
            await asyncio.sleep(0.05)
        return up

    app = LifewatchMiddleware(Starlette(), watch=watch)
    for flip in (False, False, False, True, True, False, True):
        up = flip
        await call(app, "/readyz")
    slow = True
    await call(app, "/readyz")
    events = [(e["event"], e.get("check")) for e in logs if e["event"].startswith("lifespan.check")]
    assert events == [
        ("lifespan.check.failed", "postgres"),
        ("lifespan.check.recovered", "postgres"),
        ("lifespan.check.failed", "postgres"),
        ("lifespan.check.recovered", "postgres"),
        ("lifespan.check.slow", "postgres"),
    ]
    failed = next(e for e in logs if e["event"] == "lifespan.check.failed")
    assert failed["reason"] == "false" and failed["error"] == "returned False"
    assert failed["log_level"] == "warning" and failed["service"] == "svc"
    assert failed["critical"] is False
    slow_log = next(e for e in logs if e["event"] == "lifespan.check.slow")
    assert slow_log["log_level"] == "warning" and slow_log["threshold_s"] == 0.02


async def test_the_reason_is_logged_even_when_withheld(
    watch: Lifewatch, logs: list[dict[str, Any]]
) -> None:
    @watch.check("postgres")
    async def postgres() -> None:
        raise ConnectionError("postgresql://app:s3cret@db/orders refused")

    text = (await get(LifewatchMiddleware(Starlette(), watch=watch), "/readyz?verbose")).text
    assert "s3cret" not in text
    failed = next(e for e in logs if e["event"] == "lifespan.check.failed")
    # The reason is in the log, its URL credentials are not.
    assert failed["error"] == "ConnectionError: postgresql://***@db/orders refused"
    assert failed["log_level"] == "error"


async def test_a_hanging_check_costs_its_timeout_and_leaves_no_task(watch: Lifewatch) -> None:
    forever = asyncio.Event()

    @watch.check("hangs", timeout=0.001)
    async def hangs() -> None:
        await forever.wait()

    app = LifewatchMiddleware(Starlette(), watch=watch)
    await asyncio.sleep(0)
    baseline = len(asyncio.all_tasks())
    deadline = time.monotonic() + 60
    answered = 0
    for _ in range(200):
        batch = await asyncio.wait_for(
            asyncio.gather(*(call(app, "/readyz") for _ in range(50))), timeout=10
        )
        answered += sum(1 for status, _, _ in batch if status == 503)
        assert time.monotonic() < deadline
    assert answered == 10_000
    for _ in range(100):
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == baseline

    # One probe costs the timeout plus a little, not more.
    watch.add_check("hangs-longer", _hang_async, timeout=0.2)
    started = time.monotonic()
    status, _, _ = await call(app, "/readyz/hangs-longer")
    assert status == 503
    assert 0.2 <= time.monotonic() - started < 0.2 + 0.5


async def _hang_async() -> None:
    await asyncio.Event().wait()


async def test_a_hanging_sync_check_holds_at_most_one_thread(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = detailed(registry)
    scheduled = threading.Event()  # the OS lets the started threads run
    entered = threading.Event()
    release = threading.Event()
    lock = threading.Lock()
    calls = live = peak = 0

    @watch.check("hangs", timeout=0.05)
    def hangs() -> None:
        nonlocal calls, live, peak
        with lock:
            calls += 1
            live += 1
            peak = max(peak, live)
        entered.set()
        try:
            release.wait(30)
        finally:
            with lock:
                live -= 1

    # Under CPU load a thread can be started and yet not run for a while. Make
    # that certain: threads started now wait for `scheduled` before their run().
    # A busy flag that the thread sets itself (the old code) is then still down
    # when the next probes come, and each of them starts another thread.
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def start_late(thread: threading.Thread) -> None:
        run = thread.run

        def late() -> None:
            scheduled.wait(30)
            run()

        thread.run = late  # type: ignore[method-assign]
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_late)
    app = LifewatchMiddleware(Starlette(), watch=watch)
    try:
        first = (await get(app, "/readyz?verbose")).text
        texts = [(await get(app, "/readyz?verbose")).text for _ in range(20)]
        monkeypatch.undo()
        assert "[-]hangs failed: timed out after 0.05s\n" in first
        assert all("previous run still running in its thread" in t for t in texts)
        assert len(started) == 1 and started[0].daemon
        scheduled.set()
        assert await asyncio.to_thread(entered.wait, 10)
        texts = [(await get(app, "/readyz?verbose")).text for _ in range(5)]
        assert all("previous run still running in its thread" in t for t in texts)
        assert (calls, live, peak) == (1, 1, 1)
    finally:
        scheduled.set()
        release.set()
    await asyncio.to_thread(started[0].join, 10)
    assert not started[0].is_alive()
    # The thread came back: the flag is down, and the next probe runs the check.
    assert "[+]hangs ok\n" in (await get(app, "/readyz?verbose")).text
    assert (calls, live, peak) == (2, 0, 1)


async def test_checks_by_probe(watch: Lifewatch) -> None:
    @watch.check("event-loop", probes=("liveness",))
    async def loop_ok() -> bool:
        return False

    @watch.check("migrations", probes=("startup", "readiness"))
    async def migrations() -> None:
        return None

    app = LifewatchMiddleware(Starlette(), watch=watch)
    async with LifespanManager(app):
        live = await get(app, "/livez?verbose")
        assert live.status_code == 503
        assert live.text == "[-]event-loop failed: reason withheld\nlivez check failed\n"
        assert (await get(app, "/livez/event-loop")).status_code == 503
        assert (await get(app, "/startupz?verbose")).text == (
            "[+]lifespan ok\n[+]migrations ok\nstartupz check passed\n"
        )
        ready = (await get(app, "/readyz?verbose")).text
        assert "event-loop" not in ready and "[+]migrations ok" in ready
        assert (await get(app, "/startupz/migrations")).text == "ok"
        assert await watch.run_check("migrations") is not None
        with pytest.raises(KeyError, match="registered"):
            await watch.run_check("nope")


async def test_an_interval_check_added_while_serving_starts_refreshing(watch: Lifewatch) -> None:
    calls = 0

    async def late() -> None:
        nonlocal calls
        calls += 1

    app = LifewatchMiddleware(Starlette(), watch=watch)
    async with LifespanManager(app):
        watch.add_check("late", late, interval=0.01)
        await asyncio.sleep(0.1)
        assert calls >= 2
        assert watch._health.runners["late"].refresher is not None
    assert watch._health.runners["late"].refresher is None


# -- lifewatch.checks: ready-made checks, each against the real thing ---------------


def _ready_watch() -> Lifewatch:
    from prometheus_client import CollectorRegistry

    return Lifewatch(registry=CollectorRegistry())


async def test_sqlalchemy_sync_engine_against_sqlite(tmp_path: Path) -> None:
    from lifewatch import checks

    watch = _ready_watch()
    # create_engine resolves the SQLite path (a file system call): off the loop.
    up = await asyncio.to_thread(sa.create_engine, f"sqlite:///{tmp_path / 'app.db'}")
    down = await asyncio.to_thread(sa.create_engine, f"sqlite:///{tmp_path / 'missing' / 'app.db'}")
    watch.add_check("up", checks.sqlalchemy(up))
    watch.add_check("down", checks.sqlalchemy(down))
    assert (await watch.run_check("up")).ok
    failed = await watch.run_check("down")
    assert not failed.ok and failed.reason == "error"
    assert "unable to open database file" in (failed.detail or "")
    with pytest.raises(TypeError, match="takes an Engine or an AsyncEngine"):
        checks.sqlalchemy("sqlite://")
    up.dispose()
    down.dispose()


async def test_sqlalchemy_async_engine_against_sqlite(tmp_path: Path) -> None:
    from lifewatch import checks

    watch = _ready_watch()
    url = f"sqlite+aiosqlite:///{tmp_path}"
    up = await asyncio.to_thread(create_async_engine, f"{url}/app.db")
    down = await asyncio.to_thread(create_async_engine, f"{url}/missing/app.db")
    watch.add_check("up", checks.sqlalchemy(up))
    watch.add_check("down", checks.sqlalchemy(down))
    assert (await watch.run_check("up")).ok
    assert not (await watch.run_check("down")).ok
    await up.dispose()
    await down.dispose()


@pytest.fixture
def http_dependency() -> Iterator[str]:
    """A real HTTP server on loopback: 200 on /healthz, 503 on /down."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_http_dependency(http_dependency: str) -> None:
    import httpx

    from lifewatch import checks

    watch = _ready_watch()
    closed = free_port()
    watch.add_check("up", checks.http(f"{http_dependency}/healthz"))
    watch.add_check("sick", checks.http(f"{http_dependency}/down"))
    watch.add_check("gone", checks.http(f"http://127.0.0.1:{closed}/healthz"))
    async with httpx.AsyncClient() as client:
        watch.add_check("shared", checks.http(f"{http_dependency}/healthz", client=client))
        assert (await watch.run_check("shared")).ok
    assert (await watch.run_check("up")).ok
    sick = await watch.run_check("sick")
    assert not sick.ok and "answered 503" in (sick.detail or "")
    assert not (await watch.run_check("gone")).ok
    with pytest.raises(ValueError, match="http:// or https:// URL"):
        checks.http("payments:8080")


async def test_disk_free(tmp_path: Path) -> None:
    from lifewatch import checks

    watch = _ready_watch()
    watch.add_check("roomy", checks.disk_free(tmp_path, min_bytes=1))
    watch.add_check("full", checks.disk_free(tmp_path, min_bytes=1 << 62))
    watch.add_check("ratio", checks.disk_free(tmp_path, min_ratio=1.0))
    assert (await watch.run_check("roomy")).ok
    full = await watch.run_check("full")
    assert not full.ok and "bytes free, below" in (full.detail or "")
    assert not (await watch.run_check("ratio")).ok
    with pytest.raises(ValueError, match="needs min_bytes=, min_ratio= or both"):
        checks.disk_free(tmp_path)


def test_redis_against_a_real_redis_server(tmp_path: Path) -> None:
    import redis.asyncio

    from lifewatch import checks
    from tests.support.servers import redis_server, running, stop

    port = free_port()
    with running(redis_server(tmp_path, port), tmp_path / "redis.log") as proc:

        async def main() -> None:
            # Redis() looks its own version up (importlib.metadata): off the loop.
            client = await asyncio.to_thread(
                redis.asyncio.Redis, host="127.0.0.1", port=port, socket_timeout=1
            )
            watch = _ready_watch()
            watch.add_check("redis", checks.redis(client))
            await wait_for_async(lambda: watch.run_check("redis"), 10)
            assert (await watch.run_check("redis")).ok
            await asyncio.to_thread(stop, proc)
            down = await watch.run_check("redis")
            assert not down.ok
            await client.aclose()

        asyncio.run(main())
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis client"):
        checks.redis(object())


async def wait_for_async(run: Any, timeout: float) -> None:
    """Until the check passes (the server is accepting), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (await run()).ok:
        assert time.monotonic() < deadline, "redis-server did not come up"
        await asyncio.sleep(0.05)


def test_importing_the_checks_imports_none_of_their_libraries() -> None:
    import subprocess
    import sys

    from tests.support.servers import env

    code = (
        "import sys, lifewatch.checks; "
        "print([m for m in ('sqlalchemy', 'redis', 'httpx') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stderr


async def test_a_checks_own_timeouts_and_cancel_scopes_work_inside_it(
    registry: CollectorRegistry,
) -> None:
    """``asyncio.timeout`` and anyio's cancel scopes hold on to the current task:
    a run must be its own task from its first step, or a check's own timeout
    would cancel the probe that runs it."""
    import anyio

    watch = detailed(registry)

    @watch.check("anyio-scope")
    async def scoped() -> None:
        with anyio.fail_after(1):
            await asyncio.sleep(0.001)

    @watch.check("own-timeout", timeout=5)
    async def own() -> None:
        with anyio.fail_after(0.01):
            await asyncio.sleep(5)

    app = LifewatchMiddleware(Starlette(), watch=watch)
    status, _, body = await asyncio.wait_for(call(app, "/readyz", query=b"verbose"), 5)
    assert status == 503, body
    assert b"[+]anyio-scope ok" in body
    assert b"[-]own-timeout failed" in body
    if hasattr(asyncio, "timeout"):  # Python 3.11+

        @watch.check("asyncio-timeout", timeout=5)
        async def asyncio_own() -> None:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)

        status, _, body = await asyncio.wait_for(call(app, "/readyz/asyncio-timeout"), 5)
        assert status == 503, body


async def test_checks_that_answer_at_once_and_checks_that_wait_mix_in_one_probe(
    registry: CollectorRegistry,
) -> None:
    """A check that finishes without waiting (done at once where asyncio starts
    tasks eagerly) and one that waits: both answer right, fail right, time out
    right, each in a context of its own."""
    import contextvars

    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="untouched")
    watch = detailed(registry)
    forever = asyncio.Event()

    @watch.check("flag")
    async def flag() -> bool:
        seen.set("changed by a check")  # must not reach the request's context
        return True

    @watch.check("broken-at-once")
    async def broken() -> None:
        raise ConnectionError("refused")

    @watch.check("waits")
    async def waits() -> None:
        seen.set("changed by a check")
        await asyncio.sleep(0.001)
        assert seen.get() == "changed by a check"  # its own context, across the wait

    @watch.check("hangs", timeout=0.05, critical=False)
    async def hangs() -> None:
        await forever.wait()

    app = LifewatchMiddleware(Starlette(), watch=watch)
    await asyncio.sleep(0)
    baseline = len(asyncio.all_tasks())
    status, _, body = await call(app, "/readyz", query=b"verbose")
    assert status == 503, body
    assert seen.get() == "untouched"
    text = body.decode()
    assert "[+]flag ok" in text
    assert "[+]waits ok" in text
    assert "[-]broken-at-once failed: ConnectionError: refused" in text
    assert "[-]hangs failed (non-critical): timed out after 0.05s" in text
    assert sample(registry, "lifespan_check_failures_total", check="hangs", reason="timeout") == 1
    assert sample(registry, "lifespan_check_status", check="flag", probe="readiness") == 1
    # Concurrent probes still share the run of a check that waits.
    runs = 0

    @watch.check("shared")
    async def shared() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)

    await asyncio.gather(*(call(app, "/readyz/shared") for _ in range(20)))
    assert runs == 1
    for _ in range(100):
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == baseline


async def test_a_check_that_answers_at_once_on_one_run_and_waits_on_the_next(
    registry: CollectorRegistry,
) -> None:
    """The same check finishes without waiting on some runs (no task of its own,
    no timer) and waits on others (a task, bounded by its timeout, shared by
    concurrent probes): every run answers right, whichever way it went."""
    watch = detailed(registry)
    runs = 0
    release = asyncio.Event()
    plan: list[str] = []

    @watch.check("flaky", timeout=0.2)
    async def flaky() -> bool:
        nonlocal runs
        runs += 1
        step = plan.pop(0)
        if step == "wait":
            await release.wait()
        elif step == "hang":
            await asyncio.Event().wait()
        elif step == "raise at once":
            raise ConnectionError("refused")
        return step != "false at once"

    app = LifewatchMiddleware(Starlette(), watch=watch)
    await asyncio.sleep(0)
    baseline = len(asyncio.all_tasks())

    plan[:] = ["at once"]
    assert (await call(app, "/readyz/flaky"))[0] == 200
    plan[:] = ["wait"]
    waiting = [asyncio.ensure_future(call(app, "/readyz/flaky")) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert runs == 2  # one run in flight, joined by the other four probes
    release.set()
    assert [status for status, _, _ in await asyncio.gather(*waiting)] == [200] * 5
    plan[:] = ["false at once"]
    status, _, body = await call(app, "/readyz/flaky")
    assert status == 503 and b"returned False" in body
    plan[:] = ["hang"]
    started = time.monotonic()
    status, _, body = await call(app, "/readyz/flaky")
    assert status == 503 and b"timed out after 0.2s" in body
    assert time.monotonic() - started < 0.2 + 2.0
    plan[:] = ["raise at once"]
    status, _, body = await call(app, "/readyz/flaky")
    assert status == 503 and b"ConnectionError: refused" in body
    plan[:] = ["at once"]
    assert (await call(app, "/readyz/flaky"))[0] == 200
    assert runs == 6
    assert sample(registry, "lifespan_check_failures_total", check="flaky", reason="timeout") == 1
    assert sample(registry, "lifespan_check_failures_total", check="flaky", reason="error") == 1
    assert sample(registry, "lifespan_check_failures_total", check="flaky", reason="false") == 1
    for _ in range(100):
        if len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == baseline


async def test_a_run_goes_on_in_the_task_it_started_in_never_the_probes(
    watch: Lifewatch,
) -> None:
    """A run's first step happens by hand, as an eager task's does: in a task
    that is not the probe's, and the one the run goes on in if it waits; runs
    that wait each get their own; the probe's task is current again after."""
    seen: dict[str, tuple[asyncio.Task[Any] | None, asyncio.Task[Any] | None]] = {}

    def recorder(name: str, waits: bool) -> Any:
        async def check() -> None:
            first = asyncio.current_task()
            if waits:
                await asyncio.sleep(0.001)
            seen[name] = (first, asyncio.current_task())

        return check

    for name, waits in [("a", False), ("b", True), ("c", False), ("d", True), ("e", False)]:
        watch.add_check(name, recorder(name, waits))
    probe_tasks: list[asyncio.Task[Any] | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the probe path never reaches the app")

    watched = LifewatchMiddleware(app, watch=watch)

    async def probe(scope: Any, receive: Any, send: Any) -> None:
        before = asyncio.current_task()
        await watched(scope, receive, send)
        probe_tasks.append(before)
        assert asyncio.current_task() is before

    assert (await call(probe, "/readyz/lifespan"))[0] == 503  # not started: no lifespan ran
    await call(probe, "/readyz")
    me = probe_tasks[-1]
    assert set(seen) == {"a", "b", "c", "d", "e"}
    for first, then in seen.values():
        assert first is then  # the same task from the first step to the end
        assert first is not me and first is not None
    assert seen["b"][0] is not seen["d"][0]  # each run that waits has its own


async def test_every_run_starts_in_a_fresh_copy_of_its_probes_context(watch: Lifewatch) -> None:
    """Runs that finish at once share a task while nothing tells them apart; a
    context variable set by a check, or a probe asked in another context,
    gets the next run a fresh copy: no run sees another's."""
    import contextvars

    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    scratch: contextvars.ContextVar[str] = contextvars.ContextVar("scratch", default="clean")
    seen: list[tuple[str, str, str]] = []
    waiting = {"d"}

    def check(name: str, dirties: bool) -> Any:
        async def run() -> None:
            seen.append((name, request.get(), scratch.get()))
            if dirties:
                scratch.set(f"dirtied by {name}")
            if name in waiting:
                await asyncio.sleep(0.001)
            if dirties:
                assert scratch.get() == f"dirtied by {name}"  # its own, across the wait

        return run

    for name, dirties in [("a", False), ("b", True), ("c", False), ("d", True), ("e", False)]:
        watch.add_check(name, check(name, dirties))
    app = LifewatchMiddleware(Starlette(), watch=watch)
    values = ("first", "second", "second", "third")
    for value in values:
        request.set(value)
        await call(app, "/readyz")
    assert seen == [(name, value, "clean") for value in values for name in "abcde"]
    # Without a trip through the loop between probes (no run waits): the task
    # left from one probe serves the next only in the same context.
    seen.clear()
    waiting.clear()
    for value in values:
        request.set(value)
        await call(app, "/readyz")
    assert seen == [(name, value, "clean") for value in values for name in "abcde"]
    assert scratch.get() == "clean"


async def test_a_check_that_cancels_its_own_run_at_once(registry: CollectorRegistry) -> None:
    """Answered as a run in a task of its own would be (cancelled), and the
    checks after it in the same probe run as if it had not."""
    watch = detailed(registry)
    order: list[str] = []

    @watch.check("self-cancelling")
    async def self_cancelling() -> None:
        order.append("self-cancelling")
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    @watch.check("after-it")
    async def after_it() -> None:
        order.append("after-it")
        await asyncio.sleep(0.001)

    @watch.check("raises-its-cancel")
    async def raises_its_cancel() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        raise asyncio.CancelledError

    _, _, body = await call(
        LifewatchMiddleware(Starlette(), watch=watch), "/readyz", query=b"verbose"
    )
    text = body.decode()
    assert "[-]self-cancelling failed: cancelled" in text
    assert "[+]after-it ok" in text
    assert "[-]raises-its-cancel failed: cancelled" in text
    assert order == ["self-cancelling", "after-it"]


async def test_a_run_cancelled_from_outside_is_cancelled_and_records_nothing(
    watch: Lifewatch,
) -> None:
    """The loop going away cancels a run's task: the cancel is passed on, not
    a failed check, on Python 3.10 too (no ``Task.cancelling`` there to tell it
    from a check raising ``CancelledError`` itself, which fails the check)."""
    started = asyncio.Event()

    @watch.check("waits")
    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    runner = watch._health.runners["waits"]
    task = runner.start(asyncio.get_running_loop().time())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.result is None


async def test_a_run_whose_probes_went_away_is_still_cancelled_at_its_timeout(
    watch: Lifewatch,
) -> None:
    """The probe that started a run bounds it; when that probe goes away
    first, the run is still cancelled at its timeout and reported as one."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    @watch.check("waits", timeout=0.05)
    async def waits() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    probe = asyncio.create_task(watch.run_check("waits"))
    await started.wait()
    probe.cancel()  # the client went away before the timeout
    with pytest.raises(asyncio.CancelledError):
        await probe
    await asyncio.wait_for(cancelled.wait(), timeout=10)
    await asyncio.sleep(0)  # the run records its result once its cancel is handled
    result = watch._health.runners["waits"].result
    assert result is not None
    assert (result.ok, result.reason, result.detail) == (False, "timeout", "timed out after 0.05s")
