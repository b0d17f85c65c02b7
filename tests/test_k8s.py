"""``python -m lifewatch k8s``: the one Lifewatch found, the wiring valid against the schema."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lifewatch import Lifewatch
from lifewatch.__main__ import main
from lifewatch._k8s import MARGIN_S, NotFound, deployment, find_watch, to_yaml

APP = """
from starlette.applications import Starlette
from lifewatch import Lifewatch
{body}
"""


def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(APP.format(body=body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_finds_the_one_lifewatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = module(
        tmp_path,
        monkeypatch,
        "one_watch",
        "watch = Lifewatch(service='a', registry=None, namespace='one')\n"
        "app = watch.instrument(Starlette())",
    )
    found = find_watch(f"{name}:app")
    assert found.watch.service == "a" and found.module == name
    # Found behind the app alone, without a global.
    name = module(
        tmp_path,
        monkeypatch,
        "hidden_watch",
        "from lifewatch import LifewatchMiddleware\n"
        "app = LifewatchMiddleware(Starlette(), watch=Lifewatch(service='h', namespace='hid'))",
    )
    assert find_watch(name).watch.service == "h"  # ':app' is the default


@pytest.mark.parametrize(
    ("body", "target", "says"),
    [
        ("app = Starlette()", "none_watch:app", "no Lifewatch found in 'none_watch'"),
        (
            "a = Lifewatch(namespace='two_a')\nb = Lifewatch(namespace='two_b')\napp = Starlette()",
            "two_watch:app",
            "2 Lifewatch objects found for 'two_watch:app'",
        ),
        ("app = Starlette()", "no_such_module:app", "no module named 'no_such_module'"),
        (
            "app = Starlette()",
            "no_attr:application",
            "module 'no_attr' has no attribute 'application'",
        ),
        ("raise RuntimeError('boom')", "broken_mod:app", "importing 'broken_mod' failed"),
    ],
)
def test_one_line_and_exit_2_when_there_is_not_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
    target: str,
    says: str,
) -> None:
    if not target.startswith("no_such"):
        module(tmp_path, monkeypatch, target.split(":")[0], body)
    with pytest.raises(NotFound, match=says):
        find_watch(target)
    assert main(["k8s", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lifewatch k8s: {says}"), err


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
    assert yaml.safe_load(to_yaml(manifest, ["a comment"])) == manifest
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
