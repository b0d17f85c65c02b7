"""Last words on a real Pushgateway: failed startup, clean shutdown, gateway down."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from lifewatch import Lifewatch, Pushgateway
from lifewatch._pushgateway import PushgatewaySink
from tests.support.servers import (
    env,
    free_port,
    http_get,
    pushgateway,
    running,
    uvicorn_argv,
    wait_for,
)


@contextmanager
def black_hole() -> Iterator[str]:
    """A TCP port that accepts connections (backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def pushed(gateway_port: int, job: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = http_get(f"http://127.0.0.1:{gateway_port}/metrics")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") == job:
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    series: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    for (n, ls), v in series.items():
        if n == name and set(labels.items()) <= ls:
            return v
    return None


def sink_of(watch: Lifewatch) -> PushgatewaySink:
    return next(s for s in watch._lifecycle.bus.sinks if isinstance(s, PushgatewaySink))


def test_bad_pushgateway_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"pushgateway must be a URL string.*got 9091"):
        Lifewatch(registry=CollectorRegistry(), pushgateway=9091)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"pushgateway url must be a non-empty string"):
        Lifewatch(registry=CollectorRegistry(), pushgateway="")
    with pytest.raises(ValueError, match=r"timeout must be a positive number of seconds; got 0"):
        Pushgateway("http://127.0.0.1:9091", timeout=0)


def test_grouping_key_is_job_instance_service() -> None:
    watch = Lifewatch(service="orders", registry=CollectorRegistry(), pushgateway="pg:9091")
    sink = sink_of(watch)
    assert sink.job == "orders"
    assert set(sink.grouping_key) == {"instance", "service"}
    assert sink.grouping_key["service"] == "orders"
    named = Lifewatch(
        registry=CollectorRegistry(),
        pushgateway=Pushgateway("pg:9091", job="api", instance="10.0.0.7:8000"),
    )
    assert (sink_of(named).job, sink_of(named).grouping_key) == (
        "api",
        {"instance": "10.0.0.7:8000"},
    )


@pytest.mark.anyio
async def test_a_dead_gateway_never_blocks_the_loop_and_is_logged(
    logs: list[dict[str, Any]],
) -> None:
    for make in (black_hole, _refused):
        with make() as url:
            watch = Lifewatch(
                registry=CollectorRegistry(), pushgateway=Pushgateway(url, timeout=0.5)
            )

            @asynccontextmanager
            async def lifespan(app: Any, watch: Lifewatch = watch) -> Any:
                async with watch.phase("database"):
                    raise ConnectionError("refused")
                yield

            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            task = asyncio.get_running_loop().create_task(ticker())
            started = time.monotonic()
            with pytest.raises(ConnectionError):
                async with LifespanManager(watch.instrument(Starlette(lifespan=lifespan))):
                    pass
            assert time.monotonic() - started < 0.3, "the failed startup waited for the push"
            await asyncio.sleep(0.6)  # the loop keeps turning while the push times out
            task.cancel()
            assert ticks > 20
            began = time.monotonic()
            assert sink_of(watch).wait() is True
            assert time.monotonic() - began < 0.5
    warnings = [e for e in logs if e["event"] == "lifespan.pushgateway.failed"]
    assert len(warnings) >= 2, logs
    assert all(w["log_level"] == "warning" and w["url"] and w["error"] for w in warnings)


@contextmanager
def _refused() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"


def test_last_words_reach_a_real_pushgateway(tmp_path: Path) -> None:
    gw = free_port()
    with running(pushgateway(tmp_path, gw), tmp_path / "pushgateway.log"):
        wait_for("the pushgateway", lambda: http_get(f"http://127.0.0.1:{gw}/-/ready"), 15)
        base = {"LW_PUSHGATEWAY": f"http://127.0.0.1:{gw}", "LW_JOB": "demo-push"}

        # 1. A critical startup failure: uvicorn exits at once, the gateway has why.
        app_port = free_port()
        failing = env(LW_MODE="fail", LW_INSTANCE=f"127.0.0.1:{app_port}", **base)
        with running(uvicorn_argv(app_port), tmp_path / "fail.log", failing) as proc:
            assert proc.wait(20) != 0
        series = pushed(gw, "demo-push")
        instance = {"instance": f"127.0.0.1:{app_port}", "service": "demo"}
        assert value(series, "lifespan_state", state="failed", **instance) == 1
        assert (
            value(
                series,
                "lifespan_phase_failures_total",
                phase="migrations",
                event="startup",
                reason="error",
                **instance,
            )
            == 1
        )
        assert value(series, "lifespan_phase_duration_seconds", phase="database", event="startup")
        assert value(series, "lifespan_startup_duration_seconds", **instance)

        # 2. A full start, then SIGTERM: the shutdown durations are on the gateway.
        app_port = free_port()
        clean = env(LW_MODE="ok", LW_INSTANCE=f"127.0.0.1:{app_port}", **base)
        with running(uvicorn_argv(app_port), tmp_path / "ok.log", clean) as proc:
            wait_for("the app", lambda: http_get(f"http://127.0.0.1:{app_port}/"), 20)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) in (0, -signal.SIGTERM)
        series = pushed(gw, "demo-push")
        instance = {"instance": f"127.0.0.1:{app_port}", "service": "demo"}
        assert value(series, "lifespan_state", state="stopped", **instance) == 1
        shutdown = value(series, "lifespan_shutdown_duration_seconds", **instance)
        assert shutdown is not None and shutdown >= 0.07
        assert value(
            series,
            "lifespan_phase_duration_seconds",
            phase="flush-queue",
            event="shutdown",
            **instance,
        )
        assert value(series, "push_time_seconds", **instance)


@pytest.mark.anyio
def test_a_rolled_back_startup_pushes_the_rollback_too(tmp_path: Path) -> None:
    gw = free_port()
    with running(pushgateway(tmp_path, gw), tmp_path / "pushgateway.log"):
        wait_for("the pushgateway", lambda: http_get(f"http://127.0.0.1:{gw}/-/ready"), 15)
        watch = Lifewatch(
            service="composed",
            registry=CollectorRegistry(),
            pushgateway=Pushgateway(f"127.0.0.1:{gw}", job="rollback", instance="here"),
        )

        @asynccontextmanager
        async def db(app: Any) -> Any:
            yield
            await asyncio.sleep(0.05)  # closing the pool, during the rollback

        @asynccontextmanager
        async def broken(app: Any) -> Any:
            raise RuntimeError("no config")
            yield

        app = watch.instrument(Starlette(lifespan=watch.lifespan(db=db, broken=broken)))

        async def main() -> None:
            with pytest.raises(RuntimeError, match="no config"):
                async with LifespanManager(app):
                    pass
            await asyncio.sleep(0)

        asyncio.run(main())
        assert sink_of(watch).wait()
        series = pushed(gw, "rollback")
        assert value(series, "lifespan_state", state="failed", instance="here") == 1
        assert value(
            series, "lifespan_phase_failures_total", phase="broken", event="startup", reason="error"
        )
        rollback = value(series, "lifespan_shutdown_duration_seconds", service="composed")
        assert rollback is not None and rollback >= 0.05
        assert value(series, "lifespan_phase_duration_seconds", phase="db", event="shutdown")


def test_a_hung_gateway_delays_exit_by_at_most_the_timeout(tmp_path: Path) -> None:
    timeout = 1.5

    def failed_startup(extra: dict[str, str], log: str) -> tuple[float, str]:
        """Seconds from launch to exit, and the output."""
        started = time.monotonic()
        port = free_port()
        with running(uvicorn_argv(port), tmp_path / log, env(LW_MODE="fail", **extra)) as proc:
            assert proc.wait(30) != 0
        return time.monotonic() - started, (tmp_path / log).read_text()

    def sigterm(extra: dict[str, str], log: str) -> tuple[float, str]:
        """Seconds from SIGTERM to exit, and the output."""
        port = free_port()
        with running(uvicorn_argv(port), tmp_path / log, env(LW_MODE="ok", **extra)) as proc:
            wait_for("the app", lambda: http_get(f"http://127.0.0.1:{port}/"), 20)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        return time.monotonic() - started, (tmp_path / log).read_text()

    for run in (failed_startup, sigterm):
        baseline, _ = run({}, f"{run.__name__}-baseline.log")
        with black_hole() as url:
            extra = {"LW_PUSHGATEWAY": url, "LW_PUSH_TIMEOUT": str(timeout)}
            hung, out = run(extra, f"{run.__name__}-hung.log")
        delay = hung - baseline
        assert delay < timeout + 0.5, (
            f"{run.__name__}: exit delayed {delay:.2f}s by a hung gateway (timeout {timeout}s)"
        )
        # A warning: shown by stdlib's last-resort handler in an app without logging set up.
        assert "lifespan.pushgateway.failed" in out, out[-3000:]
        print(
            f"{run.__name__}: exit {baseline:.2f}s without a gateway, "
            f"{hung:.2f}s with a hung one (timeout {timeout}s)"
        )
