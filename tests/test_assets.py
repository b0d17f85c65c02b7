"""_assets: where the assets are found, the metric prefix, thresholds, the YAML writer."""

from __future__ import annotations

import json

import pytest
import yaml
from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch
from lifewatch._assets import (
    Verbatim,
    asset_path,
    metric_families,
    rename_metrics,
    render_dashboard,
    render_rules,
    set_thresholds,
    thresholds,
    to_yaml,
)
from lifewatch._options import Options
from tests.support.servers import ROOT


def test_a_checkout_reads_the_top_level_grafana_folder() -> None:
    # Run from this tree's src: no lifewatch/grafana/ there, so the checkout's.
    assert asset_path("lifewatch.json") == str(ROOT / "grafana" / "lifewatch.json")
    assert asset_path("alerts.yaml") == str(ROOT / "grafana" / "alerts.yaml")
    assert asset_path("nothing.yaml") is None


def test_the_families_are_those_a_lifewatch_registers() -> None:
    registry = CollectorRegistry()
    Lifewatch(registry=registry, namespace="shop")
    assert set(metric_families("shop")) == {m.name for m in registry.collect()}
    assert all(f.startswith("lifespan_") for f in metric_families())


def test_every_family_and_sample_name_is_renamed_and_nothing_else() -> None:
    samples = []
    for family in metric_families():
        samples += [family] + [family + s for s in ("_total", "_bucket", "_sum", "_count")]
    text = " ".join(f'{s}{{job=~"$job"}}' for s in samples)
    renamed = rename_metrics(text, "orders")
    assert renamed == text.replace("lifespan_", "orders_")
    regex = '{__name__=~"lifespan_check_status|lifespan_state"}'
    assert rename_metrics(regex, "a:b") == '{__name__=~"a:b_check_status|a:b_state"}'
    untouched = (
        "lifespan_event lifespan.startup.failed LifespanStartupFailed push_time_seconds "
        "my_lifespan_state lifespan_state_other lifespan_statex x:lifespan_state lifespan_"
    )
    assert rename_metrics(untouched, "orders") == untouched
    assert rename_metrics(text, "lifespan") == text


@pytest.mark.parametrize("bad", ["9x", "a-b", "", "a b", "ö"])
def test_a_bad_namespace_is_refused_as_the_constructor_refuses_it(bad: str) -> None:
    with pytest.raises(ValueError) as by_constructor:
        Lifewatch(namespace=bad)
    with pytest.raises(ValueError) as by_renderer:
        rename_metrics("lifespan_state", bad)
    assert str(by_renderer.value) == str(by_constructor.value)


def test_thresholds_follow_the_settings() -> None:
    assert thresholds() == {
        "startup_slow": 60.0,
        "shutdown_slow": 15.0,
        "shutdown_timeout": 20.0,
        "drain_delay": 5.0,
    }
    t = thresholds(Options(startup_timeout=10, shutdown_timeout=8, drain_delay=0))
    assert (t["startup_slow"], t["shutdown_slow"], t["drain_delay"]) == (7.5, 6.0, 0.0)


def test_marked_numbers_are_set_and_unmarked_ones_kept() -> None:
    text = (
        "expr: x > 60  # lifewatch:startup_slow\n"
        "other: y > 60\n"
        "text: took {{/* lifewatch:shutdown_slow */}}15s"
        " of {{/* lifewatch:shutdown_timeout*0.5 */}}10s\n"
    )
    values = {"startup_slow": 7.5, "shutdown_slow": 30.0, "shutdown_timeout": 41.0}
    assert set_thresholds(text, values) == (
        "expr: x > 7.5  # lifewatch:startup_slow\n"
        "other: y > 60\n"
        "text: took {{/* lifewatch:shutdown_slow */}}30s"
        " of {{/* lifewatch:shutdown_timeout*0.5 */}}20.5s\n"
    )
    with pytest.raises(ValueError, match="unknown threshold marker lifewatch:nope"):
        set_thresholds("x > 1  # lifewatch:nope", values)


def test_rendered_with_the_defaults_the_assets_are_as_shipped() -> None:
    assert render_dashboard() == (ROOT / "grafana" / "lifewatch.json").read_text()
    header, rest = render_rules().split("\n", 1)
    assert header.startswith("# Rendered by `python -m lifewatch grafana`")
    assert rest == (ROOT / "grafana" / "alerts.yaml").read_text()
    dashboard = json.loads(render_dashboard("orders", Options(shutdown_timeout=60)))
    assert dashboard["uid"] == "lifewatch-lifespan"
    assert "orders_state" in json.dumps(dashboard) and "lifespan_state" not in json.dumps(dashboard)


@pytest.mark.parametrize(
    "value",
    [
        {"a": "plain", "b": "1", "c": "yes", "d": "x: y", "e": "#hash", "f": "", "g": " lead"},
        {"n": None, "t": True, "i": 3, "f": 1.5, "e": {}, "l": [], "u": "caf\u00e9 \u2028 x"},
        {"lines": "one\ntwo\n", "nolf": "one\n  two", "blank": "a\n\nb\n", "tail": "a\n\n"},
        {"quotes": "say \"hi\" 'x' \\ {x}", "list": [{"a": 1, "b": [1, "2", {"c": None}]}, "s"]},
        {"app.kubernetes.io/name": "orders", "nested": [[1, 2], []], "json": '{\n  "a": 1\n}\n'},
    ],
)
def test_to_yaml_reads_back_as_the_same_data(value: dict[str, object]) -> None:
    assert yaml.safe_load(to_yaml(value)) == value


def test_to_yaml_places_verbatim_yaml_and_separates_documents() -> None:
    text = to_yaml(
        {"kind": "A", "spec": Verbatim("# a comment\ngroups:\n  - name: x\n    rules: []\n")},
        {"kind": "B"},
    )
    assert list(yaml.safe_load_all(text)) == [
        {"kind": "A", "spec": {"groups": [{"name": "x", "rules": []}]}},
        {"kind": "B"},
    ]


def test_rendering_is_generic_over_the_panels_and_rules_the_files_hold() -> None:
    """A panel or a rule added later is renamed and follows its markers, untold."""
    panel = {
        "title": "new",
        "targets": [{"expr": "sum(rate(lifespan_check_failures_total[5m])) by (check)"}],
        "fieldConfig": {
            "defaults": {
                "thresholds": {
                    "steps": [{"value": 1, "lifewatchThreshold": "shutdown_slow*2"}],
                }
            }
        },
    }
    source = json.dumps({"uid": "u", "panels": [panel]})
    rendered = json.loads(render_dashboard("shop", Options(shutdown_timeout=4), source=source))
    (got,) = rendered["panels"]
    assert got["targets"][0]["expr"] == "sum(rate(shop_check_failures_total[5m])) by (check)"
    assert got["fieldConfig"]["defaults"]["thresholds"]["steps"][0]["value"] == 6
    rules = "groups:\n  - rules:\n      - expr: lifespan_state > 2  # lifewatch:drain_delay\n"
    assert render_rules("shop", Options(drain_delay=9), source=rules).endswith(
        "expr: shop_state > 9  # lifewatch:drain_delay\n"
    )


def test_the_dashboards_identity_and_variables_are_kept() -> None:
    shipped = json.loads((ROOT / "grafana" / "lifewatch.json").read_text())
    rendered = json.loads(render_dashboard("orders", Options(startup_timeout=5)))
    for key in ("uid", "title", "id", "schemaVersion", "tags"):
        assert rendered[key] == shipped[key], key
    before = {v["name"]: v for v in shipped["templating"]["list"]}
    after = {v["name"]: v for v in rendered["templating"]["list"]}
    assert after.keys() == before.keys() >= {"datasource", "job", "instance"}
    assert after["datasource"] == before["datasource"]
    for name in ("job", "instance"):
        for key in set(before[name]) - {"query", "definition"}:
            assert after[name][key] == before[name][key], (name, key)
        assert after[name]["definition"] == before[name]["definition"].replace(
            "lifespan_state", "orders_state"
        )
