"""The RTO of a DNS-based failover in phases, from what was observed (pure functions; ARCHITECTURE.md,
Measurement definitions).

Each phase ends at a moment seen from outside, all sent times (monotonic seconds):
- detection: t0 until the authoritative server's answer no longer holds the addresses it gave at t0 (the
  load balancer's health checks failed and it republished the record);
- cache expiry: until the runner's resolver answers without them (its cached answer expired);
- DNS switch: until the first probe of the global name connected to another address (the client's own
  connections and lookups moved);
- first good request: until the stable recovery that ends the RTO.
The watcher asks about once a second, so the first two ends are known to within its interval; a phase
never ends before the one it follows (an end seen early counts as the previous one's). The bound the
health-check settings imply is interval x failure threshold (detection) plus the TTL the lost answer
carried (cache expiry).
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
    """One phase: seconds from its start to its end, and the bound the settings imply (None: none)."""

    name: str
    start: float
    end: float
    seconds: float
    bound_s: float | None


@dataclass(frozen=True)
class DnsSplit:
    """The RTO's phases (or why they could not be measured: error), with the answer at t0 and the bound."""

    before: tuple[str, ...]
    ttl_s: int | None
    detection_bound_s: float
    bound_s: float | None
    phases: tuple[DnsPhase, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def phase(self, name: str) -> DnsPhase:
        return next(p for p in self.phases if p.name == name)


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
) -> DnsSplit:
    """The phases of [t0, recovery_start]; error names what was not seen (no phase is ever guessed)."""
    answers = list(answers)
    detection_bound = health_interval_s * failure_threshold
    authoritative = [a for a in answers if a.server == "authoritative"]
    resolver = [a for a in answers if a.server == "resolver"]
    earlier = [a for a in authoritative if a.sent <= t0 and a.error is None and a.addresses]
    if not earlier:
        why = "no answer from the authoritative server before t0: what moved cannot be told"
        return DnsSplit((), None, detection_bound, None, error=why)
    before, ttl = earlier[-1].addresses, earlier[-1].ttl
    bound = detection_bound + ttl if ttl is not None else None
    ends = [
        next((a.sent for a in authoritative if a.sent >= t0 and _moved(a, before)), None),
        next((a.sent for a in resolver if a.sent >= t0 and _moved(a, before)), None),
        next((p.sent for p in probes if p.sent >= t0 and p.address and p.address not in before), None),
        recovery_start,
    ]
    lost = ", ".join(before)
    missing = (
        f"the authoritative server never stopped answering {lost}",
        f"the runner's resolver never stopped answering {lost}"
        if resolver
        else "no answer from the runner's resolver (apps[].dns.resolver)",
        "no probe of the global name connected to another address",
        "the global name's probes did not recover",
    )
    for phase, end, why in zip(PHASES, ends, missing, strict=True):
        if end is None:
            return DnsSplit(before, ttl, detection_bound, bound, error=f"{phase}: {why}")
    phases, start = [], t0
    bounds = (detection_bound, float(ttl) if ttl is not None else None, None, None)
    for name, end, phase_bound in zip(PHASES, ends, bounds, strict=True):
        end = max(end, start)
        phases.append(DnsPhase(name, start, end, end - start, phase_bound))
        start = end
    return DnsSplit(before, ttl, detection_bound, bound, tuple(phases))


def judge(split_: DnsSplit, rto_s: float | None, objective_s: float | None) -> Verdict:
    """The DNS failover's RTO against the objective; a miss names the longest phase, and any phase past
    the bound its settings imply is named either way. An error when a phase was not seen or no objective
    is set."""
    name = "DNS failover"
    if split_.error is not None:
        return Verdict("error", name, "every phase observed", "missing", split_.error, {})
    if objective_s is None or rto_s is None:
        why = "no RTO objective" if objective_s is None else "no RTO measured"
        return Verdict("error", name, "an RTO objective", "none", why, {})
    parts = ", ".join(f"{p.name} {p.seconds:.1f} s" for p in split_.phases)
    bound = f"{split_.bound_s:.1f} s" if split_.bound_s is not None else "unknown"
    over = "".join(
        f"; {p.name} past its bound of {p.bound_s:.1f} s"
        for p in split_.phases
        if p.bound_s is not None and p.seconds > p.bound_s
    )
    summary = f"{parts}; bound interval x threshold + TTL {bound}{over}"
    moments = {p.name: p.end for p in split_.phases}
    measured, expected = f"RTO {rto_s:.1f} s", f"RTO <= {objective_s:g} s"
    if rto_s <= objective_s:
        return Verdict(
            "pass", name, expected, measured, f"{measured} <= {objective_s:g} s ({summary})", moments
        )
    worst = max(split_.phases, key=lambda p: p.seconds)
    cause = f"{worst.name} took {worst.seconds:.1f} s"
    if worst.name == "cache expiry" and split_.ttl_s is not None:
        cause += f" (the resolver kept {', '.join(split_.before)} for its TTL of {split_.ttl_s} s)"
    return Verdict(
        "fail", name, expected, measured, f"{measured} > {objective_s:g} s: {cause}; {summary}", moments
    )
