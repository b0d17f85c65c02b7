"""The records sinks receive: plain classes that behave as the dataclasses they were."""

from __future__ import annotations

import dataclasses

import pytest

from lifewatch import Notice, PhaseRecord, RunRecord


def test_each_record_gets_its_own_lists_and_a_new_id() -> None:
    a, b = RunRecord("startup", "orders"), RunRecord("startup", "orders")
    a.phases.append(PhaseRecord("db", "startup", a, None, True, None))
    assert b.phases == [] and a.failures is not b.failures and a.sink_data is not b.sink_data
    assert b.id > a.id and a != b
    phase = a.phases[0]
    assert phase.tags == {} and phase.run is a and phase.duration is None
    phase.end = phase.start + 1.5
    assert phase.duration == 1.5
    assert "name='db'" in repr(phase) and "event='startup'" in repr(a)


def test_records_take_no_attribute_they_do_not_declare() -> None:
    # Sinks keep their own data in ``sink_data``, not in new attributes.
    with pytest.raises(AttributeError):
        RunRecord("startup", None).span = object()  # type: ignore[attr-defined]


def test_a_notice_is_frozen_every_sink_gets_the_same_one() -> None:
    notice = Notice("lifespan.drain.begin", fields={"delay": 5})
    assert notice.level == "info" and notice.error is None and notice.phase is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        notice.level = "error"
    assert Notice("x").fields == {} and "event='x'" in repr(Notice("x"))


@pytest.mark.parametrize(
    ("event", "outcome", "rollback", "last"),
    [
        ("startup", "ok", False, False),
        ("startup", "degraded", False, False),
        ("startup", "error", False, True),  # the process goes away
        ("startup", "timeout", False, True),
        ("shutdown", "ok", False, True),
        ("shutdown", "error", False, True),
        ("shutdown", "ok", True, False),  # the rollback of a failed startup: that one was last
    ],
)
def test_last_is_the_run_after_which_the_lifespan_is_over(
    event: str, outcome: str, rollback: bool, last: bool
) -> None:
    run = RunRecord(event, None, outcome=outcome, rollback=rollback)  # type: ignore[arg-type]
    assert run.last is last
