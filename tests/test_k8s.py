"""``python -m lifewatch k8s``: the wiring follows the settings and is valid against the schema."""

from __future__ import annotations

import math
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lifewatch import Lifewatch
from lifewatch.__main__ import main
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
        {"service": "orders-v2", "drain_delay": 2.5, "shutdown_timeout": 7},
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
        service = ["--service", o.service] if o.service else []
        assert hook == ["python", "-m", "lifewatch", "drain", *service]
        # The channel's directories: a writable /tmp even with readOnlyRootFilesystem.
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    else:
        assert "lifecycle" not in container and "volumes" not in pod
    if o.startup_timeout:
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= o.startup_timeout


def test_an_invalid_manifest_is_caught_by_the_schema() -> None:
    """The validator is real: a misspelt field fails it."""
    manifest = deployment(Lifewatch(namespace="bad"), name="x", image="x", command=["x"])
    manifest["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)


@pytest.mark.parametrize("address", ["127.0.0.1:9000", "localhost:9000", "[::1]:9000"])
def test_an_ops_listener_on_loopback_is_refused_in_one_line(
    address: str, capsys: pytest.CaptureFixture[str], tmp_path: Any, monkeypatch: Any
) -> None:
    """The kubelet probes the pod's IP: probes on a loopback listener would
    keep the pod unready forever, so the command says so and writes nothing."""
    module = f"loopback_app_{abs(hash(address))}"
    (tmp_path / f"{module}.py").write_text(
        "from lifewatch import Lifewatch\n"
        "from starlette.applications import Starlette\n"
        f"watch = Lifewatch(namespace='loop', ops_address={address!r})\n"
        "app = watch.instrument(Starlette())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["k8s", f"{module}:app"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"lifewatch k8s: ops_address={address!r} listens on loopback only")
