"""``watch.supervise``: a supervised task that dies breaks liveness."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, LifewatchMiddleware
from tests.conftest import sample
from tests.support.probes import get

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_dead_task_breaks_liveness_and_is_logged(
    watch: Lifewatch, registry: CollectorRegistry, logs: list[dict[str, Any]]
) -> None:
    crash = asyncio.Event()

    async def consumer() -> None:
        await crash.wait()
        raise RuntimeError("queue gone")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        task = watch.supervise(asyncio.ensure_future(consumer()), name="consumer")
        yield
        task.cancel()

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        live = await get(app, "/livez?verbose")
        assert (live.status_code, live.text) == (
            200,
            "[+]supervised/consumer ok\nlivez check passed\n",
        )
        assert (
            sample(registry, "lifespan_check_status", check="supervised/consumer", probe="liveness")
            == 1
        )
        crash.set()
        await asyncio.sleep(0.01)
        live = await get(app, "/livez?verbose")
        assert live.status_code == 503
        assert live.text == "[-]supervised/consumer failed: reason withheld\nlivez check failed\n"
        assert (await get(app, "/livez/supervised/consumer")).status_code == 503
        body = (await get(app, "/livez", accept="application/health+json")).json()
        assert body["checks"]["supervised/consumer"][0]["observedValue"] == "died"
        # Readiness is about traffic, liveness about the process: separate.
        assert (await get(app, "/readyz")).status_code == 200
        assert (
            sample(registry, "lifespan_check_status", check="supervised/consumer", probe="liveness")
            == 0
        )
    died = [e for e in logs if e["event"] == "lifespan.task.died"]
    assert len(died) == 1
    assert died[0]["task"] == "consumer" and died[0]["reason"] == "error"
    # Stated once, by the traceback (``error`` only when there is none).
    assert "error" not in died[0] and "queue gone" in died[0]["exception"]


async def test_ending_at_shutdown_is_not_a_death(
    watch: Lifewatch, logs: list[dict[str, Any]]
) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        task = watch.supervise(forever())  # a coroutine is made a task
        app.state.task = task
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app = watch.instrument(Starlette(lifespan=lifespan))
    async with LifespanManager(app):
        assert (await get(app, "/livez")).status_code == 200
        with pytest.raises(ValueError, match="already supervised"):
            watch.supervise(asyncio.ensure_future(forever()), name=app.state.task.get_name())
    assert not [e for e in logs if e["event"] == "lifespan.task.died"]


async def test_returning_or_cancelled_while_serving_is_a_death(
    registry: CollectorRegistry,
) -> None:
    watch = Lifewatch(registry=registry, expose_details=True)

    async def quits() -> None:
        return None

    async def forever() -> None:
        await asyncio.Event().wait()

    app = LifewatchMiddleware(Starlette(), watch=watch)
    async with LifespanManager(app):
        watch.supervise(quits(), name="quits")
        cancelled = watch.supervise(forever(), name="cancelled")
        cancelled.cancel()
        await asyncio.sleep(0.01)
        text = (await get(app, "/livez?verbose")).text
        assert "[-]supervised/quits failed: returned before shutdown\n" in text
        assert "[-]supervised/cancelled failed: cancelled\n" in text
        # A restarted task under the same name replaces the dead one.
        watch.supervise(forever(), name="quits").cancel()
    with pytest.raises(TypeError, match=r"asyncio\.Task or a coroutine"):
        watch.supervise(lambda: None)


def test_a_coroutine_needs_a_running_loop(watch: Lifewatch) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="running event loop"):
        watch.supervise(forever())
