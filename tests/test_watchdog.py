"""The watchdog: one daemon thread per process, started only when a phase has a timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import FrameType

import pytest

from lifewatch._watchdog import WATCHDOG, describe
from tests.support.servers import env

PROBE = """
import threading, time
from prometheus_client import CollectorRegistry
from lifewatch import Lifewatch

def watchdogs():
    return [t for t in threading.enumerate() if t.name == "lifewatch-watchdog"]

watch = Lifewatch(registry=CollectorRegistry())
with watch.phase("no-timeout"):
    pass
print(len(watchdogs()))
for i in range(3):
    with watch.phase(f"t{i}", timeout=30):
        pass
print(len(watchdogs()), all(t.daemon for t in watchdogs()))
"""


def test_started_lazily_once_and_a_daemon() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1", "True"]


@pytest.mark.blockbuster_off(
    "the stuck thread's innermost frame is what it checks (blockbuster wraps the lock)"
)
def test_reports_the_frame_of_the_watched_thread_at_its_deadline() -> None:
    seen: list[tuple[str, str]] = []
    fired = threading.Event()

    def report(frame: FrameType | None) -> None:
        seen.append(describe(frame))
        fired.set()

    def stuck() -> None:
        WATCHDOG.watch(time.perf_counter() + 0.05, threading.get_ident(), report)
        fired.wait(30)  # the line the watchdog must name

    worker = threading.Thread(target=stuck)
    worker.start()
    worker.join(30)
    where, stack = seen[0]
    assert "in stuck: fired.wait(30)" in where
    assert "in stuck" in stack


def test_a_cancelled_watch_never_fires() -> None:
    fired: list[object] = []
    entry = WATCHDOG.watch(time.perf_counter() + 0.05, threading.get_ident(), fired.append)
    entry.cancel()
    marker = threading.Event()
    WATCHDOG.watch(time.perf_counter() + 0.1, threading.get_ident(), lambda f: marker.set())
    assert marker.wait(30)  # a later deadline fired: the earlier one was passed over
    assert fired == []


def test_an_ended_thread_is_described_as_such() -> None:
    assert describe(None) == ("unknown (the thread has ended)", "")
