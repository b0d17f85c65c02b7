"""The probe endpoints: formats, methods, paths, lifecycle truth, bad input."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from lifewatch import Lifewatch, LifewatchMiddleware, State
from tests.support.apps import raw_app
from tests.support.probes import call, get

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_default_answers_on_a_starlette_app(watch: Lifewatch) -> None:
    app = watch.instrument(Starlette(routes=[Route("/", lambda r: PlainTextResponse("home"))]))
    with TestClient(app) as client:
        for path in ("/livez", "/readyz", "/startupz"):
            response = client.get(path)
            assert (response.status_code, response.text) == (200, "ok"), path
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert client.get("/").text == "home"  # everything else passes through
        head = client.head("/readyz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "2"
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            response = client.request(method, "/readyz")
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, HEAD"
            assert response.headers["cache-control"] == "no-store"
        # An unknown per-check path is the app's: Starlette answers 404.
        assert client.get("/readyz/nope").status_code == 404


def test_verbose_lines_follow_the_kube_apiserver(watch: Lifewatch) -> None:
    @watch.check("postgres")
    async def postgres() -> None:
        return None

    @watch.check("redis")
    def redis() -> bool:
        raise ConnectionError("redis://:hunter2@cache:6379 refused")

    with TestClient(watch.instrument(Starlette())) as client:
        response = client.get("/readyz?verbose")
        assert response.status_code == 503
        assert response.text == (
            "[+]lifespan ok\n"
            "[+]postgres ok\n"
            "[-]redis failed: reason withheld\n"
            "readyz check failed\n"
        )
        # A failure is always verbose, as on the kube-apiserver.
        assert client.get("/readyz").text == response.text
        excluded = client.get("/readyz?verbose&exclude=redis&exclude=nosuch")
        assert excluded.status_code == 200
        assert excluded.text == (
            "[+]lifespan ok\n"
            "[+]postgres ok\n"
            "[+]redis excluded: ok\n"
            'warn: some health checks cannot be excluded: no matches for "nosuch"\n'
            "readyz check passed\n"
        )
        assert client.get("/readyz?exclude=redis").text == "ok"
        assert client.get("/readyz/postgres").text == "ok"
        one = client.get("/readyz/redis?verbose")
        assert one.status_code == 503
        assert one.text == "[-]redis failed: reason withheld\nreadyz check failed\n"
        assert "hunter2" not in client.get("/readyz", headers={"accept": "application/json"}).text
        assert client.get("/livez?verbose").text == "livez check passed\n"


def test_expose_details_shows_the_reason(registry: CollectorRegistry) -> None:
    watch = Lifewatch(registry=registry, expose_details=True)

    @watch.check("redis")
    def redis() -> None:
        raise ConnectionError("refused\n[+]forged ok")

    with TestClient(watch.instrument(Starlette())) as client:
        text = client.get("/readyz?verbose").text
    assert "[-]redis failed: ConnectionError: refused [+]forged ok\n" in text
    assert "\n[+]forged" not in text  # a reason cannot forge a line


def test_health_json(watch: Lifewatch) -> None:
    @watch.check("postgres")
    async def postgres() -> None:
        return None

    @watch.check("cache", critical=False)
    async def cache() -> bool:
        return False

    with TestClient(
        watch.instrument(
            Starlette(),
        )
    ) as client:
        response = client.get("/readyz", headers={"accept": "application/health+json"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/health+json"
        body = response.json()
        assert body["status"] == "warn" and body["state"] == "ready"
        assert body["serviceId"] == "test"
        pg = body["checks"]["postgres"][0]
        assert pg["status"] == "pass" and pg["observedUnit"] == "s"
        assert isinstance(pg["observedValue"], float) and pg["time"].endswith("Z")
        assert "output" not in pg
        assert body["checks"]["cache"][0] == {
            **body["checks"]["cache"][0],
            "status": "warn",
            "output": "reason withheld",
            "critical": False,
        }
        assert body["checks"]["lifespan"][0]["observedValue"] == "ready"
        plain_json = client.get(
            "/readyz?exclude=cache&exclude=x", headers={"accept": "application/json"}
        )
        assert plain_json.headers["content-type"] == "application/json"
        body = plain_json.json()
        assert body["status"] == "pass" and "cache" not in body["checks"]
        assert body["notes"] == [
            "excluded: cache",
            'some health checks cannot be excluded: no matches for "x"',
        ]
        # q=0 means "not this one"; a browser gets text.
        assert client.get("/readyz", headers={"accept": "application/json;q=0"}).text == "ok"
        browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        assert client.get("/readyz", headers={"accept": browser}).text == "ok"


def test_paths_are_configurable_and_validated(registry: CollectorRegistry) -> None:
    watch = Lifewatch(
        registry=registry,
        livez_path="/health/live",
        readyz_path="/health/ready",
        startupz_path=None,
    )
    with TestClient(watch.instrument(Starlette())) as client:
        assert client.get("/health/live").text == "ok"
        assert client.get("/health/ready/lifespan").text == "ok"
        assert client.get("/readyz").status_code == 404
        assert client.get("/startupz").status_code == 404
    for bad in ("readyz", "/", "/readyz/", "/a b", 3):
        with pytest.raises(ValueError, match="readyz_path must be an absolute path"):
            Lifewatch(registry=registry, readyz_path=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must differ"):
        Lifewatch(registry=registry, livez_path="/z", readyz_path="/z")
    with pytest.raises(TypeError, match="expose_details"):
        Lifewatch(registry=registry, expose_details="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drain_delay"):
        Lifewatch(registry=registry, drain_delay=-1)


async def test_lifecycle_truth_through_startup_background_and_shutdown(
    watch: Lifewatch,
) -> None:
    release_startup = asyncio.Event()
    release_model = asyncio.Event()
    seen: dict[str, Any] = {}
    holder: dict[str, Any] = {}

    async def model() -> None:
        await release_model.wait()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with watch.phase("database"):
            await release_startup.wait()
        async with watch.phase("cache-warmup", critical=False):
            raise ConnectionError("cold")
        watch.background("model-load", model)
        yield
        async with watch.phase("close"):
            app_ = holder["app"]
            seen["stopping"] = [
                (await get(app_, p)).status_code for p in ("/livez", "/readyz", "/startupz")
            ]

    app = watch.instrument(Starlette(lifespan=lifespan))
    holder["app"] = app
    manager = LifespanManager(app)
    entering = asyncio.ensure_future(manager.__aenter__())
    await asyncio.sleep(0.05)
    assert watch.state is State.STARTING
    codes = [(await get(app, p)).status_code for p in ("/livez", "/readyz", "/startupz")]
    assert codes == [200, 503, 503]  # liveness never waits for startup
    text = (await get(app, "/readyz?verbose")).text
    assert "[-]lifespan failed: starting: phase 'database' running\n" in text
    release_startup.set()
    await entering
    try:
        # Startup finished, a background phase still runs.
        codes = [(await get(app, p)).status_code for p in ("/livez", "/readyz", "/startupz")]
        assert codes == [200, 503, 200]
        text = (await get(app, "/readyz?verbose")).text
        assert "[-]lifespan failed: background phase(s) running: model-load\n" in text
        release_model.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if watch.state is State.READY:
                break
        response = await get(app, "/readyz?verbose")
        assert response.status_code == 200  # degraded is still ready, with a warning
        assert "[+]lifespan warn: degraded: non-critical phase(s) failed: cache-warmup\n" in (
            response.text
        )
        body = (await get(app, "/readyz", accept="application/health+json")).json()
        assert body["status"] == "warn"
    finally:
        await manager.__aexit__(None, None, None)
    assert seen["stopping"] == [200, 503, 200]
    assert (await get(app, "/readyz")).status_code == 503  # stopped


async def test_failed_states_are_not_ready(watch: Lifewatch) -> None:
    async def model() -> None:
        raise RuntimeError("weights missing")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        watch.background("model-load", model)
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        for _ in range(100):
            await asyncio.sleep(0.01)
            if watch.state is State.FAILED:
                break
        response = await get(app, "/readyz?verbose")
        assert response.status_code == 503
        assert "[-]lifespan failed: failed: phase 'model-load'\n" in response.text
        assert (await get(app, "/startupz")).status_code == 200

    registry = CollectorRegistry()
    broken = Lifewatch(registry=registry)

    @asynccontextmanager
    async def bad(app: Any) -> Any:
        async with broken.phase("database"):
            raise ConnectionError("refused")
        yield

    app = broken.instrument(Starlette(lifespan=bad))
    with pytest.raises(Exception, match="database"):
        async with LifespanManager(app):
            pass
    assert [(await get(app, p)).status_code for p in ("/livez", "/readyz", "/startupz")] == [
        200,
        503,
        503,
    ]
    assert "phase 'database'" in (await get(app, "/startupz?verbose")).text


async def test_raw_asgi_app_behind_the_middleware(watch: Lifewatch) -> None:
    app = LifewatchMiddleware(raw_app(), watch=watch)
    async with LifespanManager(app):
        assert await call(app, "/readyz") == (
            200,
            {
                b"content-type": b"text/plain; charset=utf-8",
                b"content-length": b"2",
                b"cache-control": b"no-store",
                b"x-content-type-options": b"nosniff",
            },
            b"ok",
        )
        assert (await call(app, "/other"))[2] == b"app"
    assert (await call(app, "/readyz"))[0] == 503


JUNK_QUERIES = [
    b"%",
    b"%%%",
    b"verbose=%zz",
    b"exclude=%ff%fe%00",
    b"&&&=&=&==",
    b"exclude",
    b"exclude=" + b"a" * 100_000,
    b"&" * 50_000,
    b"exclude=" + b",".join(b"n%d" % i for i in range(10_000)),
    b"verbose&exclude=%0A%5B%2B%5Dforged%20ok",
    bytes(range(256)),
]


async def test_junk_queries_and_huge_headers_never_break_a_probe(watch: Lifewatch) -> None:
    @watch.check("postgres")
    async def postgres() -> None:
        return None

    app = LifewatchMiddleware(raw_app(), watch=watch)
    async with LifespanManager(app):
        for query in JUNK_QUERIES:
            status, headers, body = await call(app, "/readyz", query=query)
            assert status == 200, query[:40]
            assert b"\n[+]forged" not in body
            assert len(body) < 20_000  # reflected names are bounded
        huge = [
            [(b"accept", b"application/json;q=" + b"9" * 100_000)],
            [(b"accept", b"," * 100_000 + b"application/health+json")],
            [(b"accept", bytes(range(256)) * 400)],
            [(b"x-junk-%d" % i, b"v" * 100) for i in range(5_000)],
            [(b"accept", b"application/json;q=nan;q=;=;;")],
        ]
        for headers in huge:
            status, _, body = await call(app, "/readyz", headers=headers, query=b"verbose")
            assert status == 200
            assert body.startswith(b"[+]lifespan ok") or json.loads(body)["status"] == "pass"


async def test_a_probe_that_breaks_answers_503_not_500(
    watch: Lifewatch, logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("bug in lifewatch")

    monkeypatch.setattr(watch._health, "report", broken)
    status, headers, body = await call(
        LifewatchMiddleware(raw_app(), watch=watch), "/readyz", query=b"verbose"
    )
    assert status == 503
    assert headers[b"cache-control"] == b"no-store"
    assert body == b"lifewatch: the probe itself failed (see the log)\n"
    assert any(e["event"] == "lifespan.probe.error" for e in logs)
