"""The RTO of a DNS-based failover in phases, from what was observed (pure functions; ARCHITECTURE.md,
Measurement definitions).

Each phase ends at a moment seen from outside, all sent times (monotonic seconds):
- detection: t0 until the authoritative server's answer no longer holds the addresses it gave at t0 (the
  load balancer's health checks failed and it republished the record);
- cache expiry: until the runner's resolver answers without them (its cached answer expired);
- DNS switch: until the first probe of the global name connected to another address (the client's own
  connections and lookups moved);
- first good request: until the stable recovery that ends the RTO.
The watcher asks about once a second, so it sees the first two ends up to a second late, while the probes
(50 a second, resolving through the same resolver) see theirs at once. A later end proves the earlier ones
(no probe reaches the new address before the resolver gives it out; the resolver cannot give out what the
authoritative server does not yet answer), so each end is the earliest of its own and every later one.
The bound the health-check settings imply is interval x failure threshold (detection) plus the TTL the
lost answer carried (cache expiry).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.dnswatch import DnsAnswer
from harness.samples import ProbeSample, Verdict

PHASES = ("detection", "cache expiry", "DNS switch", "first good request")


@dataclass(frozen=True)
class DnsPhase:
    """One phase: seconds from its start to its end, and the bound the settings imply (None: none).
    Unfinished: still under way when observing stopped (its end is the last observation)."""

    name: str
    start: float
    end: float
    seconds: float
    bound_s: float | None
    finished: bool = True


@dataclass(frozen=True)
class DnsSplit:
    """The RTO's phases (or why they could not be measured: error), with the answer at t0 and the bound.
    The last phase may be unfinished; none follows it."""

    before: tuple[str, ...]
    ttl_s: int | None
    detection_bound_s: float
    bound_s: float | None
    phases: tuple[DnsPhase, ...] = ()
    error: str | None = None
    note: str | None = None
    """What happened before t0 that the phases do not show (an answer that moved and came back)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def phase(self, name: str) -> DnsPhase:
        return next(p for p in self.phases if p.name == name)

    @property
    def finished(self) -> bool:
        return bool(self.phases) and self.phases[-1].finished and len(self.phases) == len(PHASES)


def _moved(answer: DnsAnswer, before: tuple[str, ...]) -> bool:
    """An answer (not a failure) that holds none of the addresses given before."""
    return answer.error is None and not set(answer.addresses) & set(before)


def split(
    answers: Iterable[DnsAnswer],
    probes: Sequence[ProbeSample],
    t0: float,
    recovery_start: float | None,
    health_interval_s: float,
    failure_threshold: int,
    end: float,
) -> DnsSplit:
    """The phases of [t0, recovery_start] as observed until `end` (when observing stopped). A phase whose
    end was not seen is unfinished when its series went on until `end` (the lost address still answered);
    when its series is missing, or the authoritative answer moved between the first observation and t0
    and both servers did not give out the first answer again at t0, error names it (no phase is ever
    guessed; a move and back is noted)."""
    answers = list(answers)
    detection_bound = health_interval_s * failure_threshold
    authoritative = [a for a in answers if a.server == "authoritative"]
    resolver = [a for a in answers if a.server == "resolver"]
    earlier = [a for a in authoritative if a.sent <= t0 and a.error is None and a.addresses]
    if not earlier:
        why = "no answer from the authoritative server before t0: what moved cannot be told"
        return DnsSplit((), None, detection_bound, None, error=why)
    before, ttl = earlier[-1].addresses, earlier[-1].ttl
    moved = next((a for a in earlier if set(a.addresses) != set(earlier[0].addresses)), None)
    note = None
    if moved is not None:
        flap = (
            f"the authoritative server's answer moved {t0 - moved.sent:.1f} s before t0, from "
            f"{', '.join(earlier[0].addresses)} to {', '.join(moved.addresses)}"
        )
        if not _back_at_t0(earlier, resolver, t0):
            why = "the load balancer failed over before the fault, so what the fault moved cannot be told"
            return DnsSplit((), None, detection_bound, None, error=f"{flap}: {why}")
        again = f"gave out {', '.join(earlier[0].addresses)} again at t0 (the load balancer flapped)"
        note = f"{flap}, and it and the runner's resolver {again}"
    bound = detection_bound + ttl if ttl is not None else None
    after = [p for p in probes if p.sent >= t0]
    series = (
        ([a for a in authoritative if a.sent >= t0], "no answer from the authoritative server after t0"),
        ([a for a in resolver if a.sent >= t0], "no answer from the runner's resolver (apps[].dns.resolver)"),
        ([p for p in after if p.address], "the global name's probes recorded no address after t0"),
        (after, "no probe of the global name after t0"),
    )
    seen = [
        next((a.sent for a in series[0][0] if _moved(a, before)), None),
        next((a.sent for a in series[1][0] if _moved(a, before)), None),
        next((p.sent for p in series[2][0] if p.address not in before), None),
        recovery_start,
    ]
    ends = [min((t for t in seen[i:] if t is not None), default=None) for i in range(len(seen))]
    for phase, (seen, why) in zip(PHASES, series, strict=True):
        if not seen:
            return DnsSplit(before, ttl, detection_bound, bound, error=f"{phase}: {why}")
    phases, start = [], t0
    bounds = (detection_bound, float(ttl) if ttl is not None else None, None, None)
    for name, phase_end, phase_bound in zip(PHASES, ends, bounds, strict=True):
        finished = phase_end is not None
        stop = max(phase_end if phase_end is not None else end, start)  # t0 after a later end: 0 s
        phases.append(DnsPhase(name, start, stop, stop - start, phase_bound, finished))
        if not finished:
            break
        start = stop
    return DnsSplit(before, ttl, detection_bound, bound, tuple(phases), note=note)


def _back_at_t0(earlier: list[DnsAnswer], resolver: list[DnsAnswer], t0: float) -> bool:
    """Both servers gave out the first observed answer at t0 again after it moved: the runner's resolver
    last answered it before t0, and every authoritative answer since then did too (a cache that expired
    meanwhile fetched it again)."""
    first = set(earlier[0].addresses)
    last = next((a for a in reversed(resolver) if a.sent <= t0 and a.error is None and a.addresses), None)
    if last is None or set(last.addresses) != first or set(earlier[-1].addresses) != first:
        return False
    return all(set(a.addresses) == first for a in earlier if a.sent >= last.sent)


def judge(split_: DnsSplit, rto_s: float | None, objective_s: float | None) -> Verdict:
    """The DNS failover's RTO against the objective; a miss names the longest phase (or the one still under
    way), and any phase past the bound its settings imply is named either way. An error when a series is
    missing, no objective is set, or observing stopped before the objective with a phase under way."""
    name = "DNS failover"
    if split_.error is not None:
        return Verdict("error", name, "every phase observed", "missing", split_.error, {})
    if objective_s is None:
        return Verdict(
            "error", name, "an RTO objective", "none", "no RTO objective (apps[].objectives.rto)", {}
        )
    parts = ", ".join(f"{p.name} {p.seconds:.1f} s{'' if p.finished else '+'}" for p in split_.phases)
    bound = f"{split_.bound_s:.1f} s" if split_.bound_s is not None else "unknown"
    over = "".join(
        f"; {p.name} past its bound of {p.bound_s:.1f} s"
        for p in split_.phases
        if p.bound_s is not None and p.seconds > p.bound_s
    )
    summary = f"{parts}; bound interval x threshold + TTL {bound}{over}"
    if split_.note:
        summary += f"; {split_.note}"
    moments = {p.name: p.end for p in split_.phases}
    expected = f"RTO <= {objective_s:g} s"
    last = split_.phases[-1]
    if not split_.finished:
        observed = last.end - split_.phases[0].start
        if observed <= objective_s:
            why = f"observing stopped {observed:.1f} s after t0, before the objective, with {last.name} on"
            return Verdict("error", name, expected, "not recovered", f"{why} ({summary})", moments)
        cause = f"{last.name} still under way after {last.seconds:.1f} s"
        rto_text = f"RTO > {observed:.1f} s"
    else:
        assert rto_s is not None  # every phase finished: the RTO's stable recovery was seen
        if rto_s <= objective_s:
            message = f"RTO {rto_s:.1f} s <= {objective_s:g} s ({summary})"
            return Verdict("pass", name, expected, f"RTO {rto_s:.1f} s", message, moments)
        last = max(split_.phases, key=lambda p: p.seconds)
        cause, rto_text = f"{last.name} took {last.seconds:.1f} s", f"RTO {rto_s:.1f} s"
    if last.name == "cache expiry" and split_.ttl_s is not None:
        cause += f" (the resolver kept {', '.join(split_.before)} for its TTL of {split_.ttl_s} s)"
    message = f"{rto_text} > {objective_s:g} s: {cause}; {summary}"
    return Verdict("fail", name, expected, rto_text, message, moments)
