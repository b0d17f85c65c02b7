"""The timeline under a real uvicorn: served by default, and true while the
startup still runs (only the ops listener answers then: uvicorn binds the
app's port once startup is over)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.servers import env, free_ports, http_get, running, uvicorn_argv, wait_for

APP = "tests.apps.slow_startup:app"


def test_the_timeline_during_startup_says_it_is_starting_and_which_phase_runs(
    tmp_path: Path,
) -> None:
    port, ops = free_ports(2)
    log = tmp_path / "starting.log"
    extra = {"MODE": "waits", "OPS_PORT": str(ops), "TIMELINE_PATH": "/lifewatch/timeline"}
    with running(uvicorn_argv(port, APP), log, env(**extra)):
        wait_for("the slow phase", lambda: "waiting for the database" in log.read_text(), 30)
        page = wait_for(
            "the timeline", lambda: http_get(f"http://127.0.0.1:{ops}/lifewatch/timeline"), 10
        )
    assert "the application is serving" not in page
    assert "the application is starting (phase &#x27;wait-for-db&#x27; is running)" in page


def test_the_timeline_is_served_by_default(tmp_path: Path) -> None:
    port, ops = free_ports(2)
    log = tmp_path / "default.log"
    with running(uvicorn_argv(port, APP), log, env(MODE="quick", OPS_PORT=str(ops))):
        body = wait_for(
            "the timeline",
            lambda: http_get(f"http://127.0.0.1:{port}/lifewatch/timeline.json"),
            30,
        )
        page = http_get(f"http://127.0.0.1:{ops}/lifewatch/timeline")
    names = [e["startupStep"]["name"] for e in json.loads(body)["timeline"]["events"]]
    assert {"config", "settings", "database"} <= set(names)
    assert "Lifespan timeline" in page
