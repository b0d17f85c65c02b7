"""examples/kubernetes/deployment.yaml agrees with lifewatch's defaults."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

from lifewatch import Lifewatch

MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "deployment.yaml"


def defaults() -> dict[str, Any]:
    params = inspect.signature(Lifewatch.__init__).parameters
    return {name: p.default for name, p in params.items()}


def test_probes_use_lifewatch_paths_and_the_grace_period_covers_drain_and_shutdown() -> None:
    deployment = yaml.safe_load(MANIFEST.read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    d = defaults()
    assert container["startupProbe"]["httpGet"]["path"] == d["startupz_path"]
    assert container["readinessProbe"]["httpGet"]["path"] == d["readyz_path"]
    assert container["livenessProbe"]["httpGet"]["path"] == d["livez_path"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == d["metrics_path"]
    # Killed mid-shutdown otherwise: the grace period must outlast drain + shutdown.
    assert pod["terminationGracePeriodSeconds"] > d["drain_delay"] + d["shutdown_timeout"]
    # The readiness probe must see the drain's 503 before the drain ends.
    ready = container["readinessProbe"]
    assert ready["periodSeconds"] * ready.get("failureThreshold", 3) <= d["drain_delay"]
