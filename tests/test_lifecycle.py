"""One app, several lifespans in one process (test after test): each is watched afresh."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch, State


def test_a_second_lifespan_is_ready_again(watch: Lifewatch) -> None:
    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with watch.phase("db"):
            pass
        yield

    app = watch.instrument(Starlette(lifespan=lifespan))
    seen = []
    for _ in range(2):
        with TestClient(app):
            seen.append(watch.state)
        assert watch.state is State.STOPPED
    assert seen == [State.READY, State.READY]
