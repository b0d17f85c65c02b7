"""Options are validated once and never change: nothing reads a stale copy."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from lifewatch import Lifewatch, LifewatchMiddleware, Options


def test_settings_are_read_in_one_place_the_frozen_options() -> None:
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=2, expose_details=False)
    assert isinstance(watch.options, Options)
    assert watch.options.drain_delay == 2.0 and watch.options.expose_details is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        watch.options.expose_details = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        watch.options = Options()  # type: ignore[misc]
    for setting in ("service", "drain_delay", "expose_details", "registry", "metrics_path"):
        assert not hasattr(watch, setting), setting


def test_no_internal_type_is_reachable_from_a_public_attribute() -> None:
    """What a watch and what it hands out show are lifewatch's public types or
    plain values: an internal part reachable from them would freeze refactors."""
    import lifewatch

    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0")
    watch.add_check("db", lambda: None)
    public = {getattr(lifewatch, name) for name in lifewatch.__all__ if name != "__version__"}
    handed_out = (
        watch,
        watch.lifespan(),
        watch.phase("x"),
        watch.checks["db"],
        LifewatchMiddleware(Starlette(), watch=watch),
    )
    for obj in handed_out:
        for name in dir(obj):
            value = getattr(obj, name)
            if name.startswith("_") or (callable(value) and not isinstance(value, type)):
                continue
            kind = type(value)
            assert kind.__module__ in ("builtins", "lifewatch") or kind in public, (obj, name)
            if isinstance(value, dict):
                assert all(type(item) in public for item in value.values()), (obj, name)
    for gone in ("lifecycle", "tracing", "metrics", "build", "routes", "middleware"):
        assert not hasattr(watch, gone), gone


def test_a_changed_copy_is_validated_too() -> None:
    options = Options(service="orders", drain_delay=1)
    assert dataclasses.replace(options, drain_delay=3).drain_delay == 3.0
    with pytest.raises(ValueError, match=r"drain_delay .* got -1"):
        dataclasses.replace(options, drain_delay=-1)
    with pytest.raises(ValueError, match="endpoint paths must differ"):
        Options(livez_path="/metrics")


def test_ops_address_is_validated() -> None:
    for bad in ("9000", "host", "0.0.0.0:http", "0.0.0.0:70000", ":9000", "[::1]9000", 9000):
        with pytest.raises(ValueError, match=r"ops_address must be 'host:port'"):
            Lifewatch(ops_address=bad, registry=CollectorRegistry())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"ops_only=True .* needs ops_address"):
        Lifewatch(ops_only=True, registry=CollectorRegistry())
    Lifewatch(ops_address="[::1]:0", registry=CollectorRegistry())


def test_options_compare_hash_and_show_as_a_dataclass() -> None:
    a, b = Options(service="orders", drain_delay=1), Options(service="orders", drain_delay=1.0)
    assert a == b and hash(a) == hash(b) and a != Options(service="orders")
    assert [f.name for f in dataclasses.fields(Options)][:2] == ["service", "registry"]
    assert repr(a).startswith("Options(service='orders', registry=None, namespace='lifespan',")
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.service
