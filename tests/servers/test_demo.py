"""``python -m lifewatch demo``: the README's first command, as a person runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, http_get, wait_for

ROOT = Path(__file__).resolve().parents[2]


def answers(url: str, proc: subprocess.Popen[str]) -> None:
    """Wait until ``url`` answers 2xx while the demo keeps running."""

    def up() -> str:
        assert proc.poll() is None, "the demo exited early"
        return http_get(url)

    wait_for(url, up, timeout=30, step=0.05)


def test_demo_shows_every_feature_and_stops_cleanly_on_ctrl_c() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lifewatch",
            "demo",
            "--port",
            str(port),
            "--json",
            "--model-load",
            "1.5",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answers(f"{base}/startupz", proc)
        # The server is up while the model loads: started, alive, not ready.
        assert httpx.get(f"{base}/livez").status_code == 200
        waiting = httpx.get(f"{base}/readyz?verbose")
        assert waiting.status_code == 503
        assert "background phase(s) running: model-load" in waiting.text
        answers(f"{base}/readyz", proc)
        health = httpx.get(f"{base}/readyz", headers={"accept": "application/health+json"}).json()
        assert health["status"] == "warn"  # the cache is down, and not critical
        assert set(health["checks"]) == {"lifespan", "database", "cache"}
        assert httpx.get(base + "/").json()["orders"] == ["coffee", "bagel"]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'lifespan_state{state="ready"} 1.0' in metrics
        assert 'lifespan_phase_failures_total{event="startup",phase="cache-warmup"' in metrics
        page = httpx.get(f"{base}/lifewatch/timeline")
        assert page.headers["content-type"].startswith("text/html")
        for phase in ("load-config", "database", "migrations", "cache-warmup", "model-load"):
            assert phase in page.text
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert f"lifewatch demo on {base}" in out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events = [r["event"] for r in records]
    assert "lifespan.shutdown.complete" in events
    shutdown_phases = [
        r["phase"]
        for r in records
        if r["event"] == "lifespan.phase.end" and r.get("lifespan_event") == "shutdown"
    ]
    assert shutdown_phases[-2:] == ["database", "lifespan"]
    assert any(r.get("trace_id") for r in records)
    # One JSON format for every line (structlog.stdlib.ProcessorFormatter): uvicorn's too.
    assert not [line for line in out.splitlines() if line.startswith(("INFO:", "ERROR:"))]
    uvicorn = [r for r in records if r.get("logger", "").startswith("uvicorn")]
    assert any(r["event"] == "Application startup complete." for r in uvicorn), uvicorn
    assert {"timestamp", "level"} <= records[-1].keys()


def test_demo_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "lifewatch", "demo", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"lifewatch demo: port {port} on 127.0.0.1 is already in use; try --port {port + 1}"
    ]


def test_demo_flags_are_validated() -> None:
    for args, message in (
        (["--port", "99999"], "port must be a number from 1 to 65535; got 99999"),
        (["--port", "http"], "port must be a number from 1 to 65535; got 'http'"),
        (["--model-load", "-1"], "must be a number of seconds from 0 to 3600; got '-1'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "lifewatch", "demo", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_lifewatch_console_script_runs_the_same_cli() -> None:
    script = Path(sys.executable).parent / "lifewatch"
    assert script.exists(), "pip install -e . installs the `lifewatch` console script"
    proc = subprocess.run(
        [str(script), "demo", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--model-load" in proc.stdout


def test_demo_writes_no_colour_codes_into_a_file(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifewatch", "demo", "--port", str(port), "--model-load", "0"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("ready", lambda: http_get(f"http://127.0.0.1:{port}/readyz"), 30)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "lifespan.startup.complete" in text and "Application startup complete" in text
    assert "\x1b[" not in text, text[:400]


def test_colours_on_a_terminal_only_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lifewatch._demo import wants_colour

    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, open(os.devnull, "w") as file:
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert wants_colour(terminal) and not wants_colour(file)
        monkeypatch.setenv("NO_COLOR", "1")
        assert not wants_colour(terminal)
        monkeypatch.setenv("NO_COLOR", "")  # set but empty: no-color.org says ignore it
        assert wants_colour(terminal)
    os.close(leader)
