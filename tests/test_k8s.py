"""``python -m lifewatch k8s``: the wiring follows the settings and is valid against the schema."""

from __future__ import annotations

import math
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lifewatch import Lifewatch
from lifewatch._assets import to_yaml
from lifewatch._k8s import MARGIN_S, deployment


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"ops_address": "0.0.0.0:9000", "ops_only": True},
        {"drain_delay": 0, "startup_timeout": 60, "metrics_path": None},
        {"drain_path": None, "drain_delay": 2.5, "shutdown_timeout": 7},
    ],
)
def test_the_wiring_follows_the_settings_and_is_valid(options: dict[str, Any]) -> None:
    watch = Lifewatch(namespace=f"k{len(options)}", **options)
    watch.add_check("slow", lambda: None, timeout=2.0)
    manifest = deployment(watch, name="orders", image="orders:1", command=["uvicorn", "m:app"])
    validate(manifest)
    assert yaml.safe_load("# a comment\n" + to_yaml(manifest)) == manifest
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    o = watch.options
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == math.ceil(o.drain_delay + o.shutdown_timeout + MARGIN_S)
    port = "ops" if o.ops_address else "http"
    for key, path in (
        ("startupProbe", o.startupz_path),
        ("readinessProbe", o.readyz_path),
        ("livenessProbe", o.livez_path),
    ):
        assert container[key]["httpGet"] == {"path": path, "port": port}
    assert container["readinessProbe"]["timeoutSeconds"] >= 3  # the 2 s check fits
    assert container["livenessProbe"]["timeoutSeconds"] == 1
    ready = container["readinessProbe"]
    if o.drain_delay:
        assert ready["periodSeconds"] * ready["failureThreshold"] <= o.drain_delay
        hook = container["lifecycle"]["preStop"]["exec"]["command"]
        if o.drain_path:
            local = 9000 if o.ops_address else 8000
            assert hook[-1] == f"http://127.0.0.1:{local}{o.drain_path}"
            assert hook[:4] == ["python", "-m", "lifewatch", "drain"]
        else:
            assert hook == ["sleep", "2.5"]
    else:
        assert "lifecycle" not in container
    if o.startup_timeout:
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= o.startup_timeout


def test_an_invalid_manifest_is_caught_by_the_schema() -> None:
    """The validator is real: a misspelt field fails it."""
    manifest = deployment(Lifewatch(namespace="bad"), name="x", image="x", command=["x"])
    manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)
