"""The event bus: every sink hears every event, and none can break what it
observes (DESIGN §0): a sink that raises is logged and skipped."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ._sink import Sink

HOOKS = tuple(name for name in vars(Sink) if not name.startswith("_"))
REVERSED = frozenset({"run_end", "phase_end"})  # so a sink that sets up context wraps the rest


class EventBus:
    def __init__(self, log: Any) -> None:
        self._log = log
        self.sinks: tuple[Sink, ...] = ()
        self._connected = False
        self._calls: dict[str, tuple[Callable[..., None], ...]] = dict.fromkeys(HOOKS, ())

    def connect(self, sinks: tuple[Sink, ...]) -> None:
        """Subscribe the sinks, once, to the hooks each overrides (the base ones do nothing)."""
        if self._connected:
            raise RuntimeError("the sinks of a lifecycle are connected once")
        self._connected = True
        self.sinks = sinks
        self._calls = {
            hook: tuple(
                getattr(s, hook)
                for s in (reversed(sinks) if hook in REVERSED else sinks)
                if getattr(type(s), hook) is not getattr(Sink, hook)
            )
            for hook in HOOKS
        }

    def emit(self, hook: str, *args: Any) -> None:
        for call in self._calls[hook]:
            try:
                call(*args)
            except Exception as exc:
                # When the logging itself is what broke, there is nothing more to do.
                with contextlib.suppress(Exception):
                    self._log.error("lifespan.sink.failed", hook=call.__qualname__, exc_info=exc)
