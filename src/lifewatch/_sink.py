"""The sink interface: one class per signal, fed the same records.

Adding a signal means adding one subclass; the phase runner never changes.
Sinks are called in order on ``*_begin`` and in reverse order on ``*_end``,
so a sink that sets up context (tracing) wraps the ones after it (logging).
"""

from __future__ import annotations

from ._records import PhaseRecord, RunRecord
from ._types import State


class Sink:
    """Base class: every hook is a no-op, override what you need."""

    def run_begin(self, run: RunRecord) -> None:
        """A startup or shutdown begins."""

    def run_end(self, run: RunRecord) -> None:
        """A startup or shutdown ended; ``run.outcome`` is set."""

    def phase_begin(self, phase: PhaseRecord) -> None:
        """A phase begins; called in the task that runs it."""

    def phase_end(self, phase: PhaseRecord) -> None:
        """A phase ended; ``phase.outcome`` (and maybe ``reason``) is set."""

    def state_changed(self, old: State | None, new: State) -> None:
        """The lifecycle state moved."""
