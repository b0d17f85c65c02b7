"""examples/realistic under a real uvicorn: what a service built like most sees.

Sync SQLAlchemy and alembic in the app's own ``init_db()``, stdlib logging
configured by the app, a scheduler under ``watch.supervise``, a database
check. Probes, nested sync phases, lifewatch's lines in the app's handler and
format, a blocking phase over its timeout, the SIGTERM drain, and a failed
startup named in one line.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ROOT, env, free_port, http_get, running, uvicorn_argv, wait_for

APP = "examples.realistic.app:app"
SOURCE = ROOT / "examples" / "realistic" / "app.py"
# The app's own format: "%(asctime)s %(levelname)s [%(name)s] %(message)s"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def app_env(tmp_path: Path, mode: str = "ok") -> dict[str, str]:
    return env(ORDERS_DB=str(tmp_path / "orders.db"), ORDERS_MODE=mode, ORDERS_DRAIN_DELAY="1")


def ready(base: str) -> str:
    return http_get(base + "/readyz")


def line(log: str, pattern: str) -> str:
    found = re.search(rf"^{STAMP} {pattern}.*$", log, re.M)
    assert found, (pattern, log[-4000:])
    return found.group(0)


def test_serves_probes_nests_migrations_logs_in_the_apps_format_and_drains(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "app.log"
    with running(uvicorn_argv(port, APP), log_file, app_env(tmp_path)) as proc:
        wait_for("the orders service", lambda: ready(base), 30)
        for probe in ("/livez", "/readyz", "/startupz"):
            assert httpx.get(base + probe).text == "ok"
        assert [o["status"] for o in httpx.get(base + "/orders").json()] == ["new", "new"]
        events = httpx.get(base + "/lifewatch/timeline.json").json()["timeline"]["events"]
        steps = {e["startupStep"]["id"]: e["startupStep"] for e in events}
        parent = {s["name"]: steps[s["parentId"]]["name"] for s in steps.values() if s["parentId"]}
        assert events[0]["startupStep"]["name"] == "boot"
        assert parent["migrations"] == "database"
        assert parent["0001_orders"] == parent["0002_status"] == "migrations"
        metrics = httpx.get(base + "/metrics").text
        assert 'parent="migrations",phase="0001_orders"' in metrics
        assert "lifespan_boot_duration_seconds" in metrics
        assert 'lifespan_check_status{check="supervised/scheduler",probe="liveness"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        # Draining: readiness fails at once, the app still serves.
        wait_for("readiness to fail", lambda: _status(base + "/readyz") == 503 or None, 5)
        assert httpx.get(base + "/orders").status_code == 200
        assert proc.wait(30) in (0, -signal.SIGTERM)
    log = log_file.read_text()
    line(log, r"INFO \[lifewatch\] lifespan\.phase\.end phase=migrations lifespan_event=startup")
    line(log, r"INFO \[orders\] orders service started")
    line(log, r"INFO \[lifewatch\] lifespan\.drain\.begin")
    line(log, r"INFO \[lifewatch\] lifespan\.shutdown\.complete")
    assert "lifespan.phase.begin" not in log  # DEBUG: the app did not enable it


def _status(url: str) -> int:
    try:
        http_get(url)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_a_blocking_phase_over_its_timeout_is_a_timeout_with_the_stuck_line(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "app.log"
    stuck = next(
        n for n, text in enumerate(SOURCE.read_text().splitlines(), 1) if "time.sleep(" in text
    )
    with running(uvicorn_argv(port, APP), log_file, app_env(tmp_path, "slow")):
        wait_for("the orders service", lambda: ready(base), 30)
        health = httpx.get(base + "/readyz", headers={"accept": "application/health+json"})
        assert health.json()["status"] == "warn"  # non-critical: degraded, still ready
        timeline = json.loads(http_get(base + "/lifewatch/timeline.json"))
        (warmup,) = [
            e for e in timeline["timeline"]["events"] if e["startupStep"]["name"] == "cache-warmup"
        ]
        assert (warmup["outcome"], warmup["reason"]) == ("degraded", "timeout")
    overrun = line(log_file.read_text(), r"WARNING \[lifewatch\] lifespan\.phase\.overrun")
    assert "phase=cache-warmup" in overrun and "timeout_s=0.2" in overrun
    assert f"stuck_at='{SOURCE}:{stuck} in warm_cache: time.sleep(" in overrun


@pytest.mark.parametrize("logging_by", ["the app", "alembic.ini"])
def test_a_failed_migration_fails_startup_naming_the_phase_in_one_line(
    tmp_path: Path, logging_by: str
) -> None:
    """With ``alembic.ini``, alembic's ``env.py`` runs ``fileConfig`` in the
    app's process before the failing revision: it disables every logger that
    exists (lifewatch's too) and sets its own format; lifewatch's records come
    all the same, in that format."""
    port = free_port()
    environ = app_env(tmp_path, "fail")
    if logging_by == "alembic.ini":
        environ["ORDERS_ALEMBIC_INI"] = "1"
    out = subprocess.run(
        uvicorn_argv(port, APP),
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    log = out.stderr
    if logging_by == "alembic.ini":  # its format: "%(levelname)-5.5s [%(name)s] %(message)s"
        log = re.sub(r"^ERROR ", "2000-01-01 00:00:00,000 ERROR ", log, flags=re.M)
        assert "INFO  [alembic.runtime.migration] Running upgrade" in log
    failed = line(log, r"ERROR \[lifewatch\] lifespan\.startup\.failed")
    assert "phase=0002_status" in failed and "duplicate column name" not in failed
    # The error once, in the failed phase's record with its traceback; the run names the phase.
    phase = line(log, r"ERROR \[lifewatch\] lifespan\.phase\.failed phase=0002_status")
    after = log[log.index(phase) + len(phase) :]
    assert "duplicate column name" in after[: after.index("[lifewatch]")]  # its traceback
    assert "lifewatch: startup phase '0002_status' failed (error)" in log  # uvicorn's traceback


def test_two_workers_take_turns_at_the_one_off_work_and_write_the_initial_data_once(
    tmp_path: Path,
) -> None:
    """``uvicorn --workers 2``: both run ``init_db`` (examples/realistic/db.py),
    under its lock; the pause between "no orders yet" and the insert is where
    two workers without the lock both insert (or one fails, the database locked)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "workers.log"
    environ = {**app_env(tmp_path), "ORDERS_SEED_PAUSE": "2"}
    with running([*uvicorn_argv(port, APP), "--workers", "2"], log_file, environ):

        def both_started() -> bool:
            return log_file.read_text().count("Application startup complete.") == 2

        wait_for("both workers", both_started, 60)
        orders = [o["item"] for o in httpx.get(base + "/orders").json()]
    log = log_file.read_text()
    assert orders == ["coffee", "bagel"], log[-4000:]
    assert "Traceback" not in log and "startup failed" not in log, log[-4000:]
    assert log.count("lifespan.startup.complete") == 2


def test_the_prestart_command_does_the_one_off_work_and_the_app_then_finds_it_done(
    tmp_path: Path,
) -> None:
    environ = app_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "examples.realistic.prestart"],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # alembic.ini's own logging (fileConfig in env.py) ran: alembic's lines, its format.
    assert "INFO  [alembic.runtime.migration] Running upgrade  -> 0001" in done.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "app.log"
    with running(uvicorn_argv(port, APP), log_file, environ):
        wait_for("the orders service", lambda: ready(base), 30)
        assert [o["item"] for o in httpx.get(base + "/orders").json()] == ["coffee", "bagel"]
    assert "Running upgrade" not in log_file.read_text()  # nothing left to migrate
