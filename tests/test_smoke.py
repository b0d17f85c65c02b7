from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch, State


def test_one_phase_is_traced_timed_and_logged(watch: Lifewatch, spans: Any, logs: Any) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with watch.phase("database"):
            await asyncio.sleep(0)
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    with TestClient(app):
        assert watch.state is State.READY
    assert watch.state is State.STOPPED
    assert spans.named("lifespan.startup database").parent is not None
    assert any(e["event"] == "lifespan.phase.end" and e["phase"] == "database" for e in logs)
