"""Rule 1: instrumenting changes nothing but what it adds.

The same lifespans run with and without lifewatch, through every way in, on
asyncio and on trio, driven through the ASGI lifespan protocol by a small
server of our own (``serve``). With lifewatch, the server must be sent the
same messages, the app must be left the same state, the lifespans must make
the same effects in the same order, and the server must get the very
exception the user's code raised: same type, same object. lifewatch may add a
PEP 678 note to it naming the phase, nothing more.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.testing import capture_logs

from lifewatch import Lifewatch, LifewatchMiddleware, PhaseTimeout, State

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]

TIMEOUT = 5.0
"""Every lifespan run is bounded: a hang fails the test instead of hanging it."""

STARTED = ("lifespan.startup.complete", False)
STOPPED = ("lifespan.shutdown.complete", False)


pytestmark = pytest.mark.anyio  # at collection, so the backend fixture below parametrizes


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every case on both backends (conftest's fixture is asyncio only)."""
    backend: str = request.param
    return backend


def new_watch() -> Lifewatch:
    return Lifewatch(service="t", registry=CollectorRegistry())


# -- the server ---------------------------------------------------------------


@dataclass
class Trace:
    """What the user's code did in one run: its effects, the exception it raised."""

    effects: list[str] = field(default_factory=list)
    raised: BaseException | None = None

    def fail(self, error: BaseException) -> NoReturn:
        self.raised = error
        raise error


@dataclass
class Outcome:
    """What one run looked like from the outside."""

    sent: list[tuple[str, bool]]
    """Each message the app sent the server: its type, and whether it had a ``message``."""
    state: dict[str, Any]
    error: BaseException | None
    """What the app call raised: the server's view of a failure."""
    trace: Trace

    def seen(self) -> dict[str, Any]:
        """Everything that must not change when lifewatch is in."""
        return {
            "sent": self.sent,
            "state": self.state,
            "effects": self.trace.effects,
            "error": (type(self.error), repr(self.error)),
        }


async def serve(
    app: ASGIApp,
) -> tuple[list[tuple[str, bool]], dict[str, Any], BaseException | None]:
    """Do what a server does with the lifespan: startup, then shutdown if startup completed."""
    sent: list[tuple[str, bool]] = []
    state: dict[str, Any] = {}
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    error: BaseException | None = None
    received = 0

    async def receive() -> Message:
        nonlocal received
        received += 1
        await anyio.lowlevel.checkpoint()  # a server's queue wait lets other tasks run
        if received == 1:
            return {"type": "lifespan.startup"}
        if received == 2 and sent and sent[-1][0] == "lifespan.startup.complete":
            return {"type": "lifespan.shutdown"}
        await anyio.sleep_forever()  # a server has nothing more to say
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append((message["type"], "message" in message))
        await anyio.lowlevel.checkpoint()

    async def call_app() -> None:
        nonlocal error
        try:
            await app(scope, receive, send)
        except BaseException as exc:  # what the server would get, whatever it is
            error = exc

    # The app runs in a task of its own, as under uvicorn: a cancellation it
    # leaks stays in that task, and a task it leaves broken fails the run.
    with anyio.move_on_after(TIMEOUT) as deadline:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_app)
        except Exception as broken:  # the app's task could not even end cleanly
            message = f"the app left its task broken: {broken!r}; the app call raised {error!r}"
            raise AssertionError(message) from broken
    assert not deadline.cancel_called, f"the lifespan hung for {TIMEOUT}s; it sent {sent}"
    return sent, state, error


Build = Callable[[Trace, "Lifewatch | None"], ASGIApp]
"""Makes the app of one run; ``watch`` is None for the bare app."""


async def run(build: Build, watch: Lifewatch | None) -> Outcome:
    trace = Trace()
    sent, state, error = await serve(build(trace, watch))
    return Outcome(sent, state, error, trace)


# -- the lifespans ------------------------------------------------------------


class DatabaseDown(Exception):
    """The user's own exception."""


DB = object()
"""The state a lifespan yields, passed through by identity."""


@asynccontextmanager
async def step(
    watch: Lifewatch | None, name: str, seconds: float | None = None
) -> AsyncIterator[None]:
    """``watch.phase(name, timeout=seconds)``; without lifewatch, what the app would write."""
    if watch is None:
        with anyio.fail_after(seconds):
            yield
    else:
        async with watch.phase(name, timeout=seconds):
            yield


Scenario = Callable[[Trace, "Lifewatch | None"], Lifespan]
"""Makes the user's lifespan for one run (its phases marked when ``watch`` is given)."""


def plain(trace: Trace, watch: Lifewatch | None) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with step(watch, "database"):
            trace.effects.append("db:enter")
        yield {"db": DB, "shared": "db"}
        async with step(watch, "database"):
            trace.effects.append("db:exit")

    return lifespan


async def worker(trace: Trace, *, task_status: TaskStatus[None]) -> None:
    trace.effects.append("tg:started")
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        trace.effects.append("tg:stopped")


def task_group(trace: Trace, watch: Lifewatch | None) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tg:
            await tg.start(worker, trace)
            yield {"k": 1}
            tg.cancel_scope.cancel()
        trace.effects.append("tg:exit")

    return lifespan


def cancel_scope(trace: Trace, watch: Lifewatch | None) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        with anyio.CancelScope():
            trace.effects.append("scope:enter")
            yield {"k": 1}
        trace.effects.append("scope:exit")

    return lifespan


def asyncio_task_group(trace: Trace, watch: Lifewatch | None) -> Lifespan:
    async def asyncio_worker(started: asyncio.Event) -> None:
        trace.effects.append("tg:started")
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            trace.effects.append("tg:stopped")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        started = asyncio.Event()
        async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined,unused-ignore]
            task = tg.create_task(asyncio_worker(started))
            await started.wait()
            yield {"k": 1}
            task.cancel()
        trace.effects.append("tg:exit")

    return lifespan


def failing(at: str, phase: str | None) -> Scenario:
    """A lifespan raising ``DatabaseDown`` at startup or shutdown, in a phase or not."""

    def scenario(trace: Trace, watch: Lifewatch | None) -> Lifespan:
        async def fail() -> None:
            if phase is None:
                trace.fail(DatabaseDown("connection refused"))
            async with step(watch, phase):
                trace.fail(DatabaseDown("connection refused"))

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
            trace.effects.append("db:enter")
            if at == "startup":
                await fail()
            yield {"db": DB}
            trace.effects.append("db:exit")
            if at == "shutdown":
                await fail()

        return lifespan

    scenario.__name__ = f"{at}_error" + (f"_in_phase_{phase}" if phase else "_no_phase")
    return scenario


def slow_database(trace: Trace, watch: Lifewatch | None) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with step(watch, "database", seconds=0.05):
            trace.effects.append("db:connecting")
            await anyio.sleep_forever()
        yield

    return lifespan


ERRORS = [
    failing("startup", "database"),
    failing("startup", None),
    failing("shutdown", "database"),
    failing("shutdown", None),
]
SCENARIOS = [plain, task_group, cancel_scope, *ERRORS]

# -- the ways in ----------------------------------------------------------------
# Each makes the app for a run: the bare app when ``watch`` is None.


def instrument_starlette(ls: Lifespan, trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    app = Starlette(lifespan=ls)
    return app if watch is None else watch.instrument(app)


def instrument_fastapi(ls: Lifespan, trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    app = FastAPI(lifespan=ls)
    return app if watch is None else watch.instrument(app)


def fastapi_watch_lifespan(ls: Lifespan, trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    return FastAPI(lifespan=ls if watch is None else watch.lifespan(ls))


def neighbour(trace: Trace) -> Lifespan:
    """A second lifespan, composed before the one under test."""

    @asynccontextmanager
    async def neighbour(app: Any) -> AsyncIterator[dict[str, Any]]:
        trace.effects.append("n:enter")
        try:
            yield {"n": 1, "shared": "n"}
        except BaseException:
            trace.effects.append("n:exit on error")  # as AsyncExitStack passes it on
            raise
        trace.effects.append("n:exit")

    return neighbour


def stacked(*lifespans: Lifespan) -> Lifespan:
    """The bare equivalent of ``watch.lifespan(a, b)``: an AsyncExitStack, first key wins."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        state: dict[str, Any] = {}
        async with AsyncExitStack() as stack:
            for ls in lifespans:
                for key, value in ((await stack.enter_async_context(ls(app))) or {}).items():
                    state.setdefault(key, value)
            yield state

    return lifespan


def composed(ls: Lifespan, trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    first = neighbour(trace)
    return FastAPI(lifespan=stacked(first, ls) if watch is None else watch.lifespan(first, ls))


def middleware(ls: Lifespan, trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    app = Starlette(lifespan=ls)
    return app if watch is None else LifewatchMiddleware(app, watch=watch)


Way = Callable[[Lifespan, Trace, "Lifewatch | None"], ASGIApp]
WAYS: list[Way] = [
    instrument_starlette,
    instrument_fastapi,
    fastapi_watch_lifespan,
    composed,
    middleware,
]


def documented_difference(bare: Outcome) -> None:
    """The one place composition differs from a bare ``AsyncExitStack`` (README,
    "Where lifewatch differs"): when a later lifespan fails, at startup or at
    shutdown, the earlier ones are still shut down as usual, their exit not
    handed the other lifespan's error, so their shutdown code runs."""
    effects = bare.trace.effects
    effects[:] = ["n:exit" if e == "n:exit on error" else e for e in effects]


def through(way: Way, scenario: Scenario) -> Build:
    return lambda trace, watch: way(scenario(trace, watch), trace, watch)


def name(obj: Callable[..., Any]) -> str:
    return obj.__name__


def lifewatch_notes(error: BaseException | None) -> list[str]:
    notes: list[str] = getattr(error, "__notes__", [])
    return [note for note in notes if note.startswith("lifewatch")]


# -- the tests ------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS, ids=name)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=name)
async def test_same_outcome_with_and_without_lifewatch(scenario: Scenario, way: Way) -> None:
    await same_outcome(scenario, way)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is Python 3.11+")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncio's own task group
@pytest.mark.parametrize("way", WAYS, ids=name)
async def test_same_outcome_with_an_asyncio_task_group_across_yield(way: Way) -> None:
    await same_outcome(asyncio_task_group, way)


@pytest.mark.parametrize("scenario", [task_group, cancel_scope, plain], ids=name)
@pytest.mark.parametrize("way", WAYS, ids=name)
async def test_same_outcome_with_every_bound_set(scenario: Scenario, way: Way) -> None:
    """With startup_timeout and shutdown_timeout both set, the bound's cancel
    scopes are open across ``yield`` and their deadlines move: still the same."""
    bounded = Lifewatch(
        service="t", registry=CollectorRegistry(), startup_timeout=5, shutdown_timeout=5
    )
    await same_outcome(scenario, way, bounded)


async def same_outcome(scenario: Scenario, way: Way, watch: Lifewatch | None = None) -> None:
    bare = await run(through(way, scenario), None)
    watched = await run(through(way, scenario), watch or new_watch())
    if way is composed:
        documented_difference(bare)
    assert watched.seen() == bare.seen()
    # The very exception the user's code raised: not a wrapper, not a copy.
    assert bare.error is bare.trace.raised
    assert watched.error is watched.trace.raised


NOTES = {
    "startup_error_in_phase_database": r"lifewatch: startup phase 'database' failed \(error\)",
    "startup_error_no_phase": r"lifewatch: startup phase '[^']+' failed \(error\)",
    "shutdown_error_in_phase_database": r"lifewatch: shutdown phase 'database' failed \(error\)",
    "shutdown_error_no_phase": r"lifewatch: shutdown phase '[^']+' failed \(error\)",
}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PEP 678 notes need Python 3.11")
@pytest.mark.parametrize("way", WAYS, ids=name)
@pytest.mark.parametrize("scenario", ERRORS, ids=name)
async def test_a_failure_keeps_its_type_and_gets_one_note_naming_the_phase(
    scenario: Scenario, way: Way
) -> None:
    bare = await run(through(way, scenario), None)
    watched = await run(through(way, scenario), new_watch())
    assert type(bare.error) is DatabaseDown and lifewatch_notes(bare.error) == []
    assert type(watched.error) is DatabaseDown, repr(watched.error)
    assert watched.error is watched.trace.raised
    notes = lifewatch_notes(watched.error)
    if way is middleware and scenario.__name__.endswith("_no_phase"):
        # The middleware alone knows no phase to name: it adds nothing.
        assert notes == []
        return
    assert len(notes) == 1, notes
    assert re.match(NOTES[scenario.__name__], notes[0]), notes[0]


@pytest.mark.parametrize("way", WAYS, ids=name)
async def test_a_phase_cut_by_its_timeout_raises_phase_timeout(way: Way) -> None:
    """Without lifewatch the app would bound the step itself (``fail_after``)."""
    bare = await run(through(way, slow_database), None)
    watched = await run(through(way, slow_database), new_watch())
    assert type(bare.error) is TimeoutError
    assert isinstance(watched.error, PhaseTimeout), repr(watched.error)
    assert isinstance(watched.error, TimeoutError)
    assert watched.error.phase == "database"
    if way is composed:
        documented_difference(bare)
    assert {**watched.seen(), "error": None} == {**bare.seen(), "error": None}


@pytest.mark.parametrize("way", WAYS, ids=name)
@pytest.mark.parametrize("watched", [False, True], ids=["bare", "lifewatch"])
async def test_state_passes_through_unchanged(way: Way, watched: bool) -> None:
    outcome = await run(through(way, plain), new_watch() if watched else None)
    assert outcome.sent == [STARTED, STOPPED]
    assert outcome.state["db"] is DB


@pytest.mark.parametrize("watched", [False, True], ids=["bare", "lifewatch"])
async def test_composition_enters_in_order_and_exits_in_reverse(watched: bool) -> None:
    outcome = await run(through(composed, plain), new_watch() if watched else None)
    assert outcome.trace.effects == ["n:enter", "db:enter", "db:exit", "n:exit"]
    assert outcome.state == {"n": 1, "shared": "n", "db": DB}  # the first key wins
    assert outcome.error is None


# -- a crash before the first receive() ------------------------------------------


class CrashOnLifespan:
    """A pure-ASGI user middleware that breaks on the lifespan scope, before receive()."""

    def __init__(self, app: ASGIApp, trace: Trace) -> None:
        self.app = app
        self.trace = trace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.trace.fail(KeyError("headers"))  # it reads scope["headers"]
        await self.app(scope, receive, send)


def crashing_app(trace: Trace) -> Starlette:
    return Starlette(
        lifespan=plain(trace, None), middleware=[Middleware(CrashOnLifespan, trace=trace)]
    )


def crash_instrumented(trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    app = crashing_app(trace)
    return app if watch is None else watch.instrument(app)


def crash_plain_middleware(trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    app = crashing_app(trace)
    return app if watch is None else LifewatchMiddleware(app, watch=watch)


def crash_strict_middleware(trace: Trace, watch: Lifewatch | None) -> ASGIApp:
    app = crashing_app(trace)
    return app if watch is None else LifewatchMiddleware(app, watch=watch, strict=True)


@pytest.mark.parametrize("build", [crash_instrumented, crash_strict_middleware], ids=name)
async def test_a_crash_before_the_first_receive_reaches_the_server(build: Build) -> None:
    bare = await run(build, None)
    assert bare.sent == [] and type(bare.error) is KeyError  # what the server sees bare
    assert bare.error is bare.trace.raised
    watch = new_watch()
    watched = await run(build, watch)
    assert watched.seen() == bare.seen()
    assert watched.error is watched.trace.raised
    assert watch.state is State.FAILED


async def test_the_plain_middleware_answers_for_a_crashing_app_and_logs_why() -> None:
    """Non-strict (the default): taken for an app without lifespan, but not silently."""
    watch = new_watch()
    with capture_logs() as logs:
        watched = await run(crash_plain_middleware, watch)
    assert watched.sent == [STARTED, STOPPED]
    assert watched.error is None
    crash = watched.trace.raised
    assert isinstance(crash, KeyError)

    # Its traceback, as text lifewatch rendered (and scrubbed).
    assert any(str(event.get("exception", "")).endswith(f"KeyError: {crash}") for event in logs), (
        logs
    )


# -- FastAPI's own test, instrumented ---------------------------------------------


@pytest.mark.parametrize("watched", [False, True], ids=["bare", "lifewatch"])
def test_application_lifespan_errors_still_propagate(watched: bool) -> None:
    """FastAPI's upstream test: a lifespan error propagates out of ``TestClient(app)``."""
    trace = Trace()
    app = FastAPI(lifespan=failing("startup", None)(trace, None))
    if watched:
        new_watch().instrument(app)
    with pytest.raises(DatabaseDown) as info, TestClient(app):
        pass
    assert info.value is trace.raised
