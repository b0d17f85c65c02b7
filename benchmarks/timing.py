"""Side-by-side timing on a noisy shared machine, and the suite's one table.

Absolute times on a shared 2-core box drift by tens of percent from second to
second, so nothing here trusts them. Every figure is a ratio (or a
difference) between contenders measured in the *same* round: many short
batches, interleaved, the order rotated each round so no contender always
runs first, the garbage collector off while a batch runs and a collection
between rounds (so one contender does not pay for another's garbage). The
figure is the median over rounds; the spread is p10..p90 of the per-round
values (min..max under 10 rounds).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Batch = Callable[[], Awaitable[float]]
"""Runs one batch and returns its duration in seconds (the timed part only)."""


async def interleaved(batches: dict[str, Batch], rounds: int) -> dict[str, list[float]]:
    """Seconds per batch for every contender, round after round, order rotated."""
    names = list(batches)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: caches, lazy imports, first-call paths
        await batches[name]()
    enabled = gc.isenabled()
    try:
        for r in range(rounds):
            gc.collect()
            gc.disable()
            k = r % len(names)
            for name in names[k:] + names[:k]:
                times[name].append(await batches[name]())
            gc.enable()
    finally:
        if enabled:
            gc.enable()
    return times


def timed(run: Callable[[], Awaitable[None]]) -> Batch:
    """A batch from a coroutine function that does the work."""

    async def batch() -> float:
        t = time.perf_counter()
        await run()
        return time.perf_counter() - t

    return batch


def ratios(xs: list[float], base: list[float]) -> list[float]:
    return [x / b for x, b in zip(xs, base, strict=True)]


def diffs(xs: list[float], base: list[float], scale: float = 1.0) -> list[float]:
    return [(x - b) * scale for x, b in zip(xs, base, strict=True)]


def spread(xs: list[float]) -> tuple[float, float]:
    if len(xs) >= 10:
        deciles = statistics.quantiles(xs, n=10)
        return deciles[0], deciles[-1]
    return min(xs), max(xs)


@dataclass
class Row:
    """One line of the table: a figure, its spread, and the target it answers to."""

    name: str
    values: list[float]
    unit: str
    target: float | None = None
    """Upper bound on the median; None for context rows."""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "context"
        return "met" if self.median <= self.target else "MISSED"


def _fmt(x: float, unit: str) -> str:
    if unit == "x":
        return f"{x:.3f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}"


def print_table(sections: list[tuple[str, list[Row]]]) -> None:
    header = f"{'measurement':<62}{'median':>10}{'spread':>20}  {'unit':<9}{'target':>9}  verdict"
    print(header)
    print("-" * len(header))
    for title, rows in sections:
        print(f"[{title}]")
        for row in rows:
            lo, hi = spread(row.values)
            target = "" if row.target is None else f"≤ {_fmt(row.target, row.unit)}"
            print(
                f"  {row.name:<60}{_fmt(row.median, row.unit):>10}"
                f"{_fmt(lo, row.unit) + ' .. ' + _fmt(hi, row.unit):>20}  {row.unit:<9}"
                f"{target:>9}  {row.verdict}"
            )
            if row.note:
                print(f"      {row.note}")
