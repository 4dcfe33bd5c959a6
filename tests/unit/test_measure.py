"""Measurements against brute-force references written straight from ARCHITECTURE.md, plus hand-made edge
cases.

Property tests use integer-valued times so the reference and the implementation compute the same floats.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import measure as m
from harness.samples import Coverage, ProbeSample, SentinelWrite, WriteOutcome
from harness.timeline import Event

FAST = settings(max_examples=200, deadline=None)
T0 = 1000.0


def probe(sent: float, kind: str = "ok", latency: float = 0.01, target: str = "global") -> ProbeSample:
    """A probe of one kind: ok (200), 4xx (404), 5xx (503), timeout (no answer)."""
    if kind == "timeout":
        return ProbeSample.of(target, sent, sent + latency, ok=False, error="timed out")
    status = {"ok": 200, "4xx": 404, "5xx": 503}[kind]
    return ProbeSample.of(target, sent, sent + latency, status=status, served_by="eu-west")


def written(seq: int, acked_at: float | None, outcome: WriteOutcome = "unknown") -> SentinelWrite:
    """A sentinel write: acked at acked_at when given, else with `outcome` (refused or unknown)."""
    if acked_at is not None:
        return SentinelWrite(seq, acked_at, "acked", acked_at)
    return SentinelWrite(seq, None, outcome)


# --- brute-force references, written from the definitions without cleverness ---------------------------


def ref_failed(s: ProbeSample, bound: float | None) -> bool:
    connection_error_or_timeout = not s.ok
    is_5xx = s.status is not None and s.status // 100 == 5
    too_slow = bound is not None and s.latency > bound
    return connection_error_or_timeout or is_5xx or too_slow


def ordered(samples: list[ProbeSample]) -> list[ProbeSample]:
    return sorted(samples, key=lambda s: (s.sent, s.received))


def ref_windows(samples: list[ProbeSample], bound: float | None) -> list[tuple]:
    xs = ordered(samples)
    f = [ref_failed(x, bound) for x in xs]
    n = len(xs)
    found = []
    for i in range(n):
        for j in range(i, n):
            maximal = (i == 0 or not f[i - 1]) and (j == n - 1 or not f[j + 1])
            if all(f[i : j + 1]) and maximal:
                end = xs[j + 1].sent if j + 1 < n else max(x.received for x in xs[i : j + 1])
                found.append((xs[i].sent, end, j - i + 1, j + 1 < n))
    return found


def ref_rto(samples: list[ProbeSample], t0: float, count: int, seconds: float, bound: float | None) -> tuple:
    xs = [x for x in ordered(samples) if x.sent >= t0]
    f = [ref_failed(x, bound) for x in xs]
    if not xs:
        return ("no_data", None, None)
    if not any(f):
        return ("no_failure", 0.0, None)
    last_failure = max(x.sent for x, bad in zip(xs, f, strict=True) if bad)
    for i in range(len(xs)):  # every candidate start of a stable recovery
        if any(f[i:]):  # it must come after the last failure
            continue
        for j in range(i, len(xs)):
            if j - i + 1 >= count and xs[j].sent - xs[i].sent >= seconds:
                return ("recovered", xs[i].sent - t0, last_failure)
    return ("not_recovered", None, last_failure)


def ref_rpo(writes: list[SentinelWrite], present: set[int], t0: float) -> tuple:
    pre = [w for w in writes if w.acked_at is not None and w.acked_at < t0]
    lost = sorted(w.seq for w in pre if w.seq not in present)
    holes = [s for s in lost if any(w.seq in present and w.seq > s for w in writes)]
    if not pre:
        return None, lost, holes

    def earlier(a: SentinelWrite, b: SentinelWrite) -> bool:
        return (a.acked_at, a.seq) < (b.acked_at, b.seq)

    intact = [w for w in pre if w.seq in present and all(v.seq in present for v in pre if earlier(v, w))]
    if not lost:
        value = 0.0
    elif intact:
        value = t0 - max(intact, key=lambda w: (w.acked_at, w.seq)).acked_at
    else:
        value = t0 - min(w.acked_at for w in pre)
    return value, lost, holes


def ref_percentile(values: list[float], p: float) -> float:
    n = len(values)
    return min(v for v in values if 100 * sum(x <= v for x in values) >= Fraction(str(p)) * n)


# --- strategies ----------------------------------------------------------------------------------------

kinds = st.sampled_from(["ok", "ok", "ok", "ok", "4xx", "5xx", "timeout"])


@st.composite
def series(draw: st.DrawFn, max_size: int = 30) -> list[ProbeSample]:
    """Probes at integer times (ties allowed), mostly ok, sometimes a long ok tail."""
    n = draw(st.integers(0, max_size))
    sends = sorted(draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)))
    cut = draw(st.integers(0, n))  # from here on every probe is ok, so recoveries happen often
    return [
        probe(float(t), "ok" if i >= cut else draw(kinds), latency=float(draw(st.integers(0, 8))))
        for i, t in enumerate(sends)
    ]


bounds = st.none() | st.integers(0, 8).map(float)


# --- probe classification ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "bound", "failed"),
    [
        (probe(0, "ok"), None, False),
        (probe(0, "4xx"), None, False),
        (probe(0, "5xx"), None, True),
        (probe(0, "timeout"), None, True),
        (ProbeSample.of("g", 0, 1, ok=False, error="connection refused"), None, True),
        (ProbeSample.of("g", 0, 1, status=599), None, True),
        (ProbeSample.of("g", 0, 1, status=302), None, False),
        (probe(0, "ok", latency=2.0), 2.0, False),
        (probe(0, "ok", latency=2.5), 2.0, True),
        (probe(0, "4xx", latency=2.5), 2.0, True),
    ],
)
def test_probe_failed(sample: ProbeSample, bound: float | None, failed: bool) -> None:
    assert m.probe_failed(sample, bound) is failed


def test_records_round_trip_through_json_and_check_themselves() -> None:
    sample = probe(3.0, "5xx", latency=0.25)
    assert ProbeSample.from_dict(json.loads(json.dumps(sample.to_dict()))) == sample
    for write in (written(7, None), written(8, None, "refused"), written(9, 2.5)):
        assert SentinelWrite.from_dict(json.loads(json.dumps(write.to_dict()))) == write
    with pytest.raises(ValueError, match="acked_at is set exactly when the write was acked"):
        SentinelWrite(7, None, "acked")
    with pytest.raises(ValueError, match="acked_at is set exactly when the write was acked"):
        SentinelWrite(7, 2.5, "refused")
    with pytest.raises(ValueError, match="unknown outcome 'lost'"):
        SentinelWrite(7, None, "lost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency 5 is not received - sent"):
        ProbeSample("g", 1.0, 2.0, True, 200, None, 5, None)
    with pytest.raises(ValueError, match=r"received at 1\.0 before sent at 2\.0"):
        ProbeSample.of("g", 2.0, 1.0)


def test_sentinel_records_from_before_outcomes_load() -> None:
    lines = ['{"seq": 1, "acked_at": 2.5}', '{"seq": 2, "acked_at": null}']
    loaded = [SentinelWrite.from_dict(json.loads(line)) for line in lines]
    assert loaded == [SentinelWrite(1, 2.5, "acked"), SentinelWrite(2, None, "unknown")]
    assert loaded[1].ended_at is None  # not recorded then: the split-brain check treats it as late


# --- outage windows ------------------------------------------------------------------------------------


@FAST
@given(series(), bounds)
def test_outage_windows_match_reference(samples: list[ProbeSample], bound: float | None) -> None:
    windows = m.outage_windows(samples, bound)
    assert [(w.start, w.end, w.failed_count, w.closed) for w in windows] == ref_windows(samples, bound)
    assert sum(w.failed_count for w in windows) == sum(ref_failed(s, bound) for s in samples)
    longest = m.longest_outage(samples, bound)
    assert (longest.duration if longest else None) == max((w.duration for w in windows), default=None)


def test_outage_windows_by_hand() -> None:
    samples = [
        probe(0),
        probe(1, "timeout", latency=2),
        probe(2, "5xx"),
        probe(3),
        probe(4, "5xx"),
        probe(5),
        probe(6, "timeout", latency=3),
        probe(7, "5xx", latency=0.5),
    ]
    windows = m.outage_windows(samples)
    assert [(w.start, w.end, w.failed_count, w.closed) for w in windows] == [
        (1, 3, 2, True),
        (4, 5, 1, True),
        (6, 9, 2, False),  # no probe followed: the last receive time of the run
    ]
    longest = m.longest_outage(samples)
    assert (longest.start, longest.duration) == (6, 3)
    assert m.longest_outage([probe(0), probe(1)]) is None


def test_series_of_several_targets_are_refused() -> None:
    with pytest.raises(ValueError, match=r"got \['eu-west', 'global'\]: filter samples by target first"):
        m.outage_windows([probe(0), probe(1, target="eu-west")])


# --- RTO -----------------------------------------------------------------------------------------------


@FAST
@given(series(), st.integers(-5, 60), st.integers(1, 5), st.integers(0, 10), bounds)
def test_rto_matches_reference(
    samples: list[ProbeSample], t0: int, count: int, seconds: int, bound: float | None
) -> None:
    result = m.rto(samples, float(t0), count, float(seconds), bound)
    outcome, value, last_failure = ref_rto(samples, float(t0), count, float(seconds), bound)
    assert (result.outcome, result.rto, result.last_failure) == (outcome, value, last_failure)
    if outcome == "recovered":
        assert result.recovery_start == t0 + value
        assert result.stable_probes >= count
        assert result.stable_span >= seconds


def regular(start: float, stop: float, step: float, kind: str = "ok") -> list[ProbeSample]:
    n = round((stop - start) / step)
    return [probe(start + i * step, kind) for i in range(n)]


def test_rto_recovered_message_quotes_the_deciding_moments() -> None:
    samples = [probe(T0 + 0.9 + i, "timeout") for i in range(39)]  # failures up to +38.9 s
    samples += [probe(T0 + 41.2 + k / 9) for k in range(10)]  # 10 probes over 1.0 s
    samples += [probe(T0 + 43.2 + i) for i in range(17)]
    result = m.rto(samples, T0, stable_count=10, stable_seconds=1.0)
    assert result.outcome == "recovered"
    assert result.rto == pytest.approx(41.2)
    assert result.last_failure == pytest.approx(T0 + 38.9)
    assert (result.stable_probes, result.stable_span) == (10, pytest.approx(1.0))
    assert (result.probes, result.failed) == (66, 39)
    coverage = m.check_coverage(samples, T0, T0 + 60, expected_interval=1.0)
    assert coverage.ok, coverage.problems
    verdict = m.judge_rto(result, 30, coverage)
    assert verdict.status == "fail"
    assert verdict.message == (
        "RTO 41.2 s exceeds objective 30 s: last failure at +38.9 s (timed out), "
        "stable from +41.2 s (10 probes over 1.0 s)"
    )
    assert verdict.moments == {"t0": T0, "last_failure": result.last_failure, "recovery_start": T0 + 41.2}
    assert (verdict.expected, verdict.measured) == ("<= 30 s", "41.2 s")
    assert m.judge_rto(result, 45, coverage).status == "pass"
    json.dumps(verdict.to_dict())
    json.dumps(result.to_dict())


def test_rto_needs_both_count_and_seconds() -> None:
    samples = [probe(T0 + 1, "5xx"), *(probe(T0 + t) for t in (2, 3, 4, 5, 6, 7))]
    # 2 probes suffice by count, but their sends must span 3 s: 2..5
    result = m.rto(samples, T0, stable_count=2, stable_seconds=3)
    assert (result.rto, result.recovery_start, result.stable_probes, result.stable_span) == (2, T0 + 2, 4, 3)
    # 6 probes by count: 2..7 (span 5 s >= 3 s)
    assert m.rto(samples, T0, stable_count=6, stable_seconds=3).stable_probes == 6
    assert m.rto(samples, T0, stable_count=7, stable_seconds=3).outcome == "not_recovered"


def test_rto_counts_from_the_last_failure_even_after_a_stable_stretch() -> None:
    samples = [probe(T0 + 1, "5xx"), *(probe(T0 + t) for t in range(2, 20)), probe(T0 + 20, "timeout")]
    samples += [probe(T0 + t) for t in range(21, 30)]
    result = m.rto(samples, T0, stable_count=3, stable_seconds=0)
    assert (result.rto, result.last_failure) == (21, T0 + 20)


def test_a_series_ends_stable_after_its_last_failure_or_over_enough_probes_without_one() -> None:
    failing_first = [probe(T0, "5xx"), *(probe(T0 + t) for t in (1, 2, 3))]
    assert m.ends_stable(failing_first, stable_count=3, stable_seconds=2)
    assert not m.ends_stable(failing_first, stable_count=3, stable_seconds=3)  # 1..3 spans 2 s
    assert not m.ends_stable([*failing_first, probe(T0 + 4, "timeout")], stable_count=1, stable_seconds=0)
    never_failed = [probe(T0 + t) for t in (1, 2, 3)]
    assert m.ends_stable(never_failed, stable_count=3, stable_seconds=2)
    assert not m.ends_stable(never_failed, stable_count=4, stable_seconds=0)
    assert not m.ends_stable(never_failed, stable_count=3, stable_seconds=2.5)
    assert not m.ends_stable([], stable_count=1, stable_seconds=0)


def test_rto_is_zero_without_failures() -> None:
    samples = regular(T0, T0 + 10, 0.5)
    result = m.rto(samples, T0, stable_count=5, stable_seconds=1)
    assert (result.outcome, result.rto, result.last_failure, result.recovery_start) == (
        "no_failure",
        0,
        None,
        None,
    )
    verdict = m.judge_rto(result, 30, m.check_coverage(samples, T0, T0 + 10, 0.5))
    assert (verdict.status, verdict.measured) == ("pass", "0 s")
    assert verdict.message == "RTO 0 s within objective 30 s: no probe failed after t0 (20 probes)"


def test_rto_ignores_failures_before_t0() -> None:
    samples = regular(T0 - 5, T0, 0.5, "timeout") + regular(T0, T0 + 10, 0.5)
    result = m.rto(samples, T0, stable_count=5, stable_seconds=1)
    assert (result.outcome, result.rto, result.probes, result.failed) == ("no_failure", 0, 20, 0)


def test_rto_never_recovered_is_a_failure_without_a_number() -> None:
    samples = regular(T0, T0 + 10, 0.5, "5xx") + regular(T0 + 10, T0 + 11, 0.5)
    result = m.rto(samples, T0, stable_count=5, stable_seconds=2)
    assert (result.outcome, result.rto, result.recovery_start) == ("not_recovered", None, None)
    assert (result.last_failure, result.stable_probes, result.stable_span) == (T0 + 9.5, 2, 0.5)
    verdict = m.judge_rto(result, 1000, m.check_coverage(samples, T0, T0 + 11, 0.5))
    assert (verdict.status, verdict.measured) == ("fail", "not recovered")
    assert verdict.message == (
        "RTO objective 1000 s not met: not recovered; last failure at +9.5 s (HTTP 503), "
        "then 2 probes over 0.500 s succeeded; stable recovery needs 5 probes over 2 s"
    )


def test_rto_slow_answers_are_failures_under_a_latency_bound() -> None:
    samples = [probe(T0 + t, latency=3.0 if t < 5 else 0.1) for t in range(10)]
    assert m.rto(samples, T0, 3, 0).rto == 0
    assert m.rto(samples, T0, 3, 0, latency_bound=2.0).rto == 5


def test_rto_without_probes_after_t0_is_an_error() -> None:
    samples = regular(T0 - 10, T0, 1.0)
    result = m.rto(samples, T0, stable_count=3, stable_seconds=1)
    assert (result.outcome, result.rto) == ("no_data", None)
    coverage = Coverage(T0, T0 + 10, 1.0, 10, ())  # even if a caller passes good coverage
    verdict = m.judge_rto(result, 30, coverage)
    assert verdict.status == "error"
    assert verdict.message == "RTO not judged: no probe sent after t0"


def test_rto_with_a_probe_gap_is_an_error_not_a_pass() -> None:
    samples = regular(T0, T0 + 5, 0.5) + regular(T0 + 20, T0 + 30, 0.5)
    result = m.rto(samples, T0, stable_count=3, stable_seconds=1)
    assert result.rto == 0  # no probe failed: but none was sent for 15 s
    verdict = m.judge_rto(result, 30, m.check_coverage(samples, T0, T0 + 30, 0.5))
    assert (verdict.status, verdict.measured) == ("error", "not measured")
    assert verdict.message == (
        "RTO not judged: the probes do not cover the window: no probe sent from +4.5 s to +20.0 s "
        "(15.5 s, more than 3 x the 0.5 s interval); 30 probes sent, fewer than 80% of the 60 expected "
        "(one per 0.5 s)"
    )


def test_rto_rejects_impossible_stability() -> None:
    with pytest.raises(ValueError, match="stable_count >= 1"):
        m.rto([], T0, stable_count=0, stable_seconds=1)


# --- RPO -----------------------------------------------------------------------------------------------


@st.composite
def sentinel(draw: st.DrawFn) -> tuple[list[SentinelWrite], set[int], float]:
    seqs = draw(st.lists(st.integers(0, 40), unique=True, max_size=15))
    acks = st.none() | st.integers(0, 30).map(float)
    writes = [written(s, draw(acks)) for s in seqs]
    present = draw(st.sets(st.sampled_from(seqs))) if seqs else set()
    present |= draw(st.sets(st.integers(41, 45), max_size=2))  # seqs read back that this drill never wrote
    return writes, present, float(draw(st.integers(0, 32)))


@FAST
@given(sentinel())
def test_rpo_matches_reference(case: tuple[list[SentinelWrite], set[int], float]) -> None:
    writes, present, t0 = case
    result = m.rpo(writes, present, t0)
    value, lost, holes = ref_rpo(writes, present, t0)
    assert (result.rpo, list(result.lost), list(result.holes)) == (value, lost, holes)
    assert result.lost_count == len(lost)
    if value is not None:
        assert (value == 0) == (not lost)
        assert value >= 0


def writes_every_second(n: int, first_ack: float = T0 - 10) -> list[SentinelWrite]:
    return [written(i, first_ack + i) for i in range(n)]


def test_rpo_with_holes() -> None:
    writes = writes_every_second(10)  # acked at -10 .. -1 s
    result = m.rpo(writes, {0, 1, 2, 5, 6, 7}, T0)
    assert result.rpo == 8  # intact up to #2, acked at -8 s
    assert (result.lost, result.holes, result.lost_count) == ((3, 4, 8, 9), (3, 4), 4)
    assert (result.last_survivor, result.first_lost) == (writes[2], writes[3])
    assert result.lower_bound is False
    verdict = m.judge_rpo(result, 5, max_quiet_s=2)
    assert (verdict.status, verdict.measured) == ("fail", "8.0 s")
    assert verdict.message == (
        "RPO 8.0 s exceeds objective 5 s: 4 of 10 writes acknowledged before t0 lost, the first #3 acked at "
        "-7.0 s; intact up to #2 acked at -8.0 s; 2 holes below the newest surviving write: #3, #4"
    )
    assert verdict.moments == {
        "t0": T0,
        "newest_ack": T0 - 1,
        "last_survivor_ack": T0 - 8,
        "first_lost_ack": T0 - 7,
    }


def test_rpo_orders_writes_by_ack_time() -> None:
    writes = [written(0, T0 - 5), written(1, T0 - 9), written(2, T0 - 7)]
    result = m.rpo(writes, {1, 0}, T0)  # #2 (acked -7 s) lost: only #1 (-9 s) precedes it
    assert (result.rpo, result.last_survivor, result.holes) == (9, writes[1], ())


def test_rpo_is_zero_when_nothing_was_lost() -> None:
    writes = [*writes_every_second(10), written(10, None), written(11, T0 + 1)]
    result = m.rpo(writes, set(range(10)), T0)  # the unacked and the post-fault writes are gone: no loss
    assert (result.rpo, result.lost, result.pre_fault, result.newest_ack) == (0, (), 10, T0 - 1)
    verdict = m.judge_rpo(result, 0, max_quiet_s=2)
    assert verdict.status == "pass"
    assert verdict.message == (
        "RPO 0 s within objective 0 s: 0 of 10 writes acknowledged before t0 lost; "
        "intact up to #9 acked at -1.0 s"
    )


def test_rpo_with_everything_lost_is_a_lower_bound() -> None:
    writes = writes_every_second(10)
    result = m.rpo(writes, set(), T0)
    assert (result.rpo, result.lower_bound, result.last_survivor, result.first_lost) == (
        10,
        True,
        None,
        writes[0],
    )
    assert (result.lost_count, result.holes) == (10, ())
    failed = m.judge_rpo(result, 5, max_quiet_s=2)
    assert (failed.status, failed.measured) == ("fail", ">= 10.0 s")
    unknown = m.judge_rpo(result, 60, max_quiet_s=2)
    assert unknown.status == "error"
    assert unknown.message == (
        "RPO not judged: 10 of 10 writes acknowledged before t0 lost, the first #0 acked at -10.0 s; "
        "the loss may reach back before the first sentinel write, so its size is unknown"
    )


def test_rpo_with_nothing_written_cannot_be_judged() -> None:
    for writes in ([], [written(0, None)], [written(0, T0 + 1)]):
        result = m.rpo(writes, {0}, T0)
        assert (result.rpo, result.pre_fault, result.lost_count) == (None, 0, 0)
        verdict = m.judge_rpo(result, 5, max_quiet_s=2)
        assert (verdict.status, verdict.measured) == ("error", "no data")
        assert verdict.message == "RPO not judged: no sentinel write was acknowledged before t0"


def test_rpo_with_stale_sentinel_cannot_pass() -> None:
    result = m.rpo(writes_every_second(5, first_ack=T0 - 30), set(range(5)), T0)
    verdict = m.judge_rpo(result, 5, max_quiet_s=3)
    assert verdict.status == "error"
    assert (
        "the newest write acknowledged before t0 was at -26.0 s, more than 3 s before the fault"
        in verdict.message
    )


def test_rpo_holes_count_survivors_written_after_t0() -> None:
    writes = [*writes_every_second(3), written(3, T0 + 1)]
    assert m.rpo(writes, {0, 3}, T0).holes == (1, 2)


def test_rpo_refuses_duplicate_seqs() -> None:
    with pytest.raises(ValueError, match="distinct seqs"):
        m.rpo([written(1, 1.0), written(1, 2.0)], set(), T0)


# --- availability and latency --------------------------------------------------------------------------


@FAST
@given(series(), st.integers(0, 100), st.integers(0, 50), bounds)
def test_availability_matches_reference(samples: list[ProbeSample], start: int, length: int, bound) -> None:
    window = (float(start), float(start + length))
    chosen = [s for s in samples if start <= s.sent < start + length]
    expected = sum(not ref_failed(s, bound) for s in chosen) / len(chosen) if chosen else None
    assert m.availability(samples, window, bound) == expected
    everything = sum(not ref_failed(s, bound) for s in samples) / len(samples) if samples else None
    assert m.availability(samples, latency_bound=bound) == everything


@FAST
@given(
    series(),
    st.lists(st.integers(1, 100) | st.sampled_from([0.1, 12.5, 99.9, 99.99]), min_size=1, max_size=4),
)
def test_latency_percentiles_match_reference(samples: list[ProbeSample], percentiles: list[float]) -> None:
    every = [s.latency for s in samples]  # failed probes too, a timed-out one at its timeout
    result = m.latency_percentiles(samples, percentiles)
    assert result == {p: ref_percentile(every, p) if every else None for p in percentiles}


def test_availability_by_hand() -> None:
    samples = [probe(0), probe(1, "5xx"), probe(2), probe(3, "timeout"), probe(4, latency=5)]
    assert m.availability(samples) == 3 / 5
    assert m.availability(samples, latency_bound=1) == 2 / 5
    assert m.availability(samples, (1, 3)) == 1 / 2  # [1, 3): sends 1 and 2
    assert m.availability(samples, (10, 20)) is None


def test_latency_percentiles_nearest_rank() -> None:
    samples = [probe(i, latency=float(v)) for i, v in enumerate(range(100, 0, -1))]
    assert m.latency_percentiles(samples) == {50: 50, 95: 95, 99: 99}
    assert m.latency_percentiles(samples, (0.5, 100)) == {0.5: 1, 100: 100}
    samples += [probe(200, "5xx", latency=500), probe(201, "timeout", latency=900)]  # failed probes count
    assert m.latency_percentiles(samples, (50, 99, 100)) == {50: 51, 99: 500, 100: 900}
    five = [probe(i, latency=v) for i, v in enumerate([0.3, 0.1, 0.5, 0.2, 0.4])]
    expected = {20: 0.1, 21: 0.2, 50: 0.3, 80: 0.4, 81: 0.5}
    assert m.latency_percentiles(five, (20, 21, 50, 80, 81)) == pytest.approx(expected)
    assert m.latency_percentiles(five, (50,), window=(3, 5)) == pytest.approx({50: 0.2})
    assert m.latency_percentiles([probe(0, "timeout", latency=1.0)], (99,)) == {99: 1.0}
    assert m.latency_percentiles([], (99,)) == {99: None}
    for empty in (five, []):
        with pytest.raises(ValueError, match="percentile must be in"):
            m.latency_percentiles(empty, (0,))


def test_judge_availability_and_latency() -> None:
    samples = regular(T0, T0 + 100, 1.0)
    samples[10] = probe(T0 + 10, "5xx")
    samples[11] = probe(T0 + 11, latency=2.0)
    coverage = m.check_coverage(samples, T0, T0 + 100, 1.0)
    assert m.judge_availability(samples, 0.99, coverage).status == "pass"
    verdict = m.judge_availability(samples, 0.99, coverage, latency_bound=1.0)
    assert (verdict.status, verdict.measured) == ("fail", "98.00%")
    assert (
        verdict.message
        == "availability 98.00% below objective 99.00%: 98 of 100 probes succeeded over 100.0 s; "
        "failed: 1 x HTTP 503, 1 x latency 2 s above 1 s"
    )
    p99 = m.judge_latency(samples, 99, 1.0, coverage)
    assert (p99.status, p99.measured) == ("pass", "0.010 s")  # rank 99 of 100: one slow probe is 1%
    p100 = m.judge_latency(samples, 100, 1.0, coverage)
    assert (p100.status, p100.measured, p100.moments["percentile_probe_sent"]) == ("fail", "2.0 s", T0 + 11)
    assert p100.message.endswith("; the one slower than 1.0 s was sent +11.0 s into the window judged")
    p95 = m.judge_latency(samples, 95, 0.5, coverage)
    assert p95.status == "pass"
    assert p95.message == "p95 latency 0.010 s within objective 0.500 s over 100 probes"
    gappy = m.check_coverage(samples[:50], T0, T0 + 100, 1.0)
    assert m.judge_availability(samples[:50], 0.5, gappy).status == "error"
    assert m.judge_latency(samples[:50], 50, 10, gappy).status == "error"


def with_timeouts(count: int, timeout: float) -> list[ProbeSample]:
    """100 probes a second apart answered in 10 ms, `count` of them (from +10 s) timed out at `timeout`."""
    samples = regular(T0, T0 + 100, 1.0)
    samples[10 : 10 + count] = [probe(T0 + i, "timeout", latency=timeout) for i in range(10, 10 + count)]
    return samples


def test_timed_out_probes_count_at_their_timeout() -> None:
    samples = with_timeouts(5, 1.0)
    coverage = m.check_coverage(samples, T0, T0 + 100, 1.0)
    p99 = m.judge_latency(samples, 99, 0.5, coverage)
    assert (p99.status, p99.measured) == ("fail", "1.0 s")
    assert p99.message == (
        "p99 latency 1.0 s exceeds objective 0.500 s over 100 probes "
        "(5 without an answer, counted at the time they gave up); the 5 slower than 0.500 s were sent from "
        "+10.0 s to +14.0 s into the window judged"
    )
    assert m.judge_latency(samples, 95, 0.5, coverage).status == "pass"  # 95 answered in 10 ms
    assert m.judge_latency(with_timeouts(1, 1.0), 99, 0.5, coverage).status == "pass"  # 1% is allowed


def test_probes_given_up_within_the_objective_leave_the_percentile_unknown() -> None:
    samples = with_timeouts(5, 1.0)
    coverage = m.check_coverage(samples, T0, T0 + 100, 1.0)
    verdict = m.judge_latency(samples, 99, 2.0, coverage)  # they gave up at 1 s: the answer may take 3 s
    assert (verdict.status, verdict.measured) == ("error", ">= 1.0 s")
    assert verdict.message == (
        "p99 latency not judged: it falls on a probe that got no answer and gave up after 1.0 s, within the "
        "2.0 s objective, so the true p99 latency is unknown (5 of 100 probes got no answer): give the "
        "probes a timeout above the latency objective"
    )
    dead = [probe(T0 + i, "timeout") for i in range(100)]
    assert m.judge_latency(dead, 50, 10, m.check_coverage(dead, T0, T0 + 100, 1.0)).status == "error"
    refused = [*regular(T0, T0 + 100, 1.0)]
    refused[:3] = [probe(T0 + i, "timeout", latency=0.001) for i in range(3)]  # refused at 1 ms
    assert m.judge_latency(refused, 99, 0.5, coverage).status == "pass"  # below the rank, at 1 ms


# --- coverage ------------------------------------------------------------------------------------------


@FAST
@given(series(), st.integers(1, 5), st.sampled_from([2.0, 3.0]), st.sampled_from([0.5, 0.8]))
def test_coverage_matches_reference(
    samples: list[ProbeSample], interval: int, factor: float, fraction: float
) -> None:
    start, end = 10.0, 90.0
    sends = sorted(s.sent for s in samples if start <= s.sent < end)
    points = [start, *sends, end]
    gaps = [b - a for a, b in pairwise(points) if b - a > factor * interval]
    too_few = len(sends) < fraction * (end - start) / interval
    coverage = m.check_coverage(samples, start, end, float(interval), factor, fraction)
    assert coverage.probes == len(sends)
    assert coverage.ok == (bool(sends) and not gaps and not too_few)
    if sends:
        assert len(coverage.problems) == len(gaps) + too_few


def test_coverage_by_hand() -> None:
    good = regular(T0, T0 + 10, 0.5)
    assert m.check_coverage(good, T0, T0 + 10, 0.5).problems == ()
    late = m.check_coverage(good, T0 - 2, T0 + 10, 0.5)
    assert late.problems == ("no probe sent from +0 s to +2.0 s (2.0 s, more than 3 x the 0.5 s interval)",)
    empty = m.check_coverage([probe(T0 + 20)], T0, T0 + 10, 0.5)
    assert (empty.ok, empty.problems, empty.probes) == (False, ("no probe sent in the 10.0 s window",), 0)
    tiny = m.check_coverage([], T0, T0 + 0.1, 1.0)  # fewer than one probe expected, still no data
    assert not tiny.ok
    sparse = m.check_coverage(regular(T0, T0 + 10, 1.25), T0, T0 + 10, 0.5, max_gap_factor=3)
    assert sparse.problems == ("8 probes sent, fewer than 80% of the 20 expected (one per 0.5 s)",)
    with pytest.raises(ValueError, match="end > start"):
        m.check_coverage(good, T0, T0, 0.5)


# --- RTO phases ----------------------------------------------------------------------------------------


def phase_events(phases: list[tuple[str, str | None, float, float | None]]) -> list[Event]:
    events = []
    for name, cluster, start, end in phases:
        events.append(Event(f"{name}.start", start, start, cluster))
        if end is not None:
            events.append(Event(f"{name}.end", end, end, cluster))
    return events


def test_rto_phases_attribute_overlaps_once() -> None:
    phases = [
        ("detection", None, T0, T0 + 5),
        ("restore", "eu-west", T0 + 3, T0 + 20),
        ("scheduling", "eu-west", T0 + 10, T0 + 15),
        ("readiness", "eu-west", T0 + 18, None),  # never ended: runs to the recovery
        ("inject", None, T0 - 3, T0),  # before t0: not part of the RTO
    ]
    breakdown = m.rto_phases(phase_events(phases), T0, T0 + 25)
    assert breakdown.phases == {
        "detection": 3,
        "restore@eu-west": 7 + 3,
        "scheduling@eu-west": 5,
        "readiness@eu-west": 7,
    }
    assert breakdown.unattributed == 0
    json.dumps(breakdown.to_dict())


def test_rto_phases_leave_uncovered_time_unattributed() -> None:
    phases = [("detection", None, T0 - 2, T0 + 4), ("traffic-switch", None, T0 + 6, T0 + 9)]
    breakdown = m.rto_phases(phase_events(phases), T0, T0 + 12)
    assert (breakdown.phases, breakdown.unattributed) == ({"detection": 4, "traffic-switch": 3}, 5)
    assert m.rto_phases(phase_events(phases), T0, T0).phases == {"detection": 0}
    with pytest.raises(ValueError, match="end >= t0"):
        m.rto_phases([], T0, T0 - 1)


phase_lists = st.lists(
    st.tuples(st.sampled_from([None, "a", "b"]), st.integers(0, 30), st.none() | st.integers(0, 30)),
    max_size=6,
)


@FAST
@given(phase_lists, st.integers(0, 30), st.integers(0, 20))
def test_rto_phases_match_reference(raw: list[tuple], t0: int, rto_s: int) -> None:
    phases = [(f"p{i}", c, s, None if e is None else max(s, e)) for i, (c, s, e) in enumerate(raw)]
    end = t0 + rto_s
    shares: dict[str, int] = defaultdict(int)
    unattributed = 0
    for t in range(t0, end):  # each unit instant [t, t + 1): the latest-started active phase, ties by order
        active = [
            (s, i, f"{n}@{c}" if c else n)
            for i, (n, c, s, e) in enumerate(phases)
            if s <= t and (e is None or t < e)
        ]
        if active:
            shares[max(active)[2]] += 1
        else:
            unattributed += 1
    breakdown = m.rto_phases(phase_events(phases), float(t0), float(end))
    assert {k: v for k, v in breakdown.phases.items() if v} == dict(shares)
    assert breakdown.unattributed == unattributed
    assert math.fsum([*breakdown.phases.values(), breakdown.unattributed]) == rto_s


# --- the data a restore holds, against the backup point ----------------------------------------------


def restored(present: set[int], started: float = T0 - 10, completed: float = T0 - 8) -> m.Verdict:
    """Writes #1..#20 acked at T0-20 .. T0-1 (one a second); the backup ran from `started` to `completed`."""
    writes = [written(seq, T0 - 21 + seq) for seq in range(1, 21)]
    result = m.rpo(writes, present, T0)
    return m.judge_backup_point(result, writes, present, started, completed)


def test_a_restore_ending_at_the_backup_point_passes() -> None:
    verdict = restored(set(range(1, 11)))  # up to #10, acked at T0-11, before the backup started at T0-10
    assert verdict.status == "pass", verdict.message
    assert "intact up to #10 acked at -11.0 s" in verdict.message and "10 writes" in verdict.message


def test_a_restore_missing_writes_from_before_the_backup_fails() -> None:
    verdict = restored(set(range(1, 6)))
    assert verdict.status == "fail"
    assert verdict.message.startswith("5 writes acknowledged before the backup started are not in")


def test_a_restore_holding_writes_from_after_the_backup_fails() -> None:
    verdict = restored(set(range(1, 16)))  # #13 on were acked after the backup completed at T0-8
    assert verdict.status == "fail" and "after the backup completed are in the restore" in verdict.message


def test_a_restore_with_a_hole_fails() -> None:
    verdict = restored(set(range(1, 12)) - {4})
    assert verdict.status == "fail" and "#4" in verdict.message


def test_without_writes_after_the_backup_the_restore_cannot_be_judged() -> None:
    verdict = restored(set(range(1, 21)), started=T0 - 0.5, completed=T0 - 0.2)
    assert verdict.status == "error" and "between the backup and the fault" in verdict.message
