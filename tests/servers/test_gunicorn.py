"""A real gunicorn with 2 uvicorn workers sharing PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import env, free_port, http_get, running, wait_for


def scrape(port: int) -> dict[str, dict[str, float]]:
    """pid -> {state: value} of ``lifespan_state``, plus the phases per pid."""
    text = http_get(f"http://127.0.0.1:{port}/metrics")
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "lifespan_state":
                out.setdefault(s.labels["pid"], {})[s.labels["state"]] = s.value
            elif s.name == "lifespan_phase_failures_total":
                out.setdefault("all", {})["failures:" + s.labels["phase"]] = s.value
            elif s.name == "lifespan_phase_duration_seconds":
                out.setdefault(s.labels["pid"], {})["phase:" + s.labels["phase"]] = s.value
    return out


def ready_pids(port: int) -> set[str]:
    return {pid for pid, m in scrape(port).items() if pid != "all" and m.get("ready") == 1}


def test_one_scrape_shows_every_worker_and_forgets_a_killed_one(tmp_path: Path) -> None:
    port = free_port()
    mp = tmp_path / "multiproc"
    mp.mkdir()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "tests/apps/gunicorn_conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "tests.apps.demo:app",
    ]
    with running(argv, tmp_path / "gunicorn.log", env(PROMETHEUS_MULTIPROC_DIR=str(mp))):
        try:
            first = wait_for(
                "2 ready workers", lambda: (p := ready_pids(port)) and len(p) == 2 and p, 30
            )
            series = scrape(port)
            for pid in first:
                # Each worker ran its own lifespan: its phases are there, per pid.
                assert {"phase:database", "phase:search-index", "phase:cache-warmup"} <= set(
                    series[pid]
                ), series[pid]
                assert series[pid]["starting"] == 0

            victim = sorted(first)[0]
            os.kill(int(victim), signal.SIGKILL)

            def replaced() -> set[str] | None:
                pids = ready_pids(port)
                return pids if len(pids) == 2 and victim not in pids else None

            after = wait_for("a replacement worker, ready, and the victim gone", replaced, 30)
            survivor = (first - {victim}).pop()
            assert survivor in after
            series = scrape(port)
            assert victim not in series, f"the killed worker {victim} still has state series"
            new = (after - {survivor}).pop()
            assert series[new]["ready"] == 1 and "phase:database" in series[new]
            # Counters keep the dead worker's share: 3 lifespans, 3 failed cache warmups.
            assert series["all"]["failures:cache-warmup"] == 3
        except BaseException:
            print((tmp_path / "gunicorn.log").read_text()[-5000:])
            raise
