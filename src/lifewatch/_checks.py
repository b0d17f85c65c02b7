"""Health checks: the definition users register, and the runner that runs it.

A check is a callable (async, or sync run in a daemon thread of its own) that
raises or returns ``False`` when what it checks is down. ``HealthCheck`` is
what was registered; ``CheckRunner`` runs it: one run at a time (concurrent
probes share the run in flight, so a burst of probes costs the dependency one
query), each run a plain task bounded by the check's timeout, and the verdict
handed to the lifecycle as an event (metrics and logs come from there).

What a check does cannot stretch a probe: a waiter gives up on a run
``ABANDON_GRACE`` seconds after its timeout (a check that swallows its
cancellation keeps running, abandoned: counted and logged once, and the next
probes fail at once instead of stacking more runs behind it); an exception of
any kind (``SystemExit`` too) is a failed check; a run that outlived its
timeout (it ignored the cancel, or blocked the event loop past its deadline)
is a ``timeout``, never a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ._http import iso_utc
from ._records import Notice

Probe = Literal["liveness", "readiness", "startup"]
"""Which probe endpoint a check answers on: ``/livez``, ``/readyz``, ``/startupz``."""

PROBES: tuple[Probe, ...] = ("liveness", "readiness", "startup")

CheckReason = Literal["error", "timeout", "false", "invalid"]
"""Why a check run failed; the ``reason`` label of ``lifespan_check_failures_total``."""

RESERVED = "lifespan"
"""The name of the lifecycle entry in ``/readyz`` and ``/startupz``."""

ABANDON_GRACE = 0.1
"""Seconds past its timeout a probe waits for a run before it abandons it."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


def validate_check_name(name: object) -> str:
    """A check name is a path segment and a label value: keep it plain."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"check name must be 1-100 characters of letters, digits, '_', '.', ':' or '-', "
            f"starting with a letter or digit (it becomes the path /readyz/<name>); got {name!r}"
        )
    if name == RESERVED:
        raise ValueError(
            f"check name {name!r} is reserved for the lifecycle entry of /readyz; pick another"
        )
    return name


def validate_probes(probes: object) -> frozenset[Probe]:
    if isinstance(probes, str) or not isinstance(probes, Iterable):
        raise TypeError(
            f"probes must be a tuple of probe names, e.g. probes=('readiness',); got {probes!r}"
        )
    chosen = tuple(probes)
    bad = [p for p in chosen if p not in PROBES]
    if bad or not chosen:
        raise ValueError(
            f"probes={probes!r} is not valid; each probe must be one of "
            f"{', '.join(PROBES)}, and at least one is needed"
        )
    return frozenset(chosen)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One finished run of a check: frozen, equal to another with the same values."""

    ok: bool
    duration: float
    """Seconds the run took."""
    finished_at: float
    """Wall clock (``time.time()``) at the end of the run."""
    monotonic: float
    """``time.monotonic()`` at the end of the run: how old the result is."""
    reason: CheckReason | None = None
    detail: str | None = None
    """What went wrong, e.g. the exception text: may hold secrets, so only
    logged, and shown on the endpoints only with ``expose_details=True``."""

    @property
    def time(self) -> str:
        """ISO 8601 end time (UTC), the IETF draft's ``time``."""
        return iso_utc(self.finished_at)


def _passed(duration: float) -> CheckResult:
    return CheckResult(True, duration, time.time(), time.monotonic())


def _failed(duration: float, reason: CheckReason, detail: str) -> CheckResult:
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
        func = self.func
        call = getattr(func, "__call__", None)  # noqa: B004 - an instance with async __call__
        return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(call)


class _RunTask(asyncio.Task[CheckResult]):
    """A run's task, which knows whether it was cancelled, and whether by its timeout.

    A check may raise ``CancelledError`` itself: a failed check. The same error
    from a cancel of its task (the loop going away) is passed on. Python 3.11
    tells them apart with ``Task.cancelling``, 3.10 cannot; this works on both.
    """

    cancel_requested = False
    timed_out = False
    timer: asyncio.TimerHandle | None = None
    """Calls ``expire`` at the run's timeout; set once the run waits."""

    def cancel(self, msg: Any | None = None) -> bool:
        self.cancel_requested = True
        return super().cancel(msg)

    def expire(self) -> None:
        """The run's timeout is up: cancel it, once (a check that swallows the
        cancel is not sent another; its waiters abandon it instead)."""
        if not self.done():
            self.timed_out = True
            self.cancel()


if sys.version_info >= (3, 12):
    _eager_task = asyncio.create_eager_task_factory(_RunTask)

    def _start_task(loop: asyncio.AbstractEventLoop, coro: Any, name: str) -> _RunTask:
        """The run's task, started eagerly: a check that answers without waiting
        (a flag, a pool's state) is done before this returns, with no timer and
        no trip through the event loop."""
        task = _eager_task(loop, coro, name=name)
        assert isinstance(task, _RunTask)
        return task

else:

    def _start_task(loop: asyncio.AbstractEventLoop, coro: Any, name: str) -> _RunTask:
        return _RunTask(coro, loop=loop, name=name)


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
        """The last result."""
        self.refresher: asyncio.Task[None] | None = None
        """The background task refreshing an ``interval`` check, while serving."""
        self._on_result = on_result
        self._notify = notify
        self._is_async = check.is_async
        self._task: _RunTask | None = None
        """The run in flight, which new waiters join."""
        self._started = 0.0
        """Loop time at which the run in flight started."""
        self._deadline = 0.0
        """Loop time at which waiters give up on the run in flight."""
        self._abandoned: tuple[asyncio.Task[CheckResult], CheckResult] | None = None
        """A run its waiters gave up on, still going, and what they were told."""
        self._thread_busy = False
        """A sync check's thread has not returned yet: set by the loop before the
        thread starts, cleared by that thread, so there is never a second one."""

    def cached(self) -> CheckResult | None:
        """The last result if probes may use it as is, without a run.

        True for an ``interval`` check while its refresher runs; when nothing
        refreshes it (no lifespan ran), a result stays good for one interval.
        """
        result, interval = self.result, self.check.interval
        if result is None or interval is None:
            return None
        if self.refresher is not None or time.monotonic() - result.monotonic < interval:
            return result
        return None

    def start(self) -> asyncio.Task[CheckResult]:
        """The run in flight, started if there is none."""
        if self._task is not None:
            return self._task
        loop = asyncio.get_running_loop()
        self._started = started = loop.time()
        self._deadline = started + self.check.timeout + ABANDON_GRACE
        task = _start_task(loop, self._run(), f"lifewatch-check:{self.check.name}")
        if not task.done():  # it waits: bound it, and let new waiters join it
            task.timer = loop.call_at(started + self.check.timeout, task.expire)
            self._task = task
        return task

    @property
    def deadline(self) -> float:
        """Loop time at which waiters abandon the run in flight."""
        return self._deadline

    async def run(self) -> CheckResult:
        """Join (or start) a run and wait for its result, bounded; never raises."""
        task = self.start()
        # asyncio.wait never cancels the run: a client that goes away leaves
        # it to the other waiters.
        timeout = max(0.0, self._deadline - asyncio.get_running_loop().time())
        await asyncio.wait((task,), timeout=timeout)
        return self.outcome(task)

    def outcome(self, task: asyncio.Task[CheckResult]) -> CheckResult:
        """The result of a run its waiters stopped waiting for: abandoned if still going."""
        if task.cancelled():  # cancelled from outside (the loop is going away), not by us
            return _failed(0.0, "timeout", "cancelled")
        if task.done():
            return task.result()  # runs never raise
        if self._abandoned is not None and self._abandoned[0] is task:
            return self._abandoned[1]
        return self._abandon(task)

    def _abandon(self, task: asyncio.Task[CheckResult]) -> CheckResult:
        """Past its timeout and the grace: the check ignored its cancellation."""
        timeout = self.check.timeout
        started = self._deadline - timeout - ABANDON_GRACE
        result = _failed(
            asyncio.get_running_loop().time() - started,
            "timeout",
            f"timed out after {timeout:g}s and ignored its cancellation (abandoned, still running)",
        )
        self._abandoned = (task, result)
        if self._task is task:
            self._task = None
        task.add_done_callback(self._abandoned_run_ended)
        self._record(result)
        self._notify(
            Notice(
                "lifespan.check.abandoned",
                "warning",
                {
                    "check": self.check.name,
                    "timeout_s": timeout,
                    "grace_s": ABANDON_GRACE,
                    "detail": "the check swallowed its cancellation: its run goes on "
                    "unwatched; probes fail at once until it returns",
                },
            )
        )
        return result

    def _abandoned_run_ended(self, task: asyncio.Task[CheckResult]) -> None:
        if self._abandoned is not None and self._abandoned[0] is task:
            self._abandoned = None
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" noise

    async def _run(self) -> CheckResult:
        """One run, in its own ``_RunTask``: bounded, judged, recorded.

        Never raises but on a cancel from outside, which it passes on.
        """
        task = asyncio.current_task()
        assert isinstance(task, _RunTask)
        try:
            result = await self._bounded(task)
        finally:
            if task.timer is not None:
                task.timer.cancel()
            if self._task is task:
                self._task = None
        if self._abandoned is not None and self._abandoned[0] is task:
            return result  # its waiters were answered, and it was counted then
        return self._record(result)

    async def _bounded(self, task: _RunTask) -> CheckResult:
        """Call the check under its timeout and judge what came back."""
        if self._abandoned is not None or self._thread_busy:
            # A hung run cannot be stopped: never pile up runs (or threads)
            # behind it; report it as the timeout it is.
            where = "(it ignored its cancellation)" if self._is_async else "in its thread"
            return _failed(0.0, "timeout", f"previous run still running {where}")
        loop = asyncio.get_running_loop()
        started = self._started
        try:
            value = await (self.check.func() if self._is_async else self._in_thread())
        except asyncio.CancelledError:
            if task.timed_out:
                return self._timed_out(loop.time() - started)
            if task.cancel_requested:
                raise  # cancelled from outside: the loop is going away
            return _failed(loop.time() - started, "error", "CancelledError raised by the check")
        except (TimeoutError, asyncio.TimeoutError):  # the check's own (a driver's): a timeout
            return self._timed_out(loop.time() - started)
        except BaseException as exc:
            # Any kind, SystemExit and KeyboardInterrupt too: a check that
            # raises them has failed; it does not get to stop the server.
            return _failed(loop.time() - started, "error", f"{type(exc).__name__}: {exc}")
        elapsed = loop.time() - started
        if task.timed_out or elapsed > self.check.timeout:
            return self._late(elapsed, blocked=self._is_async and not task.timed_out)
        return self._judge(value, elapsed)

    def _timed_out(self, elapsed: float) -> CheckResult:
        return _failed(elapsed, "timeout", f"timed out after {self.check.timeout:g}s")

    def _late(self, elapsed: float, *, blocked: bool) -> CheckResult:
        """A run that returned past its timeout: a timeout, whatever it returned."""
        timeout = self.check.timeout
        if not blocked:
            return _failed(
                elapsed, "timeout", f"timed out after {timeout:g}s (ignored its cancellation)"
            )
        # The deadline passed and the cancel never got its turn: the check
        # held the event loop (no await) past its timeout.
        self._notify(
            Notice(
                "lifespan.check.blocked",
                "warning",
                {
                    "check": self.check.name,
                    "blocked_s": round(elapsed, 6),
                    "timeout_s": timeout,
                    "detail": "an async check ran without awaiting past its timeout, "
                    "stalling every request; run blocking code in a thread "
                    "(a sync def check does)",
                },
            )
        )
        return _failed(elapsed, "timeout", f"timed out after {timeout:g}s (blocked the event loop)")

    @staticmethod
    def _judge(value: Any, elapsed: float) -> CheckResult:
        """What a check that returned in time returned: pass, or why not."""
        if value is None or value is True:
            return _passed(elapsed)
        if value is False:
            return _failed(elapsed, "false", "returned False")
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            return _failed(
                elapsed, "invalid", "returned an awaitable from a sync function; make it async def"
            )
        return _failed(
            elapsed,
            "invalid",
            f"returned {type(value).__name__}; a check returns None or a bool, or raises",
        )

    def _record(self, result: CheckResult) -> CheckResult:
        previous, self.result = self.result, result
        self._on_result(self.check, result, previous)
        return result

    async def _in_thread(self) -> Any:
        """Call the sync check in a daemon thread of its own; its value, or what it raised.

        Marked busy and started in one step, with no await in between: no probe
        can slip in before the thread owns the flag, and a cancellation cannot
        leave it set for a thread that never started. Only the thread clears
        it, once the check has returned. The timeout abandons, never stops, a
        hung thread; being a daemon, it never holds up process exit.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()
        thread = threading.Thread(
            target=self._work,
            args=(loop, future, contextvars.copy_context()),
            name=f"lifewatch-check:{self.check.name}",
            daemon=True,
        )
        self._thread_busy = True
        try:
            thread.start()
        except BaseException:
            self._thread_busy = False
            raise
        value, error = await future
        if error is not None:
            raise error
        return value

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[tuple[Any, BaseException | None]],
        context: contextvars.Context,
    ) -> None:
        """The thread's body: call the check, free the check, report to the loop."""
        try:
            outcome: tuple[Any, BaseException | None] = (context.run(self.check.func), None)
        except BaseException as exc:
            outcome = (None, exc)
        finally:
            self._thread_busy = False
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
            loop.call_soon_threadsafe(_settle, future, outcome)

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
