"""grafana/alerts.yaml passes promtool's checks and its unit tests."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.servers import ROOT, binary

RULES = ROOT / "grafana" / "alerts.yaml"
UNIT_TESTS = ROOT / "tests" / "assets" / "promtool" / "alerts_test.yaml"
ALERTS = {
    "LifespanStartupFailed",
    "LifespanStartupSlow",
    "LifespanNotReady",
    "LifespanReadinessFlapping",
    "LifespanCheckFailing",
    "LifespanShutdownSlow",
    "LifespanVersionStartsSlower",
}


@pytest.mark.parametrize(
    "argv",
    [["check", "rules", str(RULES)], ["test", "rules", str(UNIT_TESTS)]],
    ids=["check", "test"],
)
def test_promtool(argv: list[str]) -> None:
    done = subprocess.run([binary("promtool"), *argv], capture_output=True, timeout=60, cwd=ROOT)
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, out
    assert "SUCCESS" in out


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    rules = RULES.read_text()
    assert set(re.findall(r"- alert: (\w+)", rules)) == ALERTS
    assert rules.count("summary:") == rules.count("description:") == len(ALERTS)
    tests = UNIT_TESTS.read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n", tests))
    silent = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests))
    assert firing == ALERTS, f"not shown firing: {ALERTS - firing}"
    assert silent == ALERTS, f"not shown silent: {ALERTS - silent}"
