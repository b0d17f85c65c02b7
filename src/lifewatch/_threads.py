"""``await watch.to_thread(fn, *args)``: blocking work a phase can give up on.

Blocking code (a driver's connect, a migration) cannot be cancelled, and the
worker threads of asyncio's executor and of anyio are not daemons: the
interpreter waits for them at exit, so a call stuck on a database that is down
held a failed startup's exit for minutes. Here every call gets a daemon
thread of its own; when the awaiting task is cancelled, lifewatch stops
waiting, reports the thread as abandoned with its stack, and leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from ._phase import current_phase
from ._records import Notice
from ._watchdog import describe

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

T = TypeVar("T")

_numbers = itertools.count(1)


async def run_in_daemon_thread(
    lifecycle: Lifecycle, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    """Run ``func(*args, **kwargs)`` in a daemon thread; abandon it if cancelled."""
    # The result comes back through the event loop's thread-safe entry.
    wake: Callable[[Callable[[], object]], object]
    try:
        wake = asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        import trio  # the only other library anyio runs on

        wake = trio.lowlevel.current_trio_token().run_sync_soon
    done = anyio.Event()
    outcome: list[Any] = []  # [True, result] or [False, exception]
    context = contextvars.copy_context()  # phases inside nest under the caller's

    def run() -> None:
        try:
            outcome[:] = [True, context.run(func, *args, **kwargs)]
        except BaseException as exc:
            outcome[:] = [False, exc]
        with contextlib.suppress(Exception):  # the loop is gone: nobody waits any more
            wake(done.set)

    name = f"lifewatch-to-thread-{next(_numbers)}:{getattr(func, '__qualname__', func)!s}"
    thread = threading.Thread(target=run, name=name[:200], daemon=True)
    thread.start()
    try:
        await done.wait()
    except anyio.get_cancelled_exc_class():
        if not outcome:  # still running (not merely on its way back)
            _abandoned(lifecycle, func, thread)
        raise
    ok, value = outcome
    outcome.clear()
    if ok:
        return value  # type: ignore[no-any-return]
    try:
        raise value
    finally:
        del value  # no cycle through the traceback's frame


def _abandoned(lifecycle: Lifecycle, func: Callable[..., Any], thread: threading.Thread) -> None:
    """Say the call is left running, where it is stuck and in which phase."""
    frame = sys._current_frames().get(thread.ident or 0)
    try:
        where, stack = describe(frame)
    finally:
        del frame
    function = getattr(func, "__qualname__", repr(func))
    if where.startswith(__file__):  # no Python frame below ours: blocked in C code
        where = f"{function} (in C code, no Python frame)"
    phase = current_phase.get()
    fields: dict[str, Any] = {
        "function": function,
        "thread": thread.name,
        "stuck_at": where,
        "stack": stack,
    }
    if phase is not None:
        fields = {"phase": phase.name, "lifespan_event": phase.event, **fields}
    with contextlib.suppress(Exception):  # a log line is lost, never the cancellation
        lifecycle.notify(Notice("lifespan.thread.abandoned", "warning", fields, phase=phase))
