"""``watch.to_thread``: a daemon thread per call, abandoned (and reported) when cut."""

from __future__ import annotations

import subprocess
import sys
import threading

import anyio
import pytest

from lifewatch import PhaseTimeout
from lifewatch._phase import current_phase
from lifewatch.testing import LifewatchHarness
from tests.support.servers import env

BACKENDS = ["asyncio", "trio"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_result_and_the_exception_itself_come_back(backend: str) -> None:
    h = LifewatchHarness()
    error = ConnectionRefusedError("db:5432")

    def fails() -> None:
        raise error

    async def main() -> None:
        assert await h.watch.to_thread(divmod, 7, 2) == (3, 1)
        assert await h.watch.to_thread(sorted, [3, 1], reverse=True) == [3, 1]
        with pytest.raises(ConnectionRefusedError) as caught:
            await h.watch.to_thread(fails)
        assert caught.value is error
        names: list[str] = []

        def inner() -> None:
            with h.watch.phase("inner"):
                record = current_phase.get()
                assert record is not None and record.parent is not None
                names.append(record.parent.name)
            names.append(threading.current_thread().name)

        async with h.watch.phase("outer"):
            await h.watch.to_thread(inner)
        assert names[0] == "outer"  # phases in the thread nest under the caller's
        assert names[1].startswith("lifewatch-to-thread-")

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
# blockbuster wraps Event.wait's lock: the innermost frame would be its wrapper.
@pytest.mark.blockbuster_off("the stuck thread's innermost frame is what it checks")
def test_a_phase_timeout_abandons_the_thread_and_reports_where_it_is_stuck(backend: str) -> None:
    h = LifewatchHarness()
    release = threading.Event()
    threads: list[threading.Thread] = []

    def stuck() -> None:
        threads.append(threading.current_thread())
        release.wait(60)  # where it is stuck

    async def main() -> None:
        with pytest.raises(PhaseTimeout):
            async with h.watch.phase("wait-for-db", timeout=0.2):
                await h.watch.to_thread(stuck)

    try:
        with h:
            anyio.run(main, backend=backend)
        [abandoned] = h.events("lifespan.thread.abandoned")
        assert abandoned["phase"] == "wait-for-db" and abandoned["function"].endswith("stuck")
        assert "release.wait(60)" in abandoned["stuck_at"]
        assert "in stuck" in abandoned["stack"]
        assert threads[0].daemon and threads[0].is_alive()  # left running, not waited for
    finally:
        release.set()


PROCESS = """
import asyncio, threading, time
from prometheus_client import CollectorRegistry
from lifewatch import Lifewatch

watch = Lifewatch(registry=CollectorRegistry())

async def main():
    try:
        async with watch.phase("connect", timeout=0.2):
            await watch.to_thread(time.sleep, 300)
    except TimeoutError:
        print("cut", flush=True)

asyncio.run(main())
"""


def test_an_abandoned_thread_does_not_hold_the_exit() -> None:
    # asyncio.to_thread's worker would hold asyncio.run's end (and the exit) for 300 s.
    out = subprocess.run(
        [sys.executable, "-c", PROCESS], env=env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cut"]
    assert "lifespan.thread.abandoned phase=connect" in out.stderr
    assert "stuck_at='sleep (in C code, no Python frame)'" in out.stderr
