"""Alert rules rendered for a namespace and an app's settings, checked with promtool.

What ``python -m lifewatch grafana`` writes (the README's commands are these).

The rule tests are rendered too: ``tests/assets/promtool/alerts_test.yaml``
with every series renamed by the same code, so each alert still fires and
stays silent on ``orders_*`` series. Thresholds rendered from an app's
settings are proven by promtool (a value just above fires, just below does
not) and by the annotations, which must quote the same settings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifewatch._assets import rename_metrics
from tests.support.servers import ROOT, binary, env

UNIT_TESTS = ROOT / "tests" / "assets" / "promtool" / "alerts_test.yaml"
SETTINGS = "startup_timeout=20, shutdown_timeout=40, drain_delay=3"
# What the settings above mean for the thresholds, worked out by hand.
STARTUP_SLOW, SHUTDOWN_SLOW = 15, 30


def lifewatch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifewatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env(),
    )


def promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "SUCCESS" in out, out
    return out


def app_module(tmp: Path, settings: str = SETTINGS, namespace: str = "svc") -> str:
    (tmp / "svcapp.py").write_text(
        "from starlette.applications import Starlette\n"
        "from lifewatch import Lifewatch\n"
        f"watch = Lifewatch(service='svc', namespace={namespace!r}, {settings})\n"
        "app = watch.instrument(Starlette())\n"
    )
    return "svcapp:app"


def test_rules_and_their_unit_tests_rendered_for_a_namespace_pass_promtool(
    tmp_path: Path,
) -> None:
    done = lifewatch("grafana", "--namespace", "orders", "--rules")
    assert done.returncode == 0, done.stderr
    (tmp_path / "alerts.yaml").write_text(done.stdout)
    assert not re.search(r"\blifespan_\w", done.stdout), "a metric name was left unrenamed"
    tests = rename_metrics(UNIT_TESTS.read_text(), "orders")
    tests = tests.replace("../../../grafana/alerts.yaml", "alerts.yaml")
    assert "alerts.yaml" in tests and "orders_state{" in tests
    assert not re.search(r"\blifespan_\w+[{']", tests), "a series was left unrenamed"
    (tmp_path / "alerts_test.yaml").write_text(tests)

    promtool("check", "rules", "alerts.yaml", cwd=tmp_path)
    promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    # And the renamed tests against the shipped (lifespan_) rules fail: they test something.
    (tmp_path / "alerts.yaml").write_text((ROOT / "grafana" / "alerts.yaml").read_text())
    with pytest.raises(AssertionError):
        promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)


def rules_of(text: str) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}


def test_thresholds_rendered_from_an_app_agree_with_its_settings(tmp_path: Path) -> None:
    done = lifewatch("grafana", "--app", app_module(tmp_path), "--rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rules = rules_of(done.stdout)
    startup = rules["LifespanStartupSlow"]
    shutdown = rules["LifespanShutdownSlow"]
    assert f"> {STARTUP_SLOW} " in startup["expr"]
    assert f"(threshold {{{{/* lifewatch:startup_slow */}}}}{STARTUP_SLOW}s)" in " ".join(
        startup["annotations"]["description"].split()
    )
    described = " ".join(shutdown["annotations"]["description"].split())
    for wanted in (
        f"more than {{{{/* lifewatch:shutdown_slow */}}}}{SHUTDOWN_SLOW}s",
        "shutdown_timeout ({{/* lifewatch:shutdown_timeout */}}40s)",
        "the {{/* lifewatch:drain_delay */}}3s drain",
    ):
        assert wanted in described, described
    assert f"> {SHUTDOWN_SLOW} " in shutdown["expr"]

    # promtool: just above each threshold fires, just below stays silent. The
    # annotations are checked above; here only what fires, so they are dropped.
    groups = yaml.safe_load(done.stdout)["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yaml").write_text(json.dumps({"groups": groups}))
    cases = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'svc_startup_duration_seconds{{job="api",instance="{name}"}}',
                        "values": f"_x5 {value}x40",
                    }
                    for name, value in (("above", STARTUP_SLOW + 0.5), ("below", STARTUP_SLOW))
                ]
                + [
                    {
                        "series": f'svc_shutdown_duration_seconds{{job="api",instance="{name}"}}',
                        "values": f"{value}x20",
                    }
                    for name, value in (("above", SHUTDOWN_SLOW + 0.5), ("below", SHUTDOWN_SLOW))
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": "api",
                                    "instance": "above",
                                }
                            }
                        ],
                    }
                    for alert in ("LifespanStartupSlow", "LifespanShutdownSlow")
                ],
            }
        ],
    }
    (tmp_path / "thresholds_test.yaml").write_text(json.dumps(cases))
    promtool("test", "rules", "thresholds_test.yaml", cwd=tmp_path)


def test_dashboard_thresholds_rendered_from_an_app_agree_with_its_settings(
    tmp_path: Path,
) -> None:
    done = lifewatch("grafana", "--app", app_module(tmp_path), "--dashboard", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    dashboard = json.loads(done.stdout)
    steps = {
        p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        for p in dashboard["panels"]
        if "thresholds" in p.get("fieldConfig", {}).get("defaults", {})
    }
    assert steps["Startup duration"] == [None, STARTUP_SLOW / 2, STARTUP_SLOW]
    assert steps["Time to ready"] == [None, STARTUP_SLOW / 2, STARTUP_SLOW]
    assert steps["Shutdown duration per instance"] == [None, 20, 40]
    # Every marked step follows a setting; none is left as shipped by mistake.
    marked = [
        s
        for p in dashboard["panels"]
        for s in p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        if "lifewatchThreshold" in s
    ]
    assert len(marked) == 6
    assert dashboard["uid"] == "lifewatch-lifespan"
    assert "svc_state" in json.dumps(dashboard["templating"])


def test_without_a_startup_timeout_startup_is_slow_past_60s(tmp_path: Path) -> None:
    module = app_module(tmp_path, settings="shutdown_timeout=8")
    done = lifewatch("grafana", "--app", module, "--rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rules = rules_of(done.stdout)
    assert "> 60 " in rules["LifespanStartupSlow"]["expr"]
    assert "> 6 " in rules["LifespanShutdownSlow"]["expr"]


def test_out_writes_the_files_asked_and_stdout_needs_one(tmp_path: Path) -> None:
    done = lifewatch("grafana", "--rules", "--out", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["alerts.yaml"]
    assert "wrote " in done.stderr and done.stdout == ""
    done = lifewatch("grafana")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "lifewatch grafana: say --dashboard or --rules to print one file, or --out DIR for both\n"
    )


def test_a_bad_namespace_is_refused_as_the_constructor_refuses_it() -> None:
    from lifewatch import Lifewatch

    with pytest.raises(ValueError) as constructor:
        Lifewatch(namespace="orders-v2")
    done = lifewatch("grafana", "--namespace", "orders-v2", "--rules")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"lifewatch grafana: {constructor.value}\n"


def test_a_namespace_given_beside_an_app_wins_and_the_thresholds_stay_the_apps(
    tmp_path: Path,
) -> None:
    module = app_module(tmp_path)
    done = lifewatch("grafana", "--app", module, "--namespace", "other", "--rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rules = rules_of(done.stdout)
    assert (
        f"(other_startup_duration_seconds) > {STARTUP_SLOW} "
        in rules["LifespanStartupSlow"]["expr"]
    )
