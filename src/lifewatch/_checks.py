"""Health checks: one definition per check, its last result, its single run.

A check is a callable (async, or sync run in a daemon thread of its own) that
raises or returns ``False`` when what it checks is down. Each run is bounded by
the check's own timeout; concurrent callers share the run in flight, so a burst
of probes costs the dependency one query. A run that waits is a task of its
own, shielded from the probe requests that wait on it: a client that goes away
never cancels a run another probe is waiting for, and the timeout ends every
run, so no task outlives it. A run that answers at once (``Starter``) is over
before the probe goes on: no task of its own, no timer, no wait.

What a check does cannot stretch a probe: a waiter gives up on a run
``ABANDON_GRACE`` seconds after its timeout (a check that swallows its
cancellation keeps running, abandoned: counted and logged once, and the next
probes fail at once instead of stacking more runs behind it); an exception of
any kind (``SystemExit`` too) is a failed check; a run that outlived its
timeout (it ignored the cancel, or blocked the event loop past its deadline)
is a ``timeout``, never a pass. The timeout cancels a run once (asyncio's
own timer, not anyio's ``fail_after``, which re-delivers the cancel on every
turn of the loop, so a check that swallows it would spin).
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
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any, Literal

from ._http import iso_utc
from ._records import Frozen, Notice

Probe = Literal["liveness", "readiness", "startup"]
"""Which probe endpoint a check answers on: ``/livez``, ``/readyz``, ``/startupz``."""

PROBES: tuple[Probe, ...] = ("liveness", "readiness", "startup")

CheckReason = Literal["error", "timeout", "false", "invalid"]
"""Why a check run failed; the ``reason`` label of ``lifespan_check_failures_total``."""

RESERVED = "lifespan"
"""The name of the lifecycle entry in ``/readyz`` and ``/startupz``."""

ABANDON_GRACE = 0.1
"""Seconds past its timeout a probe waits for a run before it abandons it."""

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"
"""Compiled when the first check is added (re caches it), not by every import."""


def validate_check_name(name: object) -> str:
    """A check name is a path segment and a label value: keep it plain."""
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
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


def _is_async(func: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - an instance with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if not future.done():  # not if the run timed out (cancelled) meanwhile
        future.set_result(outcome)


def start_all(
    checks: Iterable[HealthCheck], starter: Starter | None = None
) -> tuple[list[CheckResult | asyncio.Task[CheckResult]], list[asyncio.TimerHandle]]:
    """Start (or join) the runs of several checks at once: each one's result
    if it finished at once, else the task it goes on in (``Starter``, which
    serves the running loop).

    One timer per distinct timeout bounds the runs that wait, not one per
    check: with a hundred checks on every probe, timers in asyncio's heap are
    a cost of their own. The caller cancels the timers once every run is
    done, and leaves them when it goes away first: they still bound the runs.
    """
    # The starter's loop, if any: each get_running_loop() costs a getpid() (a
    # system call), and the caller made sure of the loop already.
    if starter is not None:
        loop = starter.loop
        starter.resume()
    else:
        loop = asyncio.get_running_loop()
    runs: list[CheckResult | asyncio.Task[CheckResult]] = []
    fresh: dict[float, list[tuple[HealthCheck, asyncio.Task[CheckResult]]]] = {}
    for check in checks:
        task = check._inflight
        if task is None:
            if starter is None:
                task = check.start(timed=False)
            else:
                run = starter.start(check)
                if not isinstance(run, asyncio.Task):
                    runs.append(run)  # finished at once: no timer, no wait
                    continue
                task = run
            fresh.setdefault(check.timeout, []).append((check, task))
        runs.append(task)
    if not fresh:  # every run finished at once (no comprehension: it is a call of its own)
        return runs, []
    timers = [loop.call_later(timeout, _expire_all, group) for timeout, group in fresh.items()]
    return runs, timers


def _expire_all(group: list[tuple[HealthCheck, asyncio.Task[CheckResult]]]) -> None:
    for check, task in group:
        check.expire(task)


_HOSTED = sys.version_info >= (3, 11)
"""``asyncio.Task(..., context=...)``, which a run started by hand in a task needs."""

_IDLE = "lifewatch-check"
"""The name of a host task no run went on in."""

_NOTHING: Any = object()


class _Host(Coroutine[Any, Any, Any]):
    """What a host task drives: a run that waits, adopted after its first step.

    The first step of the run already happened by hand (``Starter``), so the
    task's own first step hands over what that step yielded (the future the
    run waits on) and every later one goes to the run. A host whose runs all
    finished at once adopts none, and its task ends at its first step.
    """

    __slots__ = ("_coro", "_waits_on")

    def __init__(self) -> None:
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._waits_on: Any = _NOTHING

    def adopt(self, coro: Coroutine[Any, Any, Any], waits_on: Any) -> None:
        self._coro = coro
        self._waits_on = waits_on

    def send(self, value: Any) -> Any:
        coro = self._coro
        if coro is None:
            raise StopIteration
        waits_on = self._waits_on
        if waits_on is not _NOTHING:
            self._waits_on = _NOTHING
            return waits_on
        return coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        exc = typ if val is None else val
        coro = self._coro
        if coro is None:
            raise exc
        waits_on = self._waits_on
        if waits_on is not _NOTHING:
            # Cancelled before the task took over what the run waits on:
            # cancel that too, as Task.cancel does with the future it waits on.
            self._waits_on = _NOTHING
            cancel = getattr(waits_on, "cancel", None)
            if cancel is not None:
                cancel()
        return coro.throw(exc)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("a host of check runs is driven by its task, not awaited")


class Starter:
    """Starts runs the way an eager task does, one task for all that finish at once.

    A run's first step happens here, by hand, with a task current and in that
    task's context, as asyncio's eager start (3.12+) does it: a check's own
    ``asyncio.timeout`` or anyio cancel scope holds the current task, so the
    task a run starts in must be the one it goes on in. A run that waits
    goes on in that task (it adopts it) and the next run gets a new one. A
    run that finishes at once leaves the task to the next run, even of the
    next probe while the task has not run yet, unless it changed the task's
    context (a context variable set) or cancelled the task; nor is it kept
    for a probe whose context differs: every run starts in a fresh copy of
    its probe's context, as in a task of its own. A check that answers at
    once (most do: a flag, a pool's state) then costs no task, no timer and
    no trip through the event loop; the probe's task is current again
    between runs. One per ``Health`` and event loop (``for_loop``).
    """

    __slots__ = ("_caller", "_context", "_host", "_pristine", "_task", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._caller: asyncio.Task[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        """The task the next run starts in; None: a new one."""
        self._host = _Host()
        self._context = self._pristine = contextvars.Context()

    @staticmethod
    def for_loop(loop: asyncio.AbstractEventLoop) -> Starter | None:
        """A starter for ``loop``; None where runs cannot start by hand
        (Python 3.10: no ``Task(context=...)``), and each gets a task."""
        return Starter(loop) if _HOSTED else None

    def resume(self) -> None:
        """Before the runs of one probe (on ``loop``): whose task to come back
        to, and whether the task left from the last probe may still serve."""
        self._caller = asyncio.current_task(self.loop)
        task = self._task
        if task is not None and (
            task.done()
            or task.cancelling()  # type: ignore[attr-defined,unused-ignore] # Python 3.11+
            or contextvars.copy_context() != self._pristine
        ):
            self._task = None

    def start(self, check: HealthCheck) -> CheckResult | asyncio.Task[CheckResult]:
        loop = self.loop
        task = self._task
        if task is None:
            self._host = _Host()
            self._context = contextvars.copy_context()
            self._pristine = self._context.copy()
            task = self._task = asyncio.Task(
                self._host,
                loop=loop,
                name=_IDLE,
                context=self._context,  # type: ignore[call-arg,unused-ignore] # Python 3.11+
            )
        check._started = time.perf_counter()  # the deadline only if it waits (below)
        coro = check._run(False)
        caller = self._caller
        if caller is not None:
            _leave_task(loop, caller)
        _enter_task(loop, task)
        try:
            waits_on = self._context.run(coro.send, None)
        except StopIteration as stop:
            result: CheckResult = stop.value
        except asyncio.CancelledError:
            # Raised out of a run only on a cancel of its task: the check
            # cancelled the task it runs in, and then raised.
            self._task = None
            return check._failed(check._started, "timeout", "cancelled")
        else:
            # It waits: the task is the run's own from now on, its waiters
            # bound from its start.
            self._host.adopt(coro, waits_on)
            task.set_name(check._task_name)
            elapsed = time.perf_counter() - check._started
            check._deadline = loop.time() - elapsed + check.timeout + ABANDON_GRACE
            check._inflight = task
            self._task = None
            return task
        finally:
            _leave_task(loop, task)
            if caller is not None:
                _enter_task(loop, caller)
        if task.cancelling():  # type: ignore[attr-defined,unused-ignore] # Python 3.11+
            # The check cancelled its task and returned: a run in a task of
            # its own would have ended cancelled, and answered as such.
            self._task = None
            return check._failed(check._started, "timeout", "cancelled")
        if self._context != self._pristine:
            self._task = None
        return result


class CheckResult(Frozen):
    """One finished run of a check: frozen, equal to another with the same values.

    A plain class, not a dataclass: ``@dataclass`` runs ``exec`` at import.
    """

    __slots__ = ("detail", "duration", "finished_at", "monotonic", "ok", "reason")

    ok: bool
    duration: float
    """Seconds the run took."""
    finished_at: float
    """Wall clock (``time.time()``) at the end of the run."""
    monotonic: float
    """``time.monotonic()`` at the end of the run: how old the result is."""
    reason: CheckReason | None
    detail: str | None
    """What went wrong, e.g. the exception text: may hold secrets, so only
    logged, and shown on the endpoints only with ``expose_details=True``."""

    def __init__(
        self,
        ok: bool,
        duration: float,
        finished_at: float,
        monotonic: float,
        reason: CheckReason | None = None,
        detail: str | None = None,
    ) -> None:
        # Each slot set directly: the generated __init__ of a frozen class goes
        # through object.__setattr__ per field, twice the cost, on every run of
        # every uncached check.
        _SET_OK(self, ok)
        _SET_DURATION(self, duration)
        _SET_FINISHED_AT(self, finished_at)
        _SET_MONOTONIC(self, monotonic)
        _SET_REASON(self, reason)
        _SET_DETAIL(self, detail)

    def _values(self) -> tuple[Any, ...]:
        return (self.ok, self.duration, self.finished_at, self.monotonic, self.reason, self.detail)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CheckResult) and other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"CheckResult(ok={self.ok!r}, duration={self.duration!r}, "
            f"finished_at={self.finished_at!r}, monotonic={self.monotonic!r}, "
            f"reason={self.reason!r}, detail={self.detail!r})"
        )

    @property
    def time(self) -> str:
        """ISO 8601 end time (UTC), the IETF draft's ``time``."""
        return iso_utc(self.finished_at)


_SET_OK = CheckResult.__dict__["ok"].__set__
_SET_DURATION = CheckResult.__dict__["duration"].__set__
_SET_FINISHED_AT = CheckResult.__dict__["finished_at"].__set__
_SET_MONOTONIC = CheckResult.__dict__["monotonic"].__set__
_SET_REASON = CheckResult.__dict__["reason"].__set__
_SET_DETAIL = CheckResult.__dict__["detail"].__set__


class _RunTask(asyncio.Task[CheckResult]):
    """Python 3.10: a run's own task, which tells whether anyone cancelled it.

    A check may raise ``CancelledError`` itself, a failed check; the same
    error from a cancel of its task (the loop going away) is passed on. 3.11+
    tells them apart with ``Task.cancelling``; 3.10 has no such count.
    """

    _requested = False

    def cancel(self, msg: Any | None = None) -> bool:
        self._requested = True
        return super().cancel(msg)

    def cancel_requested(self) -> bool:
        return self._requested


class HealthCheck:
    """A registered check: its options, last result and the run in flight."""

    __slots__ = (
        "_busy_thread",
        "_deadline",
        "_inflight",
        "_notify",
        "_on_result",
        "_started",
        "_stuck",
        "_task_name",
        "_timed_out",
        "critical",
        "func",
        "interval",
        "is_async",
        "name",
        "probes",
        "refresher",
        "result",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        func: Callable[[], Any],
        *,
        timeout: float,
        probes: frozenset[Probe],
        critical: bool,
        interval: float | None,
        on_result: Callable[[HealthCheck, CheckResult, CheckResult | None], None],
        notify: Callable[[Notice], None] | None = None,
    ) -> None:
        self.name = name
        self.func = func
        self.timeout = timeout
        self.probes = probes
        self.critical = critical
        self.interval = interval
        self.is_async = _is_async(func)
        self.result: CheckResult | None = None
        self.refresher: asyncio.Task[None] | None = None
        """The background task refreshing an ``interval`` check, while serving."""
        self._inflight: asyncio.Task[CheckResult] | None = None
        self._busy_thread = False
        """A sync check's thread has not returned yet: set by the loop before the
        thread starts, cleared by that thread, so there is never a second one."""
        self._on_result = on_result
        self._task_name = f"lifewatch-check:{name}"
        self._timed_out = False
        """The run in flight was cancelled by its own timeout (not from outside)."""
        self._notify = notify
        self._started = 0.0
        """``perf_counter()`` when the run in flight started."""
        self._deadline = 0.0
        """Loop time at which waiters give up on the run in flight."""
        self._stuck: tuple[asyncio.Task[CheckResult], CheckResult] | None = None
        """An abandoned run still going, and the result its waiters were given."""

    def __repr__(self) -> str:
        return f"HealthCheck({self.name!r}, probes={sorted(self.probes)}, critical={self.critical})"

    def cached(self) -> CheckResult | None:
        """The last result if probes may use it as is, without a run.

        True for an ``interval`` check while its refresher runs; when nothing
        refreshes it (no lifespan ran), a result stays good for one interval.
        """
        result = self.result
        if result is None or self.interval is None:
            return None
        if self.refresher is not None:
            return result
        if time.monotonic() - result.monotonic < self.interval:
            return result
        return None

    def start(self, *, timed: bool = True) -> asyncio.Task[CheckResult]:
        """The run in flight, started if there is none (single-flight).

        ``timed=False``: the caller bounds the run with ``expire`` (``start_all``).
        """
        task = self._inflight
        if task is None:
            loop = self._starting()
            if _HOSTED:
                task = loop.create_task(self._run(timed), name=self._task_name)
            else:
                task = _RunTask(self._run(timed), loop=loop, name=self._task_name)
            self._inflight = task
        return task

    def _starting(self) -> asyncio.AbstractEventLoop:
        """Stamp a new run's start and the deadline its waiters keep."""
        loop = asyncio.get_running_loop()
        self._started = time.perf_counter()
        self._deadline = loop.time() + self.timeout + ABANDON_GRACE
        return loop

    @property
    def deadline(self) -> float:
        """Loop time at which waiters abandon the run in flight."""
        return self._deadline

    async def run(self) -> CheckResult:
        """Join (or start) a run and wait for its result, bounded; never raises."""
        task = self.start()
        if not task.done():
            # asyncio.wait never cancels the run: a client that goes away
            # leaves it to the other waiters.
            loop = asyncio.get_running_loop()
            await asyncio.wait((task,), timeout=max(0.0, self._deadline - loop.time()))
        return self.outcome(task)

    def outcome(self, task: asyncio.Task[CheckResult]) -> CheckResult:
        """The result of a run its waiters stopped waiting for: abandoned if still going."""
        if task.done():
            if task.cancelled():
                # The run was cancelled (the loop is going away), not us.
                return self._failed(self._started, "timeout", "cancelled")
            return task.result()  # runs never raise
        stuck = self._stuck
        if stuck is not None and stuck[0] is task:
            return stuck[1]
        # Past its timeout and the grace: the check ignored its cancellation.
        result = self._failed(
            self._started,
            "timeout",
            f"timed out after {self.timeout:g}s and ignored its cancellation "
            "(abandoned, still running)",
        )
        self._stuck = (task, result)
        if self._inflight is task:
            self._inflight = None
        task.add_done_callback(self._unstuck)
        self._record(result)
        if self._notify is not None:
            self._notify(
                Notice(
                    "lifespan.check.abandoned",
                    "warning",
                    {
                        "check": self.name,
                        "timeout_s": self.timeout,
                        "grace_s": ABANDON_GRACE,
                        "detail": "the check swallowed its cancellation: its run goes on "
                        "unwatched; probes fail at once until it returns",
                    },
                )
            )
        return result

    def _unstuck(self, task: asyncio.Task[CheckResult]) -> None:
        if self._stuck is not None and self._stuck[0] is task:
            self._stuck = None
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" noise

    async def _run(self, timed: bool = True) -> CheckResult:
        """One run: bounded, judged, recorded; never raises but on a cancel from outside.

        In a task of its own (``start``), or started by hand in one
        (``Starter``); ``timed=False``: the caller bounds it (``start_all``).
        One coroutine for all of it: on every run of every uncached check, a
        frame more is a cost of its own.
        """
        start = self._started
        try:
            if self._stuck is not None or (not self.is_async and self._busy_thread):
                # A hung run cannot be stopped: never pile up runs (or threads)
                # behind it; report it as the timeout it is.
                where = "in its thread" if not self.is_async else "(it ignored its cancellation)"
                result = self._failed(start, "timeout", f"previous run still running {where}")
            else:
                # The timeout, asyncio's own way and no more: a run is a task of
                # its own, so one timer cancels it. Checks run on asyncio only,
                # and anyio's ``fail_after`` costs a third of an uncached probe
                # (it detects the backend three times per check).
                self._timed_out = False
                timer = None
                if timed:
                    timer = asyncio.get_running_loop().call_at(
                        self._deadline - ABANDON_GRACE, self.expire, asyncio.current_task()
                    )
                try:
                    value = await (self.func() if self.is_async else self._threaded())
                except BaseException as exc:
                    result = self._caught(exc, start, asyncio.current_task())
                else:
                    # Late (its duration past its timeout: a check that held the
                    # loop that long is late though no timer could fire) is a
                    # timeout, whatever it returned.
                    elapsed = time.perf_counter() - start
                    if self._timed_out or elapsed > self.timeout:
                        if self._timed_out:
                            self._uncancel(asyncio.current_task())
                        result = self._late(start, blocked=self.is_async and not self._timed_out)
                    elif value is None or value is True:
                        result = CheckResult(True, elapsed, time.time(), time.monotonic())
                    else:
                        result = self._judge(start, value)
                finally:
                    if timer is not None:
                        timer.cancel()
        finally:
            inflight = self._inflight
            if inflight is not None and inflight is asyncio.current_task():
                self._inflight = None
        stuck = self._stuck
        if stuck is not None and stuck[0] is asyncio.current_task():
            return result  # abandoned: its waiters were answered, and it was counted then
        return self._record(result)

    def _record(self, result: CheckResult) -> CheckResult:
        previous, self.result = self.result, result
        self._on_result(self, result, previous)
        return result

    async def _threaded(self) -> Any:
        """The sync check's value, from its thread; what it raised, raised here."""
        value, error = await self._in_thread()
        if error is not None:
            raise error
        return value

    @staticmethod
    def _uncancel(task: asyncio.Task[Any] | None) -> None:
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+: as asyncio.timeout does
        if uncancel is not None:
            uncancel()  # ours, handled here: not a cancel from outside

    def _caught(
        self, exc: BaseException, start: float, task: asyncio.Task[Any] | None
    ) -> CheckResult:
        """What an exception out of a check means: a result, or raised on."""
        if isinstance(exc, asyncio.CancelledError):
            if task is None:  # the check cancelled itself, before any timer
                return self._failed(start, "timeout", "cancelled")
            if not self._timed_out:
                cancelling = getattr(task, "cancelling", None) or getattr(  # 3.11+
                    task,
                    "cancel_requested",
                    None,  # 3.10: our _RunTask
                )
                if cancelling is None or cancelling():
                    raise exc  # cancelled from outside: the loop is going away
                return self._failed(start, "error", "CancelledError raised by the check")
            self._uncancel(task)
            return self._failed(start, "timeout", f"timed out after {self.timeout:g}s")
        if isinstance(exc, TimeoutError):  # the check's own, e.g. a driver's: a timeout too
            return self._failed(start, "timeout", f"timed out after {self.timeout:g}s")
        # Any other kind, SystemExit and KeyboardInterrupt too: a check that
        # raises them has failed; it does not get to stop the server.
        return self._failed(start, "error", f"{type(exc).__name__}: {exc}")

    def _late(self, start: float, *, blocked: bool) -> CheckResult:
        """A run that returned past its deadline: a timeout, whatever it returned."""
        if not blocked:
            return self._failed(
                start, "timeout", f"timed out after {self.timeout:g}s (ignored its cancellation)"
            )
        # The deadline passed and the cancel never got its turn: the check
        # held the event loop (no await) past its timeout.
        result = self._failed(
            start, "timeout", f"timed out after {self.timeout:g}s (blocked the event loop)"
        )
        if self._notify is not None:
            self._notify(
                Notice(
                    "lifespan.check.blocked",
                    "warning",
                    {
                        "check": self.name,
                        "blocked_s": round(result.duration, 6),
                        "timeout_s": self.timeout,
                        "detail": "an async check ran without awaiting past its timeout, "
                        "stalling every request; run blocking code in a thread "
                        "(a sync def check does)",
                    },
                )
            )
        return result

    def _judge(self, start: float, value: Any) -> CheckResult:
        if value is None or value is True:
            return self._passed(start)
        if value is False:
            return self._failed(start, "false", "returned False")
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            return self._failed(
                start, "invalid", "returned an awaitable from a sync function; make it async def"
            )
        return self._failed(
            start,
            "invalid",
            f"returned {type(value).__name__}; a check returns None or a bool, or raises",
        )

    def expire(self, task: asyncio.Task[Any] | None) -> None:
        """The run's timeout is up: cancel it, as a timeout."""
        if task is not None and not task.done():
            self._timed_out = True
            task.cancel()

    def _in_thread(self) -> asyncio.Future[tuple[Any, BaseException | None]]:
        """Start the sync check in a daemon thread; its outcome comes back here.

        Marked busy and started in one step, with no await in between: no probe
        can slip in before the thread owns the flag, and a cancellation cannot
        leave it set for a thread that never started. Only the thread clears it,
        once the check has returned. Awaiting the future under
        the timeout abandons, never stops, a hung thread; being a daemon, it
        never holds up process exit.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()
        thread = threading.Thread(
            target=self._work,
            args=(loop, future, contextvars.copy_context()),
            name=f"lifewatch-check:{self.name}",
            daemon=True,
        )
        self._busy_thread = True
        try:
            thread.start()
        except BaseException:
            self._busy_thread = False
            raise
        return future

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[tuple[Any, BaseException | None]],
        context: contextvars.Context,
    ) -> None:
        """The thread's body: call the check, free the check, report to the loop."""
        outcome: tuple[Any, BaseException | None]
        try:
            outcome = (context.run(self.func), None)
        except BaseException as exc:
            outcome = (None, exc)
        finally:
            self._busy_thread = False
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
            loop.call_soon_threadsafe(_settle, future, outcome)

    def _passed(self, start: float) -> CheckResult:
        return CheckResult(True, time.perf_counter() - start, time.time(), time.monotonic())

    def _failed(self, start: float, reason: CheckReason, detail: str) -> CheckResult:
        return CheckResult(
            False, time.perf_counter() - start, time.time(), time.monotonic(), reason, detail
        )

    async def refresh_forever(self) -> None:
        """Run the check every ``interval`` seconds, for as long as the app serves."""
        assert self.interval is not None
        while True:
            await self.run()
            await asyncio.sleep(self.interval)
