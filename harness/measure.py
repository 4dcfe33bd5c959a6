"""Pure measurements: probe samples, sentinel writes and timeline events -> outage windows, RTO, RPO,
availability, latency percentiles, RTO phases, and verdicts against objectives (ARCHITECTURE.md, "Measurement
definitions"). No I/O. Times are monotonic seconds; the records returned are in samples.py.

Functions that look at probe order take one target's series (filter by `target` first); they order it by
send time (ties by receive time). Every result keeps the moments that decided it, so a reader can check it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from itertools import pairwise

from harness.samples import (
    Coverage,
    Interleaving,
    MissedSlot,
    PhaseBreakdown,
    ProbeSample,
    RpoResult,
    RtoOutcome,
    RtoResult,
    SentinelWrite,
    Verdict,
    Window,
)
from harness.timeline import Event, phase_spans

MISSED_WHY = {
    "late": "the prober woke after them: the runner was starved of CPU",
    "busy": "max_in_flight requests were outstanding",
}
SHOWN_IDS = 5
"""How many lost write ids a verdict's message lists; it gives their count too."""


def probe_failed(sample: ProbeSample, latency_bound: float | None = None) -> bool:
    """A probe fails on connection error or timeout (not ok), a 5xx status, or latency above the bound.

    Any other answer (2xx, 3xx, 4xx, or ok without a status) is a success.
    """
    if not sample.ok:
        return True
    if sample.status is not None and 500 <= sample.status <= 599:
        return True
    return latency_bound is not None and sample.latency > latency_bound


def failure_cause(sample: ProbeSample, latency_bound: float | None = None) -> str:
    """Why a failed probe (probe_failed) failed: its error, its 5xx status, or its latency above the bound."""
    if sample.error:
        return sample.error
    if sample.status is not None and 500 <= sample.status <= 599:
        return f"HTTP {sample.status}"
    return f"latency {sample.latency:.3g} s above {latency_bound:g} s"


def _series(samples: Iterable[ProbeSample]) -> list[ProbeSample]:
    ordered = sorted(samples, key=lambda s: (s.sent, s.received))
    targets = sorted({s.target for s in ordered})
    if len(targets) > 1:
        raise ValueError(f"expected one target's probe series, got {targets}: filter samples by target first")
    return ordered


def _in_window(samples: Iterable[ProbeSample], window: tuple[float, float] | None) -> list[ProbeSample]:
    """Samples sent in [start, end), or all when window is None."""
    return [s for s in samples if window is None or window[0] <= s.sent < window[1]]


def outage_windows(samples: Iterable[ProbeSample], latency_bound: float | None = None) -> list[Window]:
    """All outage windows of one target's series, in time order (see Window for start and end)."""
    windows: list[Window] = []
    run: list[ProbeSample] = []
    for sample in _series(samples):
        if probe_failed(sample, latency_bound):
            run.append(sample)
        elif run:
            windows.append(Window(run[0].sent, sample.sent, len(run), closed=True))
            run = []
    if run:
        windows.append(Window(run[0].sent, max(s.received for s in run), len(run), closed=False))
    return windows


def longest_outage(samples: Iterable[ProbeSample], latency_bound: float | None = None) -> Window | None:
    """The outage window of largest duration (the earliest among equals), or None without outages."""
    return max(outage_windows(samples, latency_bound), key=lambda w: w.duration, default=None)


def rto(
    samples: Iterable[ProbeSample],
    t0: float,
    stable_count: int,
    stable_seconds: float,
    latency_bound: float | None = None,
) -> RtoResult:
    """RTO: from t0 to the start of the first stable recovery after the last failure; 0 if no probe failed.

    Only probes sent at or after t0 count. A stable recovery is a run of consecutive successes of at least
    stable_count probes whose send times span at least stable_seconds; as every probe after the last failure
    succeeds, it starts at the first probe after the last failure, provided enough of them follow. Otherwise
    the outcome is "not_recovered" (no number). No probe sent at or after t0 gives "no_data".
    """
    if stable_count < 1 or stable_seconds < 0:
        raise ValueError(
            f"stable recovery needs stable_count >= 1 and stable_seconds >= 0, "
            f"got {stable_count} and {stable_seconds}"
        )
    after = [s for s in _series(samples) if s.sent >= t0]
    failed = [i for i, s in enumerate(after) if probe_failed(s, latency_bound)]

    def result(
        outcome: RtoOutcome,
        value: float | None,
        last: float | None = None,
        stable: Sequence[ProbeSample] = (),
    ) -> RtoResult:
        start = stable[0].sent if outcome == "recovered" else None
        span = stable[-1].sent - stable[0].sent if stable else 0.0
        counts = (len(stable), span, stable_count, stable_seconds, len(after), len(failed))
        cause = failure_cause(after[failed[-1]], latency_bound) if failed else None
        return RtoResult(outcome, t0, value, last, start, *counts, cause)

    if not after:
        return result("no_data", None)
    if not failed:
        return result("no_failure", 0.0)
    last = after[failed[-1]].sent
    tail = after[failed[-1] + 1 :]
    for j, sample in enumerate(tail):
        if j + 1 >= stable_count and sample.sent - tail[0].sent >= stable_seconds:
            return result("recovered", tail[0].sent - t0, last, tail[: j + 1])
    return result("not_recovered", None, last, stable=tail)


def ends_stable(samples: Iterable[ProbeSample], stable_count: int, stable_seconds: float) -> bool:
    """One target's probe series ends in a stable run as RTO defines it: a stable recovery after its last
    failure, or, when none failed, at least stable_count probes spanning stable_seconds."""
    series = _series(samples)
    result = rto(series, -math.inf, stable_count, stable_seconds)
    if result.outcome == "no_failure":
        return len(series) >= stable_count and series[-1].sent - series[0].sent >= stable_seconds
    return result.outcome == "recovered"


def rpo(writes: Iterable[SentinelWrite], present: set[int], t0: float) -> RpoResult:
    """RPO from the sentinel writes and the seqs read back from the recovered service (see RpoResult).

    Pre-fault writes are those with acked_at < t0; "earlier" means earlier in (acked_at, seq) order.
    """
    writes = list(writes)
    if len({w.seq for w in writes}) != len(writes):
        raise ValueError("sentinel writes must have distinct seqs")
    acked = sorted((w.acked_at, w.seq, w) for w in writes if w.acked_at is not None and w.acked_at < t0)
    pre = [w for _, _, w in acked]
    lost = tuple(sorted(w.seq for w in pre if w.seq not in present))
    top = max((w.seq for w in writes if w.seq in present), default=None)
    holes = tuple(s for s in lost if top is not None and s < top)
    first = next((i for i, w in enumerate(pre) if w.seq not in present), None)
    if not acked:
        value, survivor, first_lost = None, None, None
    elif first is None:
        value, survivor, first_lost = 0.0, pre[-1], None
    elif first == 0:
        value, survivor, first_lost = t0 - acked[0][0], None, pre[0]
    else:
        value, survivor, first_lost = t0 - acked[first - 1][0], pre[first - 1], pre[first]
    newest = acked[-1][0] if acked else None
    return RpoResult(t0, value, first == 0, len(pre), newest, survivor, first_lost, len(lost), lost, holes)


def availability(
    samples: Iterable[ProbeSample],
    window: tuple[float, float] | None = None,
    latency_bound: float | None = None,
) -> float | None:
    """Successful probes / all probes sent in [start, end) (all samples without window); None if none."""
    chosen = _in_window(samples, window)
    if not chosen:
        return None
    return sum(not probe_failed(s, latency_bound) for s in chosen) / len(chosen)


def latency_percentiles(
    samples: Iterable[ProbeSample],
    percentiles: Iterable[float] = (50, 95, 99),
    window: tuple[float, float] | None = None,
) -> dict[float, float | None]:
    """Nearest-rank latency percentiles over every probe sent in the window.

    Each probe counts at received - sent: a failed answer at its latency, a probe without an answer at the
    time it gave up (a timed-out probe at its timeout). The p-th percentile (0 < p <= 100) of n latencies is
    the one at rank ceil(p/100 * n) in ascending order: the smallest latency that at least p% of them do not
    exceed. None when no probe was sent. No latency bound applies (dropping slow probes would hide the tail).
    """
    latencies = sorted(s.latency for s in _in_window(samples, window))
    ranks = {p: _rank(p, len(latencies)) for p in percentiles}
    return {p: latencies[rank - 1] if latencies else None for p, rank in ranks.items()}


def _rank(p: float, n: int) -> int:
    """The nearest rank (1-based) of the p-th percentile among n values."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    return math.ceil(Fraction(str(p)) * n / 100)


def _no_answer(sample: ProbeSample) -> bool:
    """The probe got no answer (timeout, connection error): its latency is only the time it gave up."""
    return not sample.ok and sample.status is None


def check_coverage(
    samples: Iterable[ProbeSample],
    start: float,
    end: float,
    expected_interval: float,
    max_gap_factor: float = 3.0,
    min_fraction: float = 0.8,
    missed: Iterable[MissedSlot] = (),
) -> Coverage:
    """Check one target's probes sent in [start, end): no data is never a pass.

    Problems: no probe at all; a stretch longer than max_gap_factor x expected_interval without a probe sent
    (from start to the first probe and from the last probe to end included); fewer probes than min_fraction
    of the (end - start) / expected_interval expected, with why the prober missed slots in the window when
    `missed` holds them. Times in problems are relative to start.
    """
    if end <= start or expected_interval <= 0:
        raise ValueError(
            f"coverage needs end > start and expected_interval > 0, got [{start}, {end}), {expected_interval}"
        )
    sends = [s.sent for s in _in_window(_series(samples), (start, end))]
    if not sends:
        return Coverage(
            start, end, expected_interval, 0, (f"no probe sent in the {_secs(end - start)} s window",)
        )
    problems = [
        f"no probe sent from +{_secs(a - start)} s to +{_secs(b - start)} s ({_secs(b - a)} s, more than "
        f"{max_gap_factor:g} x the {expected_interval:g} s interval)"
        for a, b in pairwise([start, *sends, end])
        if b - a > max_gap_factor * expected_interval
    ]
    expected = (end - start) / expected_interval
    if len(sends) < min_fraction * expected:
        problems.append(
            f"{len(sends)} probes sent, fewer than {min_fraction:.0%} of the {expected:.0f} expected "
            f"(one per {expected_interval:g} s){_missed_why(missed, start, end)}"
        )
    return Coverage(start, end, expected_interval, len(sends), tuple(problems))


def _missed_why(missed: Iterable[MissedSlot], start: float, end: float) -> str:
    """`; slots missed: 450 late (...), 5 busy (...)` for the slots missed in [start, end), or nothing."""
    counts = Counter(m.reason for m in missed if start <= m.slot < end)
    said = [f"{counts[reason]} {reason} ({why})" for reason, why in MISSED_WHY.items() if counts[reason]]
    return f"; slots missed: {', '.join(said)}" if said else ""


def rto_phases(events: Iterable[Event], t0: float, end: float) -> PhaseBreakdown:
    """Split [t0, end) (end = t0 + RTO) among the timeline's phases, counting no instant twice.

    Each instant goes to the phase active then (phase start <= t < phase end) that started latest (ties: the
    one recorded later); a phase without an end event stays active. Instants no phase covers are
    unattributed. Phases overlapping [t0, end) appear in order of start; the parts sum to end - t0.
    """
    if end < t0:
        raise ValueError(f"phase breakdown needs end >= t0, got t0={t0}, end={end}")
    spans = [s for s in phase_spans(events) if s.start < end and (s.end is None or s.end > t0)]
    edges = {min(max(t, t0), end) for s in spans for t in (s.start, s.end) if t is not None}
    shares = dict.fromkeys((s.key for s in spans), 0.0)
    unattributed = 0.0
    for a, b in pairwise(sorted(edges | {t0, end})):
        active = [s for s in spans if s.start <= a and (s.end is None or s.end >= b)]
        if active:
            shares[active[-1].key] += b - a
        else:
            unattributed += b - a
    return PhaseBreakdown(t0, end, shares, unattributed)


def _secs(x: float) -> str:
    return "0" if x == 0 else f"{x:.1f}" if abs(x) >= 1 else f"{x:.3f}"


def _rel(t: float, t0: float) -> str:
    return f"{'-' if t < t0 else '+'}{_secs(abs(t - t0))} s"


def _ids(seqs: Sequence[int]) -> str:
    """A few write ids for a message, with how many more there are: `#3, #4, #5, #6, #7 and 12 more`."""
    shown = ", ".join(f"#{s}" for s in seqs[:SHOWN_IDS])
    return f"{shown} and {len(seqs) - SHOWN_IDS} more" if len(seqs) > SHOWN_IDS else shown


def _verdict(ok: bool, objective: str, expected: str, measured: str, message: str, moments: dict) -> Verdict:
    return Verdict("pass" if ok else "fail", objective, expected, measured, message, moments)


def _not_judged(objective: str, expected: str, why: str, moments: dict, measured: str = "no data") -> Verdict:
    return Verdict("error", objective, expected, measured, f"{objective} not judged: {why}", moments)


def _bad_coverage(objective: str, expected: str, coverage: Coverage, moments: dict) -> Verdict | None:
    if coverage.ok:
        return None
    why = f"the probes do not cover the window: {'; '.join(coverage.problems)}"
    return _not_judged(objective, expected, why, moments, "not measured")


def judge_rto(result: RtoResult, objective_s: float, coverage: Coverage) -> Verdict:
    """Pass when RTO <= objective; fail when exceeded or not recovered; error on bad coverage or no data."""
    t0, expected = result.t0, f"<= {objective_s:g} s"
    moments = {"t0": t0, "last_failure": result.last_failure, "recovery_start": result.recovery_start}
    if error := _bad_coverage("RTO", expected, coverage, moments):
        return error
    if result.outcome == "no_data":
        return _not_judged("RTO", expected, "no probe sent after t0", moments)
    stable = f"{result.stable_probes} probes over {_secs(result.stable_span)} s"
    last = (
        ""
        if result.last_failure is None
        else f"last failure at {_rel(result.last_failure, t0)} ({result.last_cause})"
    )
    if result.rto is None:
        message = (
            f"RTO objective {objective_s:g} s not met: not recovered; {last}, then {stable} succeeded; "
            f"stable recovery needs {result.stable_count} probes over {result.stable_seconds:g} s"
        )
        return _verdict(False, "RTO", expected, "not recovered", message, moments)
    if result.recovery_start is None:
        why = f"no probe failed after t0 ({result.probes} probes)"
    else:
        why = f"{last}, stable from {_rel(result.recovery_start, t0)} ({stable})"
    ok = result.rto <= objective_s
    message = f"RTO {_secs(result.rto)} s {'within' if ok else 'exceeds'} objective {objective_s:g} s: {why}"
    return _verdict(ok, "RTO", expected, f"{_secs(result.rto)} s", message, moments)


def judge_rpo(result: RpoResult, objective_s: float, *, max_quiet_s: float) -> Verdict:
    """Pass when RPO <= objective and some write was acknowledged within max_quiet_s before t0.

    Fail when RPO (or its lower bound) exceeds the objective. Error when nothing was acknowledged before t0,
    when every pre-fault write was lost but the lower bound is within objective (the true loss is unknown),
    or when the newest pre-fault ack is older than max_quiet_s (the sentinel missed the last moments).
    """
    t0, expected = result.t0, f"<= {objective_s:g} s"
    survivor, first_lost = result.last_survivor, result.first_lost
    moments = {
        "t0": t0,
        "newest_ack": result.newest_ack,
        "last_survivor_ack": survivor.acked_at if survivor else None,
        "first_lost_ack": first_lost.acked_at if first_lost else None,
    }
    if result.rpo is None or result.newest_ack is None:
        return _not_judged("RPO", expected, "no sentinel write was acknowledged before t0", moments)
    measured = f"{'>= ' if result.lower_bound else ''}{_secs(result.rpo)} s"
    lost = f"{result.lost_count} of {result.pre_fault} writes acknowledged before t0 lost"
    if first_lost and first_lost.acked_at is not None:
        lost += f", the first #{first_lost.seq} acked at {_rel(first_lost.acked_at, t0)}"
    if survivor and survivor.acked_at is not None:
        lost += f"; intact up to #{survivor.seq} acked at {_rel(survivor.acked_at, t0)}"
    if result.holes:
        lost += f"; {len(result.holes)} holes below the newest surviving write: {_ids(result.holes)}"
    if result.rpo > objective_s:
        message = f"RPO {measured} exceeds objective {objective_s:g} s: {lost}"
        return _verdict(False, "RPO", expected, measured, message, moments)
    if result.lower_bound:
        why = f"{lost}; the loss may reach back before the first sentinel write, so its size is unknown"
        return _not_judged("RPO", expected, why, moments, measured)
    if t0 - result.newest_ack > max_quiet_s:
        why = (
            f"the newest write acknowledged before t0 was at {_rel(result.newest_ack, t0)}, more than "
            f"{max_quiet_s:g} s before the fault: the sentinel did not cover it"
        )
        return _not_judged("RPO", expected, why, moments, measured)
    message = f"RPO {measured} within objective {objective_s:g} s: {lost}"
    return _verdict(True, "RPO", expected, measured, message, moments)


def judge_backup_point(
    result: RpoResult, writes: Iterable[SentinelWrite], present: set[int], started: float, completed: float
) -> Verdict:
    """Pass when the data a restore brought back ends at the backup point: every write acknowledged before
    the backup started is there, none acknowledged after it completed is, and nothing below the newest
    restored write is missing. Error when the sentinel wrote nothing before the backup or nothing between
    its completion and t0 (then what the restore should hold cannot be told)."""
    t0, objective = result.t0, "RPO at the backup point"
    expected = f"the writes up to the backup ({_rel(started, t0)} to {_rel(completed, t0)}) restored"
    moments = {"t0": t0, "backup_started": started, "backup_completed": completed}
    pre = sorted((w for w in writes if w.acked_at is not None and w.acked_at < t0), key=lambda w: w.acked_at)
    if not any(w.acked_at < started for w in pre):
        why = "no sentinel write was acknowledged before the backup"
        return _not_judged(objective, expected, why, moments)
    if not any(w.acked_at > completed for w in pre):
        why = "no sentinel write was acknowledged between the backup and the fault"
        return _not_judged(objective, expected, why, moments)
    measured = f"{_secs(result.rpo or 0.0)} s"
    missing = [w for w in pre if w.acked_at < started and w.seq not in present]
    if missing:
        first = missing[0]
        message = (
            f"{len(missing)} writes acknowledged before the backup started are not in the restore, the first "
            f"#{first.seq} acked at {_rel(first.acked_at, t0)}: the backup did not hold the data it should"
        )
        return _verdict(False, objective, expected, measured, message, moments)
    extra = [w for w in pre if w.acked_at > completed and w.seq in present]
    if extra:
        message = (
            f"{len(extra)} writes acknowledged after the backup completed are in the restore, the first "
            f"#{extra[0].seq} acked at {_rel(extra[0].acked_at, t0)}: the data did not come from this backup"
        )
        return _verdict(False, objective, expected, measured, message, moments)
    if result.holes:
        message = f"{len(result.holes)} writes missing below the newest restored one: {_ids(result.holes)}"
        return _verdict(False, objective, expected, measured, message, moments)
    survivor = result.last_survivor
    intact = "nothing kept"
    if survivor and survivor.acked_at is not None:
        intact = f"intact up to #{survivor.seq} acked at {_rel(survivor.acked_at, t0)}"
    message = (
        f"data restored up to the backup point: {intact}; the backup read the data between "
        f"{_rel(started, t0)} and {_rel(completed, t0)}; {result.lost_count} writes acknowledged after "
        f"it lost (RPO {measured})"
    )
    return _verdict(True, objective, expected, measured, message, moments)


def judge_availability(
    samples: Iterable[ProbeSample], objective: float, coverage: Coverage, latency_bound: float | None = None
) -> Verdict:
    """Pass when availability over the coverage window >= objective (a fraction, e.g. 0.999)."""
    expected = f">= {objective:.2%}"
    moments: dict[str, float | None] = {"start": coverage.start, "end": coverage.end}
    if error := _bad_coverage("availability", expected, coverage, moments):
        return error
    chosen = _in_window(samples, (coverage.start, coverage.end))
    value = availability(chosen, latency_bound=latency_bound)
    if value is None:
        return _not_judged("availability", expected, "no probe in the window", moments)
    failed = [s for s in chosen if probe_failed(s, latency_bound)]
    ok = value >= objective
    message = (
        f"availability {value:.2%} {'meets' if ok else 'below'} objective {objective:.2%}: "
        f"{len(chosen) - len(failed)} of {len(chosen)} probes succeeded over "
        f"{_secs(coverage.end - coverage.start)} s{_commonest_causes(failed, latency_bound)}"
    )
    return _verdict(ok, "availability", expected, f"{value:.2%}", message, moments)


def _commonest_causes(failed: Sequence[ProbeSample], latency_bound: float | None, shown: int = 3) -> str:
    """'; failed: 60 x timeout..., 21 x HTTP 503' for the commonest causes of failure; '' without any."""
    causes = Counter(failure_cause(s, latency_bound) for s in failed).most_common(shown)
    return "; failed: " + ", ".join(f"{n} x {cause}" for cause, n in causes) if causes else ""


def judge_latency(
    samples: Iterable[ProbeSample], percentile: float, objective_s: float, coverage: Coverage
) -> Verdict:
    """Pass when the nearest-rank latency percentile over every probe in the coverage window is within the
    objective, each probe counted as in latency_percentiles (a timed-out probe at its timeout).

    A probe without an answer only shows that the answer takes longer than it waited: when the percentile
    falls on one and is within the objective, its true value is unknown and the verdict is an error.
    """
    name, expected = f"p{percentile:g} latency", f"<= {_secs(objective_s)} s"
    moments: dict[str, float | None] = {"start": coverage.start, "end": coverage.end}
    if error := _bad_coverage(name, expected, coverage, moments):
        return error
    chosen = _in_window(samples, (coverage.start, coverage.end))
    if not chosen:
        return _not_judged(name, expected, "no probe in the window", moments)
    ranked = sorted(chosen, key=lambda s: (s.latency, _no_answer(s)))  # at a tie, answers rank first
    decisive = ranked[_rank(percentile, len(ranked)) - 1]
    value, silent = decisive.latency, sum(map(_no_answer, ranked))
    moments |= {"percentile_probe_sent": decisive.sent}
    if _no_answer(decisive) and value <= objective_s:
        why = (
            f"it falls on a probe that got no answer and gave up after {_secs(value)} s, within the "
            f"{_secs(objective_s)} s objective, so the true {name} is unknown ({silent} of {len(ranked)} "
            "probes got no answer): give the probes a timeout above the latency objective"
        )
        return _not_judged(name, expected, why, moments, f">= {_secs(value)} s")
    ok = value <= objective_s
    counted = f" ({silent} without an answer, counted at the time they gave up)" if silent else ""
    message = (
        f"{name} {_secs(value)} s {'within' if ok else 'exceeds'} objective {_secs(objective_s)} s "
        f"over {len(ranked)} probes{counted}"
    )
    if not ok:
        slow = [s.sent for s in ranked if s.latency > objective_s]
        message += _when_slow(slow, objective_s, coverage.start)
    return _verdict(ok, name, expected, f"{_secs(value)} s", message, moments)


def _when_slow(sent: Sequence[float], objective_s: float, start: float) -> str:
    """'; the 19 slower than 1.0 s were sent from +3.1 s to +3.5 s into the window judged' (one stall, or
    slowness all along)."""
    slower = f"slower than {_secs(objective_s)} s"
    if len(sent) == 1:
        return f"; the one {slower} was sent {_rel(sent[0], start)} into the window judged"
    return (
        f"; the {len(sent)} {slower} were sent from {_rel(min(sent), start)} to {_rel(max(sent), start)} "
        "into the window judged"
    )


def judge_longest_outage(
    samples: Iterable[ProbeSample], bound_s: float, coverage: Coverage, latency_bound: float | None = None
) -> Verdict:
    """Pass when no outage window within the coverage window lasts longer than bound_s."""
    expected = f"<= {bound_s:g} s"
    moments: dict[str, float | None] = {"start": coverage.start, "end": coverage.end}
    if error := _bad_coverage("longest outage", expected, coverage, moments):
        return error
    worst = longest_outage(_in_window(samples, (coverage.start, coverage.end)), latency_bound)
    if worst is None:
        span = _secs(coverage.end - coverage.start)
        message = f"longest outage 0 s within {bound_s:g} s: no probe failed over {span} s"
        return _verdict(True, "longest outage", expected, "0 s", message, moments)
    ok = worst.duration <= bound_s
    moments |= {"outage_start": worst.start, "outage_end": worst.end}
    message = (
        f"longest outage {_secs(worst.duration)} s {'within' if ok else 'exceeds'} {bound_s:g} s: "
        f"{worst.failed_count} failed probes from {_rel(worst.start, coverage.start)} into the window judged"
    )
    return _verdict(ok, "longest outage", expected, f"{_secs(worst.duration)} s", message, moments)


def two_writers(writes_by_cluster: Mapping[str, Sequence[SentinelWrite]]) -> list[Interleaving]:
    """Every pair of clusters whose acknowledged writes interleave in time, by start: their spans [first ack,
    last ack] overlap, i.e. one acknowledged a write between two acks of the other (a single ack is an
    instant; acks at the same moment interleave). A clean handover, one cluster's acks all before the
    other's first, is no interleaving whatever was refused or unanswered in between."""
    acks = {name: _acks(writes) for name, writes in writes_by_cluster.items()}
    names = sorted(name for name in acks if acks[name])
    found = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            start, end = max(acks[a][0], acks[b][0]), min(acks[a][-1], acks[b][-1])
            if start <= end:
                inside = sorted((t, name) for name in (a, b) for t in acks[name] if start <= t <= end)
                found.append(Interleaving(a, b, start, end, tuple(inside)))
    return sorted(found, key=lambda overlap: overlap.start)


def _acks(writes: Iterable[SentinelWrite]) -> list[float]:
    return sorted(w.acked_at for w in writes if w.acked_at is not None)


def _unanswered(
    writes_by_cluster: Mapping[str, Sequence[SentinelWrite]],
) -> list[tuple[str, int, float, str]]:
    """Per cluster, the writes it left unanswered (outcome unknown) that ended at or after the first ack of a
    cluster that began acknowledging after it (the new writer): (cluster, count, that first ack, new writer).
    A write whose end was not recorded counts."""
    firsts = {name: acks[0] for name, writes in writes_by_cluster.items() if (acks := _acks(writes))}
    found = []
    for name in sorted(writes_by_cluster):
        mine = firsts.get(name)
        newer = [(t, other) for other, t in firsts.items() if other != name and (mine is None or t > mine)]
        if not newer:
            continue
        since, writer = min(newer)
        unknown = [
            w
            for w in writes_by_cluster[name]
            if w.outcome == "unknown" and (w.ended_at is None or w.ended_at >= since)
        ]
        if unknown:
            found.append((name, len(unknown), since, writer))
    return found


def _interleaving_text(overlap: Interleaving, t0: float, shown: int = 5) -> str:
    """The overlap as text, times relative to t0: "a and b from +1.0 s to +1.3 s (a acked at +1.3 s; b acked
    at +1.0 s, +1.2 s)"."""
    parts = []
    for name in (overlap.cluster, overlap.other):
        times = [t for t, cluster in overlap.acks if cluster == name]
        if times:
            more = f", ... ({len(times)} in all)" if len(times) > shown else ""
            parts.append(f"{name} acked at {', '.join(_rel(t, t0) for t in times[:shown])}{more}")
    span = f"from {_rel(overlap.start, t0)} to {_rel(overlap.end, t0)}"
    return f"{overlap.cluster} and {overlap.other} {span} ({'; '.join(parts)})"


def judge_split_brain(writes_by_cluster: Mapping[str, Sequence[SentinelWrite]], t0: float) -> Verdict:
    """Never two writers: pass when no two clusters' acknowledged writes interleave in time (two_writers).

    Fail on any interleaving, with its moments and the acks in it. Error when fewer than two clusters
    acknowledged a write (no handover was measured), or when a cluster left writes unanswered after a new
    writer's first ack: whether it accepted them is unknown, and a primary the harness cannot reach is
    never taken as fenced. A proven interleaving beats the unknown: then the verdict is a fail.
    """
    clusters = sorted(writes_by_cluster)
    expected = f"acknowledged writes of {', '.join(clusters)} never interleave"
    acks = {name: _acks(writes_by_cluster[name]) for name in clusters}
    moments: dict[str, float | None] = {"t0": t0}
    for name in clusters:
        first, last = (acks[name][0], acks[name][-1]) if acks[name] else (None, None)
        moments |= {f"{name}_first_write": first, f"{name}_last_write": last}
    writers = [name for name in clusters if acks[name]]
    if len(writers) < 2:
        why = f"only {writers[0]} accepted writes" if writers else "no cluster accepted a write"
        return _not_judged("split brain", expected, f"{why}: no handover to check", moments)
    if found := two_writers(writes_by_cluster):
        count = sum(len(overlap.acks) for overlap in found)
        moments |= {"two_writers_start": found[0].start, "two_writers_end": found[0].end}
        shown = "; ".join(_interleaving_text(overlap, t0) for overlap in found[:5])
        message = f"split brain: two clusters' acknowledged writes interleave, {count} acks in all: {shown}"
        return _verdict(False, "split brain", expected, f"{count} interleaved acks", message, moments)
    if unanswered := _unanswered(writes_by_cluster):
        name, count, since, writer = unanswered[0]
        moments |= {"unanswered_since": since}
        others = "".join(f"; {n} did not answer {c} either" for n, c, _, _ in unanswered[1:])
        why = (
            f"{name} did not answer {count} writes after {_rel(since, t0)}, when {writer} acknowledged its "
            f"first write; whether it accepted them is unknown{others}. A primary that cannot be reached is "
            f"not fenced: write to {name} over a path the fault does not cut, so that it answers (a refusal "
            "shows it fenced)"
        )
        return _not_judged("split brain", expected, why, moments, "unknown")
    order = sorted(writers, key=lambda name: acks[name][0])
    spans = [f"{name} {_rel(acks[name][0], t0)} to {_rel(acks[name][-1], t0)}" for name in order]
    message = f"never two writers: acknowledged writes {', then '.join(spans)}, never interleaved"
    return _verdict(True, "split brain", expected, "0 interleaved acks", message, moments)
