"""``/metrics``: formats, methods, paths, escaping, and scrapes in every state."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifewatch import Lifewatch
from lifewatch._metrics import MetricsSink, metrics_for
from tests.support.probes import call

pytestmark = pytest.mark.anyio

ODD_NAMES = ('db "primary"', "back\\slash", "two\nlines", "cache-warmup ünïcødé ✓", '{x="1"}')


async def get(
    app: Any, path: str = "/metrics", method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request straight through ASGI: no client library in between."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    status, heads, body = await call(app, path, method=method, headers=raw)
    return status, {k.decode(): v.decode() for k, v in heads.items()}, body


def app_with(watch: Lifewatch, lifespan: Any = None) -> Starlette:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    return watch.instrument(
        Starlette(routes=[Route("/", home), Route("/other", home)], lifespan=lifespan)
    )


def state_of(text: str) -> str:
    families = {f.name: f for f in text_string_to_metric_families(text)}
    on = [s.labels["state"] for s in families["lifespan_state"].samples if s.value == 1]
    assert len(on) == 1, on
    return on[0]


async def test_text_format_by_default(watch: Lifewatch) -> None:
    async with LifespanManager(app_with(watch)) as manager:
        status, headers, body = await get(manager.app)
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "content-encoding" not in headers
    assert int(headers["content-length"]) == len(body)
    text = body.decode()
    assert state_of(text) == "ready"
    assert "lifespan_startup_duration_seconds " in text


async def test_the_process_collector_is_scraped_on_the_loop(registry: CollectorRegistry) -> None:
    """One process renders inline: the default registry's process collector
    reads /proc on the loop, which tests/conftest.py allows (and says why)."""
    ProcessCollector(registry=registry)
    watch = Lifewatch(registry=registry)
    async with LifespanManager(app_with(watch)) as manager:
        status, _, body = await get(manager.app)
    assert status == 200
    assert "process_open_fds " in body.decode()


async def test_openmetrics_when_accept_asks(watch: Lifewatch) -> None:
    # What Prometheus 2.x sends.
    accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    async with LifespanManager(app_with(watch)) as manager:
        status, headers, body = await get(manager.app, headers={"Accept": accept})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(text)}
    assert {"lifespan_state", "lifespan_phase_failures", "lifespan_check_duration_seconds"} <= names


async def test_gzip_when_accepted(watch: Lifewatch) -> None:
    import gzip

    async with LifespanManager(app_with(watch)) as manager:
        _, headers, body = await get(manager.app, headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert state_of(gzip.decompress(body).decode()) == "ready"


async def test_head_and_other_methods(watch: Lifewatch) -> None:
    async with LifespanManager(app_with(watch)) as manager:
        status, headers, body = await get(manager.app, method="HEAD")
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 0
        status, headers, _ = await get(manager.app, method="POST")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"


async def test_path_is_configurable_and_can_be_off(registry: CollectorRegistry) -> None:
    moved = Lifewatch(registry=registry, metrics_path="/internal/prom")
    async with LifespanManager(app_with(moved)) as manager:
        assert (await get(manager.app, "/internal/prom"))[0] == 200
        assert (await get(manager.app, "/metrics"))[0] == 404
    off = Lifewatch(registry=registry, metrics_path=None)
    assert "/metrics" not in off._routes
    async with LifespanManager(app_with(off)) as manager:
        assert (await get(manager.app, "/metrics"))[0] == 404
        assert (await get(manager.app, "/"))[2] == b"home"


@pytest.mark.parametrize("bad", ["metrics", "", "/metrics?x=1", 42, b"/metrics"])
def test_bad_metrics_path_is_a_clear_error(bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"metrics_path must be an absolute path such as '/metrics'.*got"
    ):
        Lifewatch(registry=CollectorRegistry(), metrics_path=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["1lifespan", "life-span", "", "lifespan ", "é", None, 3])
def test_bad_namespace_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match=r"namespace=.* is not a valid Prometheus metric name"):
        Lifewatch(registry=CollectorRegistry(), namespace=bad)  # type: ignore[arg-type]


async def test_namespace_renames_every_family(registry: CollectorRegistry) -> None:
    watch = Lifewatch(registry=registry, namespace="orders:life")
    async with LifespanManager(app_with(watch)) as manager:
        text = (await get(manager.app))[2].decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names and all(n.startswith("orders:life_") for n in names), names


async def test_odd_phase_and_check_names_are_escaped(watch: Lifewatch) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        for name in ODD_NAMES:
            async with watch.phase(name, critical=False):
                raise RuntimeError("boom")
        yield

    # Until the probes work fills them, write the check families directly.
    families = metrics_for(watch.options.registry, "lifespan")
    for name in ODD_NAMES:
        families.check_status.labels(name, "readiness").set(1)
        families.check_duration.labels(name).observe(0.01)
        families.check_failures.labels(name, "error").inc()

    async with LifespanManager(app_with(watch, lifespan)) as manager:
        text = (await get(manager.app))[2].decode()
        om = (await get(manager.app, headers={"Accept": "application/openmetrics-text"}))[2]

    for parsed in (text_string_to_metric_families(text), openmetrics_families(om.decode())):
        families = {f.name: f for f in parsed}
        phases = {s.labels["phase"] for s in families["lifespan_phase_duration_seconds"].samples}
        failed = {s.labels["phase"] for s in families["lifespan_phase_failures"].samples}
        checks = {s.labels["check"] for s in families["lifespan_check_status"].samples}
        latency = {s.labels["check"] for s in families["lifespan_check_duration_seconds"].samples}
        assert set(ODD_NAMES) <= phases
        assert set(ODD_NAMES) <= failed
        assert set(ODD_NAMES) == checks == latency
    assert await asyncio.to_thread(promtool_check_metrics, text) == ""


def promtool_check_metrics(text: str) -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian package 'prometheus'; see .ci/run)"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, out
    return out.strip()


async def test_promtool_accepts_the_exposition(watch: Lifewatch) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with watch.phase("database"):
            pass
        async with watch.phase("cache", critical=False, timeout=0.01):
            await asyncio.sleep(1)
        yield
        async with watch.phase("database"):
            pass

    families = metrics_for(watch.options.registry, "lifespan")
    families.check_status.labels("postgres", "readiness").set(0)
    families.check_duration.labels("postgres").observe(0.2)
    families.check_failures.labels("postgres", "timeout").inc()
    async with LifespanManager(app_with(watch, lifespan)) as manager:
        text = (await get(manager.app))[2].decode()
    assert await asyncio.to_thread(promtool_check_metrics, text) == ""
    assert (
        'lifespan_phase_failures_total{event="startup",phase="cache",reason="timeout"} 1.0' in text
    )


async def test_a_scrape_answers_while_starting_draining_and_after_failure(
    watch: Lifewatch,
) -> None:
    seen: dict[str, str] = {}
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with watch.phase("database"):
            status, _, body = await get(holder["app"])
            assert status == 200
            seen["during startup"] = state_of(body.decode())
        yield

    app = app_with(watch, lifespan)
    holder["app"] = app
    async with LifespanManager(app) as manager:
        # The probes work flips this on SIGTERM; the endpoint must not care.
        watch.refuse_traffic("maintenance")
        seen["draining"] = state_of((await get(manager.app))[2].decode())
        watch.accept_traffic()
    assert seen == {"during startup": "starting", "draining": "draining"}

    registry = CollectorRegistry()
    failing = Lifewatch(registry=registry)

    @asynccontextmanager
    async def broken(app: Any) -> Any:
        async with failing.phase("database"):
            raise ConnectionError("refused")
        yield

    app = app_with(failing, broken)
    with pytest.raises(ConnectionError):
        async with LifespanManager(app):
            pass
    status, _, body = await get(app)
    assert status == 200
    text = body.decode()
    assert state_of(text) == "failed"
    assert (
        registry.get_sample_value(
            "lifespan_phase_failures_total",
            {"phase": "database", "event": "startup", "reason": "error"},
        )
        == 1
    )


async def test_two_watches_on_one_registry_share_the_families(
    registry: CollectorRegistry,
) -> None:
    a = Lifewatch(service="a", registry=registry)
    b = Lifewatch(service="b", registry=registry)
    [ma, mb] = (
        next(s for s in w._lifecycle.bus.sinks if isinstance(s, MetricsSink)) for w in (a, b)
    )
    assert ma.metrics is mb.metrics
    async with LifespanManager(app_with(a)) as manager:
        assert (await get(manager.app))[0] == 200
