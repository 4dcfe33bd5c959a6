"""The drill's event log: stamping, queries, phases, thread safety, JSON round trips, phase pairing."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.timeline import Event, PhaseSpan, Timeline, phase_spans, system_clock


class FakeClock:
    """Monotonic time advanced by hand; wall time is a fixed offset from it."""

    def __init__(self, now: float = 100.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> tuple[float, float]:
        t = self.now
        self.now += self.step
        return t, 1_700_000_000.0 + t


def test_record_stamps_both_clocks_and_keeps_a_copy_of_detail() -> None:
    clock = FakeClock(now=5.0)
    timeline = Timeline(clock)
    detail = {"kind": "cluster-loss"}
    event = timeline.record("fault.injected", cluster="eu-west", detail=detail)
    detail["kind"] = "changed"
    assert event == Event("fault.injected", 5.0, 1_700_000_005.0, "eu-west", {"kind": "cluster-loss"})
    assert timeline.events() == [event]


def test_system_clock_reads_monotonic_and_wall_time_together() -> None:
    mono_before, wall_before = time.monotonic(), time.time()
    mono, wall = system_clock()
    assert mono_before <= mono <= time.monotonic()
    assert wall_before <= wall <= time.time()


def test_events_first_and_last_filter_by_name() -> None:
    clock = FakeClock(step=1.0)
    timeline = Timeline(clock)
    timeline.record("fault.injected")
    timeline.record("failover.triggered", cluster="us-east")
    timeline.record("fault.injected", detail={"n": 2})
    assert [e.t_mono for e in timeline.events("fault.injected")] == [100.0, 102.0]
    assert [e.name for e in timeline.events()] == ["fault.injected", "failover.triggered", "fault.injected"]
    assert timeline.first("fault.injected").t_mono == 100.0
    assert timeline.last("fault.injected").detail == {"n": 2}
    assert timeline.first("restore.completed") is None
    assert timeline.last("restore.completed") is None


def test_phase_records_start_and_end() -> None:
    clock = FakeClock(step=1.5)
    timeline = Timeline(clock)
    with timeline.phase("restore", cluster="eu-west", detail={"backup": "b1"}) as start:
        assert start.name == "restore.start"
        timeline.record("restore.completed", cluster="eu-west")
    names = [(e.name, e.t_mono, e.cluster, e.detail) for e in timeline.events()]
    assert names == [
        ("restore.start", 100.0, "eu-west", {"backup": "b1"}),
        ("restore.completed", 101.5, "eu-west", {}),
        ("restore.end", 103.0, "eu-west", {"outcome": "ok"}),
    ]


def test_phase_records_end_when_the_block_raises() -> None:
    timeline = Timeline(FakeClock(step=1.0))
    with pytest.raises(RuntimeError, match="velero restore failed"), timeline.phase("restore"):
        raise RuntimeError("velero restore failed")
    end = timeline.last("restore.end")
    assert end is not None
    assert end.t_mono == 101.0
    assert end.detail == {"outcome": "error", "error": "RuntimeError: velero restore failed"}


def test_phase_records_end_on_keyboard_interrupt() -> None:
    timeline = Timeline(FakeClock(step=1.0))
    with pytest.raises(KeyboardInterrupt), timeline.phase("detection"):
        raise KeyboardInterrupt
    assert [e.name for e in timeline.events()] == ["detection.start", "detection.end"]
    assert timeline.events()[1].detail["outcome"] == "error"


def test_concurrent_records_are_all_kept_in_time_order() -> None:
    timeline = Timeline(FakeClock(step=0.001))
    threads_n, per_thread = 8, 250

    def work(i: int) -> None:
        for j in range(per_thread):
            timeline.record("probe.note", cluster=f"c{i}", detail={"j": j})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = timeline.events()
    assert len(events) == threads_n * per_thread
    times = [e.t_mono for e in events]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    for i in range(threads_n):
        assert [e.detail["j"] for e in events if e.cluster == f"c{i}"] == list(range(per_thread))


def test_to_dict_and_back_through_json() -> None:
    timeline = Timeline(FakeClock(step=2.0))
    timeline.record("fault.injected", cluster="eu-west", detail={"fault": "cluster-loss", "nodes": [1, 2]})
    with timeline.phase("failover"):
        pass
    data = json.loads(json.dumps(timeline.to_dict()))
    again = Timeline.from_dict(data)
    assert again.events() == timeline.events()
    assert again.to_dict() == timeline.to_dict()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=4,
)
events_strategy = st.builds(
    Event,
    name=st.text(min_size=1, max_size=20),
    t_mono=st.floats(0, 1e9, allow_nan=False),
    t_wall=st.floats(0, 2e9, allow_nan=False),
    cluster=st.none() | st.text(max_size=10),
    detail=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(events_strategy, max_size=5))
def test_any_timeline_survives_a_json_round_trip(events: list[Event]) -> None:
    timeline = Timeline(events=events)
    again = Timeline.from_dict(json.loads(json.dumps(timeline.to_dict())))
    assert again.events() == events


def _ev(name: str, t: float, cluster: str | None = None) -> Event:
    return Event(name, t, t, cluster)


def test_phase_spans_pair_by_name_and_cluster() -> None:
    events = [
        _ev("restore.start", 1, "a"),
        _ev("restore.start", 2, "b"),
        _ev("fault.injected", 2.5),
        _ev("restore.end", 3, "b"),
        _ev("restore.end", 4, "a"),
        _ev("readiness.start", 5),
    ]
    assert phase_spans(events) == [
        PhaseSpan("restore", "a", 1, 4),
        PhaseSpan("restore", "b", 2, 3),
        PhaseSpan("readiness", None, 5, None),
    ]
    assert [s.key for s in phase_spans(events)] == ["restore@a", "restore@b", "readiness"]


def test_phase_spans_pair_nested_phases_of_one_name_innermost_first() -> None:
    events = [_ev("step.start", 1), _ev("step.start", 2), _ev("step.end", 3), _ev("step.end", 4)]
    assert phase_spans(events) == [PhaseSpan("step", None, 1, 4), PhaseSpan("step", None, 2, 3)]


def test_phase_spans_order_events_by_monotonic_time() -> None:
    events = [_ev("detection.end", 4), _ev("detection.start", 1)]
    assert phase_spans(events) == [PhaseSpan("detection", None, 1, 4)]


def test_phase_spans_reject_an_end_without_start() -> None:
    with pytest.raises(ValueError, match=r"'restore.end' in cluster eu-west at 3 has no matching start"):
        phase_spans([_ev("restore.start", 1), _ev("restore.end", 3, "eu-west")])


def test_phase_spans_from_a_recorded_timeline() -> None:
    timeline = Timeline(FakeClock(step=1.0))
    with timeline.phase("detection"):
        timeline.record("failover.triggered")
    with timeline.phase("restore", cluster="eu-west"):
        pass
    assert phase_spans(timeline.events()) == [
        PhaseSpan("detection", None, 100.0, 102.0),
        PhaseSpan("restore", "eu-west", 103.0, 104.0),
    ]
