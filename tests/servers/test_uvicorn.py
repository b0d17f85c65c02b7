"""A real uvicorn process: a failed startup exits non-zero and names the phase."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_uvicorn(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.apps.failing_startup:app",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--lifespan",
            "on",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("mode", "reason"), [("fail", "error"), ("hang", "timeout")])
def test_failed_startup_exits_non_zero_naming_the_phase(mode: str, reason: str) -> None:
    proc = run_uvicorn({"MODE": mode, "STARTUP_TIMEOUT": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    # One line, readable by a person scanning `kubectl logs`: which phase, why.
    server_lines = [
        line
        for line in output.splitlines()
        if "startup phase 'database' failed" in line and f"({reason})" in line
    ]
    assert server_lines, output
    if mode == "fail":
        # The exception itself (its type kept), then the note naming the phase.
        lines = output.splitlines()
        before = lines[lines.index(server_lines[-1]) - 1]
        assert before == "ConnectionRefusedError: postgres://db:5432 refused", output
    # And the structured record, for log pipelines.
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    failed = [r for r in records if r["event"] == "lifespan.startup.failed"]
    assert len(failed) == 1, output
    assert failed[0]["phase"] == "database" and failed[0]["service"] == "orders"
    assert failed[0]["reason"] == reason
    # Phases started before the failure were shut down (here: 'config' has no
    # shutdown part, so the rollback records the wrapper phase only).
    assert any(r["event"] == "lifespan.shutdown.complete" for r in records), output
