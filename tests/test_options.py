"""Options are validated once and never change: nothing reads a stale copy."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch, Options


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
    """What a watch hands out is lifewatch's public types or plain values: an
    internal part reachable from it would freeze refactors."""
    import lifewatch

    watch = Lifewatch(registry=CollectorRegistry(), ops_address="127.0.0.1:0")
    watch.add_check("db", lambda: None)
    public = {getattr(lifewatch, name) for name in lifewatch.__all__ if name != "__version__"}
    for name in dir(watch):
        if name.startswith("_"):
            continue
        value = getattr(watch, name)
        if callable(value):
            continue
        kind = type(value)
        assert kind.__module__ in ("builtins", "lifewatch") or kind in public, (name, kind)
        if isinstance(value, dict):
            for item in value.values():
                assert type(item) in public, (name, type(item))
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
