"""The readiness state: where the process is in its life, and whether it takes traffic."""

from __future__ import annotations

from ._bus import EventBus
from ._records import Notice
from ._types import State

S = State
ALLOWED: dict[State, frozenset[State]] = {
    # A new startup may begin from anywhere (one app serving test after test),
    # and a shutdown too; a background phase may fail any time. Once stopping
    # or failed, never ready again but through a new startup.
    S.STARTING: frozenset({S.READY, S.DRAINING, S.FAILED, S.STOPPING}),
    S.READY: frozenset({S.STARTING, S.DRAINING, S.FAILED, S.STOPPING}),
    S.DRAINING: frozenset({S.STARTING, S.READY, S.FAILED, S.STOPPING}),
    S.STOPPING: frozenset({S.STARTING, S.FAILED, S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPING, S.STOPPED}),
    S.STOPPED: frozenset({S.STARTING, S.STOPPING}),
}


class Readiness:
    """The state machine of ``lifespan_state``, and traffic refused by hand."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.state = State.STARTING
        self.closing = False
        """Draining or stopping: responses ask keep-alive clients to go."""
        self.refusal: str | None = None
        """Why traffic is refused by hand (``refuse``), or None."""
        self._refusal_drains = False

    def move(self, new: State) -> None:
        old = self.state
        if old is new:
            return
        if new not in ALLOWED[old]:
            accepted = ", ".join(sorted(s.value for s in ALLOWED[old]))
            raise ValueError(
                f"the state cannot move from {old.value} to {new.value}; from "
                f"{old.value} it moves to {accepted}"
            )
        self.state = new
        self.closing = new in (State.DRAINING, State.STOPPING)
        self._bus.emit("state_changed", old, new)

    def ready(self) -> None:
        """Startup is over: ready, or ``draining`` while traffic is refused by hand."""
        if self.state is State.STARTING:
            self.move(State.READY if self.refusal is None else State.DRAINING)

    def refuse(self, reason: str) -> None:
        """Out of rotation by hand (Spring's ``REFUSING_TRAFFIC``): a ready instance
        drains; one stopping or failed stays as it is."""
        if self.refusal is None:
            # The drain is the refusal's own only if it made it.
            self._refusal_drains = self.state in (State.READY, State.STARTING)
        self.refusal = reason
        self._bus.emit("notice", Notice("lifespan.traffic.refused", "warning", {"reason": reason}))
        if self.state is State.READY:
            self.move(State.DRAINING)

    def accept(self) -> None:
        """Back into rotation after ``refuse``; nothing else changes."""
        if self.refusal is None:
            return
        self.refusal = None
        self._bus.emit("notice", Notice("lifespan.traffic.accepted", "info", {}))
        if self.state is State.DRAINING and self._refusal_drains:
            self.move(State.READY)
