"""A SIGTERM during startup, under a real uvicorn (and hypercorn), with
lifewatch's default settings: the startup ends at once (the running phase's
outcome ``signal``), what started is shut down, no drain, a non-zero exit."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import env, free_port, running, uvicorn_argv, wait_for

APP = "tests.apps.slow_startup:app"


def argv(server: str) -> list[str]:
    if server == "uvicorn":
        return uvicorn_argv(free_port(), APP)
    # -w 0: one process, the server itself, its handler on asyncio's loop.
    return [sys.executable, "-m", "hypercorn", "-w", "0", "-b", f"127.0.0.1:{free_port()}", APP]


def run_until_signalled(
    tmp: Path,
    name: str,
    mark: str,
    server: str = "uvicorn",
    sig: signal.Signals = signal.SIGTERM,
    **extra: str,
) -> tuple[int, float, str]:
    """Start the app, signal it once ``mark`` is printed; (exit code, seconds, log)."""
    log = tmp / f"{name}.log"
    with running(argv(server), log, env(**extra)) as proc:
        wait_for(mark, lambda: mark in log.read_text(), 30)
        started = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(60)
        took = time.monotonic() - started
    return code, took, log.read_text()


@pytest.mark.parametrize(
    ("server", "sig"),
    [("uvicorn", signal.SIGTERM), ("hypercorn", signal.SIGTERM), ("uvicorn", signal.SIGINT)],
)
def test_a_signal_during_a_slow_async_phase_ends_the_startup_at_once(
    tmp_path: Path, server: str, sig: signal.Signals
) -> None:
    # The phase awaits 60 s; no startup_timeout is set (the default).
    code, took, out = run_until_signalled(
        tmp_path, "waits", "waiting for the database", server, sig, MODE="waits"
    )
    assert code != 0, out
    assert took < 20, f"{took:.1f}s after SIGTERM, the phase waits 60 s\n{out}"
    assert "phase.end phase=wait-for-db lifespan_event=startup" in out
    assert "outcome=signal" in out.split("phase.end phase=wait-for-db", 1)[1].splitlines()[0]
    assert "lifespan.startup.failed phase=wait-for-db reason=signal" in out, out
    # One line for `kubectl logs`: what cut the startup, and where.
    assert f"startup cut by {sig.name} in phase 'wait-for-db'" in out
    assert "config shut down" in out  # what started was rolled back
    assert "lifespan.drain" not in out  # never ready: no drain
    # Asked to stop, not broken: no LifespanStartupFailed for a pod deleted while starting.
    assert "from=starting to=stopping" in out and "from=stopping to=stopped" in out


def test_sigterm_during_a_blocking_phase_takes_effect_when_it_returns(tmp_path: Path) -> None:
    # The loop is blocked for 3 s: the signal is noted in its handler, and the
    # startup, which would have completed, fails as the block ends; a drain
    # (30 s here) would have followed a ready startup.
    code, took, out = run_until_signalled(
        tmp_path, "blocks", "migrating", MODE="blocks", BLOCK="3", DRAIN_DELAY="30"
    )
    assert code != 0, out
    assert took < 20, f"{took:.1f}s after SIGTERM, with a 3 s block and a 30 s drain\n{out}"
    assert "lifespan.startup.failed phase=migrate reason=signal" in out, out
    assert "startup cut by SIGTERM in phase 'migrate'" in out
    assert "lifespan.drain" not in out
    assert "to=ready" not in out
    assert "config shut down" in out
