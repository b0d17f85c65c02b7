"""Fault rows under a real uvicorn: exit codes, bounds as ratios of the
configured timeouts, what the client and the log see. One app
(``tests/apps/faults.py``), the fault picked by ``FAULT``."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import env, free_port, http_get, running, uvicorn_argv, wait_for

APP = "tests.apps.faults:app"
SECRET = "S3cr3t"


def status_of(url: str) -> int:
    try:
        http_get(url)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


@contextmanager
def uvicorn(tmp: Path, name: str, **extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    log = tmp / f"{name}.log"
    with running(uvicorn_argv(port, APP), log, env(**extra)) as proc:
        yield proc, f"http://127.0.0.1:{port}"


def output(tmp: Path, name: str) -> str:
    return (tmp / f"{name}.log").read_text()


def lifewatch_part(out: str) -> str:
    """What precedes uvicorn's own report of the failure: lifewatch's lines."""
    return out.split("ERROR:    Traceback", 1)[0]


def served(base: str) -> bool:
    return status_of(f"{base}/livez") == 200


def test_a_failed_startup_under_uvicorn(tmp_path: Path) -> None:
    """Row (issue points 9, 10): exit 3; one traceback from lifewatch, at the
    phase that failed; no credential in lifewatch's lines."""
    with uvicorn(tmp_path, "fails", FAULT="startup-fails") as (proc, _):
        assert proc.wait(30) == 3
    out = output(tmp_path, "fails")
    ours = lifewatch_part(out)
    assert ours.count("Traceback (most recent call last)") == 1, out
    assert "lifespan.startup.failed" in ours and "phase=database" in ours
    assert SECRET not in ours, ours
    assert "postgres://***@db:5432" in ours
    assert "ERROR:    Traceback" in out  # uvicorn's own, which lifewatch does not touch


def test_a_non_critical_failure_under_uvicorn(tmp_path: Path) -> None:
    """Row (issue point 10): a WARNING with one traceback; the app serves; exit 0."""
    with uvicorn(tmp_path, "degraded", FAULT="cache-fails") as (proc, base):
        wait_for("the app", lambda: served(base), 20)
        assert status_of(f"{base}/readyz") == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # uvicorn re-raises it once shut down
    out = output(tmp_path, "degraded")
    assert out.count("Traceback (most recent call last)") == 1, out
    failed = [line for line in out.splitlines() if "lifespan.phase.failed" in line]
    assert len(failed) == 1 and "phase=cache" in failed[0]
    assert failed[0].startswith("WARNING lifewatch:")
    assert SECRET not in out


def test_a_check_raising_system_exit_under_uvicorn(tmp_path: Path) -> None:
    """Row (issue point 2): the check fails, the server lives on, and SIGTERM
    still runs the shutdown phase: exit 0."""
    with uvicorn(tmp_path, "exits", FAULT="check-exits") as (proc, base):
        wait_for("the app", lambda: status_of(f"{base}/") == 200, 20)
        for _ in range(5):
            assert status_of(f"{base}/readyz") == 503
            assert status_of(f"{base}/livez") == 503
        assert status_of(f"{base}/") == 200
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # uvicorn re-raises it once shut down
    out = output(tmp_path, "exits")
    assert "close phase ran" in out
    assert "lifespan.shutdown.complete" in out and "outcome=ok" in out.split("shutdown.complete")[1]


def test_a_second_sigterm_cuts_the_drain(tmp_path: Path) -> None:
    """Row: double SIGTERM. The first drains (readiness 503), the second ends
    the drain at once: exit 0 well before the delay (long: a loaded box is slow)."""
    delay = 60.0
    with uvicorn(tmp_path, "double", DRAIN_DELAY=str(delay)) as (proc, base):
        wait_for("ready", lambda: status_of(f"{base}/readyz") == 200, 20)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_for("draining", lambda: status_of(f"{base}/readyz") == 503, delay / 2)
        assert status_of(f"{base}/") == 200  # still serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # uvicorn re-raises it once shut down
        took = time.monotonic() - started
    assert took < delay / 2, f"{took:.2f}s with a {delay}s drain cut by a second SIGTERM"
    out = output(tmp_path, "double")
    assert "lifespan.drain.begin" in out and "lifespan.drain.cut" in out
    assert "close phase ran" in out


def test_sigterm_during_startup(tmp_path: Path) -> None:
    """Row: SIGTERM while a startup phase hangs. It ends the startup at once
    (well within startup_timeout, far within the hang); the failure names the
    phase; non-zero exit."""
    timeout, hang = 2.0, 60.0
    with uvicorn(
        tmp_path, "early", FAULT="startup-hangs", STARTUP_TIMEOUT=str(timeout), HANG=str(hang)
    ) as (proc, _):
        # config's end: database hangs now (its own lines come only when it ends).
        wait_for("startup", lambda: "phase=config" in output(tmp_path, "early"), 20)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(hang)
        took = time.monotonic() - started
    assert code != 0
    assert took < hang / 2
    out = output(tmp_path, "early")
    assert "lifespan.startup.failed" in out and "phase=database" in out
    assert "reason=signal" in out


def test_a_hung_shutdown_phase(tmp_path: Path) -> None:
    """Row: a shutdown phase that hangs is cut at its timeout; exit bounded by it."""
    timeout, hang = 1.0, 60.0  # hang: how long tests/apps/faults.py's close phase sleeps
    with uvicorn(tmp_path, "hung", FAULT="shutdown-hangs", CLOSE_TIMEOUT=str(timeout)) as (
        proc,
        base,
    ):
        wait_for("the app", lambda: served(base), 20)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(hang)
        took = time.monotonic() - started
    assert timeout <= took < hang / 2
    out = output(tmp_path, "hung")
    assert "phase=close" in out and "reason=timeout" in out
    assert code == -signal.SIGTERM, out  # uvicorn logs the failure, then re-raises SIGTERM
    assert "Application shutdown failed" in out


def test_a_check_swallowing_its_cancel_under_uvicorn(tmp_path: Path) -> None:
    """Row (issue point 1): 200 probes each answered by timeout + grace, no
    task pile-up holding the shutdown; SIGTERM exits at once. The bounds are
    ratios to what a pile-up would cost: each probe its timeout, the exit the
    shutdown timeout."""
    timeout, shutdown = 0.2, 20.0
    with uvicorn(
        tmp_path,
        "stubborn",
        FAULT="check-swallows",
        CHECK_TIMEOUT=str(timeout),
        SHUTDOWN_TIMEOUT=str(shutdown),
    ) as (proc, base):
        wait_for("the app", lambda: served(base), 20)
        started = time.monotonic()
        assert [status_of(f"{base}/readyz") for _ in range(200)] == [503] * 200
        took = time.monotonic() - started
        assert took < 200 * timeout / 2, f"{took:.2f}s for 200 probes"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
        assert time.monotonic() - started < shutdown  # nothing waits for the abandoned run
    out = output(tmp_path, "stubborn")
    assert out.count("lifespan.check.abandoned") == 1
    assert "close phase ran" in out
