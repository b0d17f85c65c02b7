"""The lifecycle and its parts: the event bus, the readiness state, background phases."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lifewatch import Lifewatch, RunRecord, Sink, State
from lifewatch._bus import EventBus
from lifewatch._lifecycle import Lifecycle
from lifewatch._phase import Phase
from lifewatch._readiness import ALLOWED, Readiness


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


class Log:
    """The one call the lifecycle makes on its logger itself: a sink that broke."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append(f"{event} {fields['hook']}")


class Heard(Sink):
    def __init__(self, name: str, heard: list[str]) -> None:
        self.name, self.heard = name, heard

    def run_begin(self, run: RunRecord) -> None:
        self.heard.append(f"{self.name} begin")

    def run_end(self, run: RunRecord) -> None:
        self.heard.append(f"{self.name} end")

    def state_changed(self, old: State | None, new: State) -> None:
        self.heard.append(f"{self.name} {new.value}")


class Broken(Sink):
    def run_begin(self, run: RunRecord) -> None:
        raise RuntimeError("a bug in a user's sink")


def lifecycle(log: Any = None) -> Lifecycle:
    return Lifecycle(service="t", startup_timeout=None, shutdown_timeout=None, log=log)


def test_every_sink_hears_each_event_and_a_broken_one_is_logged_and_skipped() -> None:
    heard: list[str] = []
    log = Log()
    lc = lifecycle(log)
    lc.connect((Heard("a", heard), Broken(), Heard("b", heard)))
    lc.end_run(lc.begin_run("startup"))
    # Begins in order, ends in reverse: the first sink wraps the others.
    assert heard == [
        "a starting",
        "b starting",
        "a begin",
        "b begin",
        "b end",
        "a end",
        "a ready",
        "b ready",
    ]
    assert log.errors == ["lifespan.sink.failed Broken.run_begin"]


def test_the_sinks_are_connected_once() -> None:
    lc = lifecycle()
    lc.connect(())
    with pytest.raises(RuntimeError, match="connected once"):
        lc.connect(())


@pytest.mark.parametrize("new", list(State), ids=[s.value for s in State])
@pytest.mark.parametrize("old", list(State), ids=[s.value for s in State])
def test_the_state_moves_only_as_the_table_allows(old: State, new: State) -> None:
    readiness = Readiness(EventBus(None))
    readiness.state = old
    if old is new or new in ALLOWED[old]:
        readiness.move(new)
        assert readiness.state is new
        assert old is new or readiness.closing == (new in (State.DRAINING, State.STOPPING))
    else:
        with pytest.raises(ValueError, match=f"from {old.value} to {new.value}"):
            readiness.move(new)
        assert readiness.state is old


def test_a_stopping_stopped_or_failed_instance_is_ready_again_only_through_a_new_startup() -> None:
    for state in (State.STOPPING, State.STOPPED, State.FAILED):
        assert State.READY not in ALLOWED[state] and State.DRAINING not in ALLOWED[state]
        assert State.STARTING in ALLOWED[state]
    lc = lifecycle()
    lc.connect(())
    lc.end_run(lc.begin_run("shutdown"))
    with pytest.raises(ValueError, match="from stopped to ready"):
        lc.readiness.move(State.READY)


def test_traffic_refused_while_starting_keeps_it_out_of_rotation_until_accepted() -> None:
    lc = lifecycle()
    lc.connect(())
    run = lc.begin_run("startup")
    lc.readiness.refuse("maintenance")
    lc.end_run(run)
    assert (lc.state, lc.readiness.refusal) == (State.DRAINING, "maintenance")
    lc.readiness.accept()
    assert (lc.state, lc.readiness.refusal) == (State.READY, None)


def test_accepting_traffic_never_undoes_a_drain_it_did_not_make() -> None:
    lc = lifecycle()
    lc.connect(())
    lc.end_run(lc.begin_run("startup"))
    lc.readiness.move(State.DRAINING)  # SIGTERM's drain
    lc.readiness.refuse("maintenance")
    lc.readiness.accept()
    assert lc.state is State.DRAINING


async def test_a_background_phase_holds_readiness_and_shutdown_cancels_it_without_failing() -> None:
    lc = lifecycle()
    lc.connect(())
    release = asyncio.Event()
    run = lc.begin_run("startup")
    task = lc.background.start("model", Phase(lc, "model", background=True), release.wait)
    lc.end_run(run)
    await asyncio.sleep(0)  # it begins
    assert (lc.state, lc.startup_complete, lc.background.names()) == (
        State.STARTING,
        True,
        ["model"],
    )
    stopping = lc.begin_run("shutdown")
    await lc.background.stop()
    lc.end_run(stopping)
    assert task.cancelled() or task.done()
    phase = run.phases[0]
    assert (phase.name, phase.outcome, phase.reason) == ("model", "cancelled", None)
    assert (run.outcome, lc.state) == ("ok", State.STOPPED)


async def test_a_background_failure_fails_the_instance_and_a_finished_one_makes_it_ready() -> None:
    async def fail() -> None:
        raise RuntimeError("no model")

    for func, state in ((fail, State.FAILED), (asyncio.sleep, State.READY)):
        lc = lifecycle()
        lc.connect(())
        run = lc.begin_run("startup")
        work = (lambda: asyncio.sleep(0)) if func is asyncio.sleep else fail
        task = lc.background.start("model", Phase(lc, "model", background=True), work)
        lc.end_run(run)
        await task
        await asyncio.sleep(0)  # the task's done callback
        assert lc.state is state and not lc.background.tasks
