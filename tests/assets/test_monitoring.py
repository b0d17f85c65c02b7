"""The Prometheus Operator resources: PodMonitor, PrometheusRule, dashboard ConfigMap.

Built for ``tests/apps/orders.py`` (namespace ``orders``, its own timeouts
and metrics path), written by ``to_yaml`` and read back by PyYAML: each has
what a cluster requires, agrees with the app's settings, the ConfigMap
passes the Kubernetes schema (kubernetes-validate, offline), and the
PrometheusRule's groups, once extracted, pass ``promtool check rules``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lifewatch._assets import (
    dashboard_config_map,
    pod_monitor,
    prometheus_rule,
    render_dashboard,
    to_yaml,
)
from tests.apps.orders import watch
from tests.support.servers import binary

DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def resources(**extra: Any) -> list[dict[str, Any]]:
    text = to_yaml(
        pod_monitor(watch, name="orders", **extra),
        prometheus_rule(watch, name="orders", **extra),
        dashboard_config_map(watch, name="orders-dashboard", **extra),
    )
    return list(yaml.safe_load_all(text))


def test_each_resource_has_what_a_cluster_requires() -> None:
    docs = resources(k8s_namespace="monitoring")
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("v1", "ConfigMap"),
    ]
    for d in docs:
        assert DNS_NAME.match(d["metadata"]["name"]), d["metadata"]
        assert d["metadata"]["namespace"] == "monitoring"
        assert all(isinstance(v, str) for v in d["metadata"]["labels"].values())
        assert "spec" in d or "data" in d
    kubernetes_validate.validate(docs[2], kubernetes_validate.latest_version(), strict=True)


def test_the_pod_monitor_scrapes_the_apps_metrics_path_on_the_named_port() -> None:
    (monitor,) = [d for d in resources() if d["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == watch.options.metrics_path == "/internal/metrics"
    assert endpoint["port"] == "http"
    assert monitor["spec"]["selector"] == {"matchLabels": {"app": "orders"}}
    ops = pod_monitor(watch, name="orders", port="ops", selector={"app": "shop"})
    assert ops["spec"]["podMetricsEndpoints"][0]["port"] == "ops"
    assert ops["spec"]["selector"] == {"matchLabels": {"app": "shop"}}


def test_the_rules_resource_holds_rules_for_the_apps_settings(tmp_path: Path) -> None:
    (rule,) = [
        d
        for d in resources(labels={"release": "kube-prometheus-stack"})
        if d["kind"] == "PrometheusRule"
    ]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rule["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run(
        [binary("promtool"), "check", "rules", "rules.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    # orders: startup_timeout=40, shutdown_timeout=12: slow at three quarters of each.
    assert "orders_startup_duration_seconds) > 30 " in rules["LifespanStartupSlow"]["expr"]
    assert "orders_shutdown_duration_seconds) > 9 " in rules["LifespanShutdownSlow"]["expr"]
    assert not re.search(r"\blifespan_\w", json.dumps(groups))


def test_the_dashboard_config_map_is_labelled_for_grafanas_sidecar() -> None:
    (cm,) = [d for d in resources() if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    # Written as a YAML block and read back byte for byte.
    assert cm["data"]["lifewatch.json"] == render_dashboard("orders", watch.options)
    dashboard = json.loads(cm["data"]["lifewatch.json"])
    assert dashboard["uid"] == "lifewatch-lifespan"
    assert "orders_state" in json.dumps(dashboard["templating"])
    (startup,) = [p for p in dashboard["panels"] if p["title"] == "Startup duration"]
    steps = startup["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 15, 30]
    other = dashboard_config_map(watch, name="d", label=("dashboards", "lifewatch"))
    assert other["metadata"]["labels"]["dashboards"] == "lifewatch"
    assert "grafana_dashboard" not in other["metadata"]["labels"]


def test_what_cannot_be_built_is_refused() -> None:
    from lifewatch import Lifewatch

    with pytest.raises(ValueError, match="metrics_path=None"):
        pod_monitor(Lifewatch(metrics_path=None), name="x")
    with pytest.raises(ValueError, match="Kubernetes object name"):
        prometheus_rule(watch, name="Orders_App")


def test_k8s_monitoring_adds_the_three_resources_beside_the_deployment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lifewatch.__main__ import main

    argv = ["k8s", "tests.apps.orders:app", "--monitoring", "--monitoring-label", "release=kps"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Generated by: python -m lifewatch k8s tests.apps.orders:app")
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["Deployment", "PodMonitor", "PrometheusRule", "ConfigMap"]
    deployment, monitor, rule, dashboard = docs
    pod = deployment["spec"]["template"]
    container_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    # The monitor selects the Deployment's pods, on one of their named ports.
    assert monitor["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in container_ports
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_k8s_says_what_is_wrong_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from lifewatch.__main__ import main

    for argv, wanted in (
        (["k8s", "no_such_module_here:app"], "no module named 'no_such_module_here'"),
        (["k8s", "tests.apps.orders:app", "--monitoring-label", "release"], "KEY=VALUE"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lifewatch k8s: ") and wanted in err, err
