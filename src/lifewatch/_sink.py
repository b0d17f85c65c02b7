"""The sink interface: one subclass per signal, fed the same events (``*_end`` in
reverse, so tracing's context wraps logging). A sink that raises is reported and
skipped: what the app or the server sees does not change."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._records import Notice, PhaseRecord, RunRecord
from ._types import State

if TYPE_CHECKING:
    from ._checks import CheckResult, HealthCheck
    from ._supervise import Supervised


class Sink:
    """Base class: every hook is a no-op, override what you need."""

    def run_begin(self, run: RunRecord) -> None:
        """A startup or shutdown begins."""

    def run_end(self, run: RunRecord) -> None:
        """A startup or shutdown ended; ``run.outcome`` is set."""

    def phase_begin(self, phase: PhaseRecord) -> None:
        """A phase begins; called in the task (or thread) that runs it."""

    def phase_end(self, phase: PhaseRecord) -> None:
        """A phase ended; ``phase.outcome`` (and maybe ``reason``) is set."""

    def state_changed(self, old: State | None, new: State) -> None:
        """The lifecycle state moved."""

    def check_result(
        self, check: HealthCheck, result: CheckResult, previous: CheckResult | None
    ) -> None:
        """A health check run finished (``previous`` is the result before it)."""

    def task_started(self, task: Supervised) -> None:
        """A task is now supervised: its death will break liveness."""

    def task_died(self, task: Supervised) -> None:
        """A supervised task ended before shutdown."""

    def notice(self, notice: Notice) -> None:
        """Anything else worth telling: a drain step, a probe that broke.
        ``lifespan.phase.overrun`` comes from the watchdog's thread."""
