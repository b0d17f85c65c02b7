"""Options are validated once and never change: nothing reads a stale copy."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry

from lifewatch import Lifewatch, Options


def test_the_options_are_frozen_and_the_facade_is_read_only() -> None:
    watch = Lifewatch(registry=CollectorRegistry(), drain_delay=2, expose_details=False)
    assert isinstance(watch.options, Options)
    assert watch.options.drain_delay == 2.0 and watch.drain_delay == 2.0
    with pytest.raises(AttributeError):
        watch.expose_details = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        watch.drain_delay = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        watch.options.expose_details = True  # type: ignore[misc]
    assert watch.expose_details is False


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


def test_options_compare_hash_and_show_as_the_dataclass_did() -> None:
    a, b = Options(service="orders", drain_delay=1), Options(service="orders", drain_delay=1.0)
    assert a == b and hash(a) == hash(b) and a != Options(service="orders")
    assert [f.name for f in dataclasses.fields(Options)][:2] == ["service", "registry"]
    assert repr(a).startswith("Options(service='orders', registry=None, namespace='lifespan',")
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.service
