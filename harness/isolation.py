"""Environment segmentation: which clusters an isolation drill faults (every non-prod one) and which it
measures (prod), the safety check before its first fault, and its verdicts: prod's objectives held while
the others were faulted, a miss naming the coupling it saw (the prod endpoint that degraded, and the
non-prod cluster whose fault it degraded after). Pure but for the fleet file it reads."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness import measure, safety
from harness.config import App, Fleet
from harness.errors import ConfigError, FleetDrillError
from harness.samples import Coverage, ProbeSample, Verdict, Window
from harness.sentinels import GLOBAL

PROD = "prod"
FAULTED = {"cluster-loss": "lost", "wan-partition": "cut off"}
"""What a non-prod cluster's fault did to it, in a miss's message."""
LATENCY_PERCENTILE = 99.0


class NotSegmented(FleetDrillError):
    """Every cluster of the fleet is dev (the default): it does not segment, there is nothing to drill."""


@dataclass(frozen=True)
class Segments:
    """The prod clusters (measured) and the others (faulted), each in the fleet file's order."""

    prod: tuple[str, ...]
    others: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One non-prod cluster faulted: when its fault began (t_i) and showed (t_e)."""

    cluster: str
    environment: str
    started: float
    effective: float
    fault: str = "cluster-loss"
    """The fault's kind (harness.faults): how the cluster was faulted."""


def segments(fleet: Fleet) -> Segments:
    """The fleet's prod and non-prod clusters. NotSegmented when every cluster is dev (the default);
    ConfigError when there is no prod cluster to measure or no other cluster to fault."""
    if not fleet.segmented():
        raise NotSegmented(
            f"fleet {fleet.name} does not segment environments: every cluster is dev "
            "(clusters[].environment, dev unless set), so there is no prod to isolate "
            "(`fleetdrill fleet up --environments prod,staging,dev` starts a local fleet that segments)"
        )
    prod = tuple(c.name for c in fleet.clusters if c.environment == PROD)
    others = tuple(c.name for c in fleet.clusters if c.environment != PROD)
    found = ", ".join(f"{c.name}={c.environment}" for c in fleet.clusters)
    if not prod:
        raise ConfigError(
            f"fleet {fleet.name} has no prod cluster ({found}): the isolation drill measures prod while the "
            "others are faulted; set clusters[].environment: prod on the production cluster(s)"
        )
    if not others:
        raise ConfigError(
            f"fleet {fleet.name} has no non-prod cluster to fault ({found}): the isolation drill faults dev "
            "and staging and never prod; set clusters[].environment on the other clusters"
        )
    return Segments(prod, others)


def check_before(fleet: Fleet, found: Segments) -> None:
    """Before any fault: every non-prod cluster may be faulted, all at once (the allowlist and the blast
    radius); SafetyError otherwise, so the drill refuses before it acts. Prod is never a target, whatever
    --allow-prod says: these checks never allow one."""
    for cluster in found.others:
        safety.check_allowed(fleet, cluster)
    safety.check_blast_radius(fleet, found.others)


def judge(
    fleet: Fleet,
    app: App,
    samples: Mapping[str, Sequence[ProbeSample]],
    steps: Sequence[Step],
    end: float,
    interval_s: float,
    gap_factor: float,
) -> tuple[list[Verdict], dict[str, object]]:
    """Prod's availability (and p99 latency, where the fleet file sets a latency objective) at each prod
    endpoint and the global endpoint, from the first fault to `end`, the probes' coverage checked at their
    interval (a gap is an error, never a pass); each miss names the coupling seen. With no fault, or no
    endpoint of the app in a prod cluster, an error verdict: nothing was measured there."""
    if not steps:
        why = "isolation not judged: no non-prod cluster was faulted"
        return [Verdict("error", "isolation", "every non-prod cluster faulted", "no fault", why, {})], {}
    start, index = steps[0].started, [a.name for a in fleet.apps].index(app.name)
    prod = [c.name for c in fleet.clusters if c.environment == PROD]
    verdicts = [_unmeasured(app, index, cluster) for cluster in prod if cluster not in app.endpoints]
    targets = [c for c in prod if c in app.endpoints] + ([GLOBAL] if app.global_endpoint else [])
    measured: dict[str, object] = {}
    latency = app.objectives.latency
    for target in targets:
        chosen = [s for s in samples.get(target, []) if start <= s.sent < end]
        coverage = measure.check_coverage(chosen, start, end, interval_s, gap_factor)
        judged = [_availability(app, index, chosen, coverage)]
        if latency is not None:
            judged.append(measure.judge_latency(chosen, LATENCY_PERCENTILE, latency, coverage))
        worst = measure.longest_outage(chosen, latency)
        measured[target] = {
            "availability": measure.availability(chosen, latency_bound=latency),
            "latency_s": measure.latency_percentiles(chosen),
            "probes": len(chosen),
            "longest_outage_s": worst.duration if worst else 0.0,
            "outage_began_s": worst.start - start if worst else None,
            "served_by_non_prod": _served_elsewhere(chosen, prod),
        }
        verdicts += [_named(v, target, _coupling(target, worst, steps)) for v in judged]
    return verdicts, {"faulted": [_step_figures(s, start) for s in steps], "prod": measured}


def _availability(app: App, index: int, chosen: Sequence[ProbeSample], coverage: Coverage) -> Verdict:
    goal = app.objectives.availability
    if goal is None:
        where = f"apps[{index}].objectives.availability"
        why = f"availability not judged: the fleet file does not set {where}"
        return Verdict("error", "availability", f"{where} set", "no objective", why, {})
    return measure.judge_availability(chosen, goal, coverage, app.objectives.latency)


def _unmeasured(app: App, index: int, cluster: str) -> Verdict:
    where = f"apps[{index}].endpoints.{cluster}"
    why = (
        f"prod cluster {cluster} not measured: app {app.name} has no endpoint there ({where}); the isolation "
        "drill measures the app in every prod cluster"
    )
    return Verdict("error", f"{cluster} availability", f"{where} set", "no endpoint", why, {})


def _coupling(target: str, worst: Window | None, steps: Sequence[Step]) -> str:
    """Which non-prod fault the target's longest outage began under, for a miss's message."""
    endpoint = "the global endpoint" if target == GLOBAL else f"prod endpoint {target}"
    if worst is None:
        return f"{endpoint} degraded while {_listed(steps)} were faulted"
    longest = f"{endpoint} degraded: its longest outage ({worst.duration:.1f} s)"
    under = [s for s in steps if s.started <= worst.start]
    if not under:
        return f"{longest} began before the first non-prod fault"
    last = under[-1]
    return (
        f"{longest} began {worst.start - last.started:.1f} s after non-prod cluster {last.cluster} "
        f"({last.environment}) was {FAULTED.get(last.fault, 'faulted')} (faulted then: {_listed(under)})"
    )


def _named(verdict: Verdict, target: str, coupling: str) -> Verdict:
    """The verdict of one target: its objective names it; a miss leads with the coupling seen."""
    name = "global" if target == GLOBAL else target
    message = f"coupling: {coupling}; {verdict.message}" if verdict.status == "fail" else verdict.message
    return Verdict(
        verdict.status,
        f"{name} {verdict.objective}",
        verdict.expected,
        verdict.measured,
        message,
        verdict.moments,
    )


def _served_elsewhere(chosen: Sequence[ProbeSample], prod: Sequence[str]) -> dict[str, int]:
    """How many probes a cluster outside prod answered, by cluster (the answers' served-by identity)."""
    found: dict[str, int] = {}
    for sample in chosen:
        origin = (sample.served_by or "").split("/")[0]
        if origin and origin not in prod:
            found[origin] = found.get(origin, 0) + 1
    return found


def _listed(steps: Sequence[Step]) -> str:
    return ", ".join(f"{s.cluster} ({s.environment})" for s in steps)


def _step_figures(step: Step, start: float) -> dict[str, object]:
    return {
        "cluster": step.cluster,
        "environment": step.environment,
        "fault": step.fault,
        "injected_s": step.started - start,
        "effective_s": step.effective - start,
    }
