"""``watch.to_thread`` under a real uvicorn: a blocking call a phase's timeout
gave up on never holds the process's exit."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.servers import env, free_port, running, uvicorn_argv, wait_for

APP = "tests.apps.slow_startup:app"


def test_a_failed_startup_exits_without_waiting_for_the_abandoned_call(tmp_path: Path) -> None:
    log = tmp_path / "abandons.log"
    with running(uvicorn_argv(free_port(), APP), log, env(MODE="abandons")) as proc:
        wait_for("the connect", lambda: "connecting" in log.read_text(), 30)
        started = time.monotonic()
        code = proc.wait(60)  # the call sleeps 300 s
        took = time.monotonic() - started
    out = log.read_text()
    assert code != 0, out
    assert took < 30, f"exited {took:.1f}s after the phase began, its call sleeps 300 s\n{out}"
    assert "lifespan.thread.abandoned phase=wait-for-db" in out, out
    assert "function=sleep" in out and "stack:" in out
    assert "lifespan.startup.failed phase=wait-for-db reason=timeout" in out
    assert "config shut down" in out
