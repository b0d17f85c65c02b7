"""Health checks: the definition users register, and the runner that runs it.

A check (async, or sync in a daemon thread of its own) raises or returns
``False`` when down. One run at a time, shared by concurrent probes, each a
task cancelled at the check's timeout; the verdict goes to the lifecycle as an
event. Waiters abandon a run ``ABANDON_GRACE`` past its timeout (a check that
swallows its cancellation): a check never stretches a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._http import iso_utc
from ._records import Notice
from ._types import Probe

CheckReason = Literal["error", "timeout", "false", "invalid"]
"""Why a check run failed; the ``reason`` label of ``lifespan_check_failures_total``."""

ABANDON_GRACE = 0.1
"""Seconds past its timeout a probe waits for a run before it abandons it."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One finished run of a check: frozen, equal to another with the same values."""

    ok: bool
    duration: float  # seconds the run took
    finished_at: float  # ``time.time()`` at the end of the run
    monotonic: float  # ``time.monotonic()`` at the end: how old the result is
    reason: CheckReason | None = None
    detail: str | None = None
    """What went wrong, e.g. the exception text: may hold secrets, so only
    logged, and shown on the endpoints only with ``expose_details=True``."""

    @property
    def time(self) -> str:
        """ISO 8601 end time (UTC), the IETF draft's ``time``."""
        return iso_utc(self.finished_at)


def failed(duration: float, reason: CheckReason, detail: str) -> CheckResult:
    return CheckResult(False, duration, time.time(), time.monotonic(), reason, detail)


@dataclass(frozen=True, eq=False)
class HealthCheck:
    """A registered check, as ``watch.add_check`` returns it and ``watch.checks`` lists it."""

    name: str
    func: Callable[[], Any]
    timeout: float
    probes: frozenset[Probe]
    critical: bool
    interval: float | None
    """Run in the background every ``interval`` seconds; probes read the last result."""

    def __repr__(self) -> str:
        return f"HealthCheck({self.name!r}, probes={sorted(self.probes)}, critical={self.critical})"

    @property
    def is_async(self) -> bool:
        call = getattr(self.func, "__call__", None)  # noqa: B004 - an instance with async __call__
        return inspect.iscoroutinefunction(self.func) or inspect.iscoroutinefunction(call)


class _RunTask(asyncio.Task[CheckResult]):
    """A run's task, which knows whether it was cancelled, and whether by its timeout:
    a check raising ``CancelledError`` itself has failed, a cancel from outside
    is passed on (``Task.cancelling`` tells them apart from 3.11 on only)."""

    cancel_requested = False
    timed_out = False
    abandoned: CheckResult | None = None  # what its waiters were told when they gave up

    def cancel(self, msg: Any | None = None) -> bool:
        self.cancel_requested = True
        return super().cancel(msg)


def _expire(runs: list[_RunTask]) -> None:
    """The timeout of these runs is up: cancel each once (one that swallows the
    cancel is not sent another; its waiters abandon it instead)."""
    for run in runs:
        if not run.done() and not run.timed_out:
            run.timed_out = True
            run.cancel()


if sys.version_info >= (3, 12):
    _eager_task = asyncio.create_eager_task_factory(_RunTask)

    def _start_task(coro: Any, name: str) -> _RunTask:
        """Started eagerly: a check that answers without waiting is done on return."""
        task = _eager_task(asyncio.get_running_loop(), coro, name=name)
        assert isinstance(task, _RunTask)
        return task

else:

    def _start_task(coro: Any, name: str) -> _RunTask:
        return _RunTask(coro, loop=asyncio.get_running_loop(), name=name)


async def wait_for_runs(runners: Sequence[CheckRunner]) -> list[CheckResult]:
    """Each check's result, from its run in flight or one started now; never raises.

    The waiter cancels each run at its timeout, and abandons it at its deadline
    (timeout plus grace). ``asyncio.wait``, not ``gather``: a probe that goes
    away cancels no run other probes share, and leaves their timeouts to timers.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    tasks: list[_RunTask] = []
    expiring: defaultdict[float, list[_RunTask]] = defaultdict(list)
    for runner in runners:
        task = runner.task
        if task is None or task.done():
            task = runner.start(now)
        if not task.done():  # it waits: bound it, and let new waiters join it
            runner.task = task
            expiring[runner.deadline - ABANDON_GRACE].append(task)
        tasks.append(task)
    try:
        for when in sorted(expiring):
            waiting = [task for task in tasks if not task.done()]
            if not waiting:
                break
            await asyncio.wait(waiting, timeout=max(0.0, when - loop.time()))
            _expire(expiring.pop(when))
        waiting = [task for task in tasks if not task.done()]
        if waiting:
            deadline = max(runner.deadline for runner in runners)
            await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()))
    except asyncio.CancelledError:
        for when, runs in expiring.items():
            loop.call_at(when, _expire, runs)
        raise
    return [runner.outcome(task) for runner, task in zip(runners, tasks, strict=True)]


class CheckRunner:
    """Runs one check: one run at a time, bounded, judged, reported as an event."""

    def __init__(
        self,
        check: HealthCheck,
        on_result: Callable[[HealthCheck, CheckResult, CheckResult | None], None],
        notify: Callable[[Notice], None],
    ) -> None:
        self.check = check
        self.result: CheckResult | None = None
        self.refresher: asyncio.Task[None] | None = None  # an interval check's, while serving
        self.task: _RunTask | None = None  # the run in flight, which new waiters join
        self.deadline = 0.0  # loop time at which waiters abandon it
        self._on_result = on_result
        self._notify = notify
        self._is_async = check.is_async
        self._name = f"lifewatch-check:{check.name}"  # its runs' tasks and threads
        self._started = 0.0
        self._abandoned: _RunTask | None = None  # a run its waiters gave up on, still going
        # Set before a sync check's thread starts, cleared by it: never two threads.
        self._thread_busy = False

    def cached(self) -> CheckResult | None:
        """The last result if probes may use it without a run: an ``interval``
        check's while it refreshes, or for one interval when nothing does."""
        result, interval = self.result, self.check.interval
        if result is None or interval is None:
            return None
        if self.refresher is not None or time.monotonic() - result.monotonic < interval:
            return result
        return None

    def start(self, now: float) -> _RunTask:
        """A new run, started at loop time ``now`` (``wait_for_runs`` bounds it)."""
        self._started = now
        self.deadline = now + self.check.timeout + ABANDON_GRACE
        return _start_task(self._run(), self._name)

    async def run(self) -> CheckResult:
        """Join (or start) a run and wait for its result, bounded; never raises."""
        (result,) = await wait_for_runs((self,))
        return result

    def outcome(self, task: _RunTask) -> CheckResult:
        """The result of a run its waiters stopped waiting for: abandoned if still going."""
        if task.cancelled():  # cancelled from outside (the loop is going away), not by us
            return failed(0.0, "timeout", "cancelled")
        if task.done():
            return task.result()  # runs never raise
        if task.abandoned is not None:
            return task.abandoned
        timeout = self.check.timeout
        result = failed(
            asyncio.get_running_loop().time() - self._started,
            "timeout",
            f"timed out after {timeout:g}s and ignored its cancellation (abandoned, still running)",
        )
        task.abandoned, self._abandoned = result, task
        if self.task is task:
            self.task = None
        self._record(result)
        detail = (
            "the check swallowed its cancellation: its run goes on unwatched; "
            "probes fail at once until it returns"
        )
        fields = {"check": self.check.name, "timeout_s": timeout, "grace_s": ABANDON_GRACE}
        self._notify(Notice("lifespan.check.abandoned", "warning", fields | {"detail": detail}))
        return result

    async def _run(self) -> CheckResult:
        """One run, in its own ``_RunTask``: never raises but on a cancel from outside."""
        task = asyncio.current_task()
        assert isinstance(task, _RunTask)
        loop = asyncio.get_running_loop()
        started = self._started
        abandoned = self._abandoned
        if (abandoned is not None and not abandoned.done()) or self._thread_busy:
            # A hung run cannot be stopped: never pile up runs (or threads) behind it.
            where = "(it ignored its cancellation)" if self._is_async else "in its thread"
            result = failed(0.0, "timeout", f"previous run still running {where}")
        else:
            try:
                value = await (self.check.func() if self._is_async else self._in_thread())
            except asyncio.CancelledError:
                if task.cancel_requested and not task.timed_out:
                    raise  # cancelled from outside: the loop is going away
                why = (
                    f"timed out after {self.check.timeout:g}s"
                    if task.timed_out
                    else "CancelledError raised by the check"
                )
                result = failed(
                    loop.time() - started, "timeout" if task.timed_out else "error", why
                )
            except (TimeoutError, asyncio.TimeoutError):  # the check's own (a driver's)
                why = f"timed out after {self.check.timeout:g}s"
                result = failed(loop.time() - started, "timeout", why)
            except BaseException as exc:
                # SystemExit and KeyboardInterrupt too: a check does not get to stop the server.
                result = failed(loop.time() - started, "error", f"{type(exc).__name__}: {exc}")
            else:
                result = self._verdict(value, loop.time() - started, task.timed_out)
        if task.abandoned is not None:
            return result  # its waiters were answered, and it was counted then
        self._record(result)
        return result

    def _verdict(self, value: Any, elapsed: float, timed_out: bool) -> CheckResult:
        """What a check that returned returned; past its timeout, a timeout whatever it was."""
        timeout = self.check.timeout
        if elapsed <= timeout and not timed_out:
            if value is None or value is True:
                return CheckResult(True, elapsed, time.time(), time.monotonic())
            if value is False:
                return failed(elapsed, "false", "returned False")
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                why = "returned an awaitable from a sync function; make it async def"
                return failed(elapsed, "invalid", why)
            why = f"returned {type(value).__name__}; a check returns None or a bool, or raises"
            return failed(elapsed, "invalid", why)
        if timed_out or not self._is_async:
            return failed(
                elapsed, "timeout", f"timed out after {timeout:g}s (ignored its cancellation)"
            )
        # Past its timeout, and the cancel never got its turn: it held the loop.
        detail = (
            "an async check ran without awaiting past its timeout, stalling every "
            "request; run blocking code in a thread (a sync def check does)"
        )
        fields = {"check": self.check.name, "blocked_s": round(elapsed, 6), "timeout_s": timeout}
        self._notify(Notice("lifespan.check.blocked", "warning", fields | {"detail": detail}))
        return failed(elapsed, "timeout", f"timed out after {timeout:g}s (blocked the event loop)")

    def _record(self, result: CheckResult) -> None:
        previous, self.result = self.result, result
        self._on_result(self.check, result, previous)

    async def _in_thread(self) -> Any:
        """Call the sync check in a daemon thread of its own (a hung one never
        holds up exit), marked busy with no await before it starts."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()
        context = contextvars.copy_context()

        def work() -> None:
            try:
                outcome: tuple[Any, BaseException | None] = (context.run(self.check.func), None)
            except BaseException as exc:
                outcome = (None, exc)
            finally:
                self._thread_busy = False
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
                loop.call_soon_threadsafe(_settle, future, outcome)

        self._thread_busy = True
        try:
            threading.Thread(target=work, name=self._name, daemon=True).start()
        except BaseException:
            self._thread_busy = False
            raise
        value, error = await future
        if error is not None:
            raise error
        return value

    def start_refreshing(self) -> None:
        """An ``interval`` check: run it in the background from now on."""
        if self.check.interval is None or self.refresher is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # added from outside the loop: probes run it, cached one interval
        name = f"lifewatch-refresh:{self.check.name}"
        self.refresher = loop.create_task(self._refresh_forever(self.check.interval), name=name)

    def stop_refreshing(self) -> None:
        task, self.refresher = self.refresher, None
        if task is not None:
            task.cancel()

    async def _refresh_forever(self, interval: float) -> None:
        while True:
            await self.run()
            await asyncio.sleep(interval)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():  # not if the run timed out (cancelled) meanwhile
        future.set_result(outcome)
