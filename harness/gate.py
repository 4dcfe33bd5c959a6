"""The progressive-rollout gate: may a new version that reached a stage go on to the next?

`fleetdrill gate --stage NAME` runs, against the stage's clusters (the fleet file's `rollout.stages`):
- rollout: the app's workload in every cluster of the stage has rolled out (each replica updated and
  available; with an expected image, every container runs it): proof the version judged is there;
- probes: the app's health path in each cluster of the stage, probed for the soak window at 50 Hz with the
  app's contract; availability (and p99 latency, when set) against the stage's own bounds, else the app's
  objectives (unset: an error naming both fields); a failure names what the failed probes got;
- SLOs: the app's PromQL objectives over the soak window, in the stage's clusters (harness.promslo);
- parity: each cluster of the stage against the first cluster of the stage before (harness.parity; the
  replica count is each environment's own and not compared);
- DR readiness: each passive cluster of the stage's environments outside the stage can take the new
  version over: the CRDs of its custom resources, the namespace, the Secrets and ConfigMaps (with their
  keys) the new pod template references, spare capacity, and the passive cluster serving (what
  `fleetdrill doctor` checks of a takeover, against the stage's version instead of the active one's).
A check with nothing to judge is never a pass: parity in the first stage and DR readiness where no passive
cluster takes over are notes, and a gate that judged nothing is an error.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

from kubernetes import client

from harness import appcontract, measure, parity
from harness.config import App, Fleet, Stage
from harness.drill import DrillSettings, probe_timeout
from harness.fleet import NETWORK_ERRORS, FleetAccess, cause
from harness.preflight import Check, Preflight, presence
from harness.probeprocess import ProbeProcess
from harness.prometheus import Prometheuses
from harness.promslo import Windows, evaluate
from harness.samples import ProbeSample, Verdict

RATE_HZ = 50.0
MAX_GAP_S = DrillSettings.max_probe_gap_s  # a longer stretch without probes: not judged, as in a drill
PERCENTILE = 99.0


@dataclass(frozen=True)
class GateResult:
    """Every check of one stage's gate, the notes on what had nothing to judge, and how long it took."""

    stage: str
    app: str
    checks: tuple[Check, ...]
    notes: tuple[str, ...]
    soak_s: float
    took_s: float

    @property
    def problems(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not self.problems

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks] + [f"note {n}" for n in self.notes]

    def headline(self) -> str:
        took = f"{self.took_s:.1f} s, soak {self.soak_s:g} s"
        if not self.checks:
            return f"stage {self.stage}: error: no check judged app {self.app} ({took})"
        if self.passed:
            return f"stage {self.stage}: passed: {len(self.checks)} checks of app {self.app} held ({took})"
        causes = "; ".join(c.text() for c in self.problems)
        return (
            f"stage {self.stage}: stopped: {len(self.problems)} of {len(self.checks)} checks failed: {causes}"
        )


def run_gate(
    fleet: Fleet,
    access: FleetAccess,
    app: App,
    stage_name: str,
    soak_s: float | None = None,
    image: str | None = None,
) -> GateResult:
    """Every check of the stage's gate for `app` (soak_s: the fleet file's rollout.soak unless given)."""
    started = time.monotonic()
    stage, before = fleet.stage(stage_name)
    soak = soak_s if soak_s is not None else fleet.rollout.soak if fleet.rollout else 60.0
    checks, notes = [], []
    for cluster in stage.clusters:
        checks += _answered(cluster, lambda c=cluster: [rolled_out(access, app, c, image)])
    if all(c.ok for c in checks):  # probes judge the version only once it is there
        checks += soak_checks(fleet, app, stage, soak)
    else:
        notes.append("probes and SLOs: not run, the new version has not rolled out to the whole stage")
    if before is None:
        notes.append(f"configuration parity: {stage.name} is the first stage, there is none before it")
    else:
        for cluster in stage.clusters:
            checks += parity_checks(access, app, before, cluster)
    takers = takeover_clusters(fleet, stage)
    if not takers:
        environments = ", ".join(sorted({fleet.cluster(c).environment for c in stage.clusters}))
        notes.append(f"DR readiness: no passive cluster of environment {environments} outside the stage")
    preflight = Preflight(fleet, access, app)
    source = fleet.cluster(stage.clusters[0])
    for taker in takers:
        checks += _answered(
            taker,
            lambda t=taker: [
                *preflight.takeover(source, fleet.cluster(t)),
                *config_maps(access, app, source.name, t),
            ],
        )
    return GateResult(stage.name, app.name, tuple(checks), tuple(notes), soak, time.monotonic() - started)


def _answered(cluster: str, checks: Callable[[], list[Check]]) -> list[Check]:
    """The checks, or one error when the cluster's API did not answer them."""
    try:
        return checks()
    except (client.ApiException, *NETWORK_ERRORS) as error:
        return [Check(cluster, "Kubernetes API", "answers", cause(error)[0], False, error=True)]


def rolled_out(access: FleetAccess, app: App, cluster: str, image: str | None) -> Check:
    """The app's workload in `cluster` finished rolling out (and runs `image` in every container)."""
    workload = parity.read_workload(access, app, cluster)
    what = f"workload {app.workload} rolled out" + (f" with image {image}" if image else "")
    expected = "every replica updated and available" + (f", every container {image}" if image else "")
    if workload is None:
        return Check(cluster, what, expected, "missing", False)
    spec, status = workload.spec, workload.status
    desired = 1 if getattr(spec, "replicas", None) is None else spec.replicas
    updated = getattr(status, "updated_replicas", None) or getattr(status, "updated_number_scheduled", 0) or 0
    available = getattr(status, "available_replicas", None) or getattr(status, "number_available", 0) or 0
    current = (status.observed_generation or 0) >= (workload.metadata.generation or 0)
    images = sorted({c.image for c in spec.template.spec.containers})
    found = f"{updated} of {desired} updated, {available} available, images {', '.join(images)}"
    found += "" if current else " (the controller has not seen the latest spec)"
    ok = current and desired > 0 and updated == desired == available and (image is None or images == [image])
    return Check(cluster, what, expected, found, ok)


def soak_checks(fleet: Fleet, app: App, stage: Stage, soak_s: float) -> list[Check]:
    """Probes of the stage's clusters for soak_s, judged against the stage's bounds (else the app's), and
    the app's PromQL objectives over the same window."""
    index = fleet.apps.index(app)
    stage_index = next(i for i, s in enumerate(fleet.rollout.stages) if s.name == stage.name)  # type: ignore[union-attr]
    bound = stage.objectives.availability or app.objectives.availability
    latency = stage.objectives.latency or app.objectives.latency
    checks = []
    if bound is None:
        fields = (
            f"rollout.stages[{stage_index}].objectives.availability or apps[{index}].objectives.availability"
        )
        checks.append(Check(stage.name, "availability objective", f"set ({fields})", "not set", False, True))
    targets = {c: urljoin(app.endpoints[c], app.health_path) for c in stage.clusters if c in app.endpoints}
    for cluster in (c for c in stage.clusters if c not in targets):
        where = f"apps[{index}].endpoints.{cluster}"
        checks.append(Check(cluster, "endpoint to probe", f"set ({where})", "not set", False, True))
    if not targets and not app.objectives.promql:
        return checks
    samples, start, end = probe(app, targets, soak_s, latency)  # with no target: the soak, for PromQL
    for cluster in targets:
        mine = [s for s in samples if s.target == cluster]
        coverage = measure.check_coverage(mine, start, end, 1 / RATE_HZ, MAX_GAP_S * RATE_HZ)
        if bound is not None:
            verdict = measure.judge_availability(mine, bound, coverage, latency)
            checks.append(
                _from_verdict(cluster, "availability over the soak", verdict, failures(mine, latency))
            )
        if latency is not None:
            verdict = measure.judge_latency(mine, PERCENTILE, latency, coverage)
            checks.append(_from_verdict(cluster, "p99 latency over the soak", verdict, ""))
    if app.objectives.promql:
        # objectives of scope cluster are judged in the clusters the app has endpoints in: the stage's only
        staged = app.model_copy(update={"endpoints": dict.fromkeys(stage.clusters, "")})
        # no fault, no recovery: an objective over the recovery window is judged over the whole soak
        judged = evaluate(fleet, staged, Prometheuses(fleet), Windows(start, end, None, start))
        checks += [_from_verdict(stage.name, f"promql {v.objective}", v, v.message) for v in judged.verdicts]
    return checks


def probe(
    app: App, targets: dict[str, str], soak_s: float, latency: float | None
) -> tuple[list[ProbeSample], float, float]:
    """Every probe of the targets sent during soak_s, and the window's start and end (monotonic)."""
    if not targets:
        start = time.monotonic()
        threading.Event().wait(soak_s)
        return [], start, time.monotonic()
    prober = ProbeProcess(  # as a drill's: no thread of the gate makes it late
        targets,
        rate_hz=RATE_HZ,
        timeout_s=probe_timeout(latency),
        latency_bound_s=latency,
        **appcontract.probe_options(app),
    )
    with prober:
        start = time.monotonic()
        threading.Event().wait(soak_s)
        end = time.monotonic()
    return [s for s in prober.samples() if start <= s.sent < end], start, end


def failures(samples: list[ProbeSample], latency: float | None) -> str:
    """How many probes failed and what they got, most common first: "12 of 50 failed: HTTP 500 x12"."""
    failed = [s for s in samples if measure.probe_failed(s, latency)]
    if not failed:
        return ""
    got = Counter(f"HTTP {s.status}" if s.status is not None else s.error or "no answer" for s in failed)
    return f"{len(failed)} of {len(samples)} probes failed: " + ", ".join(
        f"{what} x{n}" for what, n in got.most_common(3)
    )


def _from_verdict(cluster: str, what: str, verdict: Verdict, detail: str) -> Check:
    found = verdict.measured + (f" ({detail})" if detail else "")
    if verdict.status == "error":
        found = f"not judged: {verdict.message}"
    return Check(cluster, what, verdict.expected, found, verdict.status == "pass", verdict.status == "error")


def parity_checks(access: FleetAccess, app: App, before: Stage, cluster: str) -> list[Check]:
    """The cluster's app against the first cluster of the stage before: one check per difference (the
    replica count aside), one passing check when there is none, an error when an API did not answer."""
    reference = before.clusters[0]
    what = f"configuration parity with {reference} (stage {before.name})"
    try:
        drifts = parity.compare(access, app, reference, cluster)
    except parity.ParityError as error:
        return [Check(cluster, what, "read", str(error), False, True)]
    drifts = [d for d in drifts if d.path != f"{app.workload}.replicas"]
    if not drifts:
        return [Check(cluster, what, "no difference", "none", True)]
    return [
        Check(
            cluster,
            f"{what}: {d.path}",
            repr(d.expected) if d.shown else "as there",
            repr(d.got) if d.shown else "differs",
            False,
        )
        for d in drifts
    ]


def takeover_clusters(fleet: Fleet, stage: Stage) -> list[str]:
    """The passive clusters that would take over for the stage's: of the stage's environments, outside it."""
    environments = {fleet.cluster(c).environment for c in stage.clusters}
    return [
        c.name
        for c in fleet.clusters
        if c.role == "passive" and c.environment in environments and c.name not in stage.clusters
    ]


def config_maps(access: FleetAccess, app: App, source: str, taker: str) -> list[Check]:
    """The ConfigMaps the new pod template (in `source`) references are in `taker`, with the same keys."""
    workload = parity.read_workload(access, app, source)
    if workload is None:
        return []  # Preflight.takeover says the workload is missing
    core = client.CoreV1Api(access.api_client(taker))
    checks = []
    required = parity.referenced(workload, required_only=True)[0]
    for name in sorted(parity.referenced(workload)[0]):
        what = f"configmap {app.namespace}/{name} (the new version reads it)"
        want = _keys(client.CoreV1Api(access.api_client(source)), name, app.namespace)
        if want is None and name not in required:
            continue  # optional, and the new version runs without it where it runs now
        have = _keys(core, name, app.namespace)
        if have is None:
            checks.append(presence(taker, what, False))
        else:
            missing = sorted(set(want or ()) - have)
            found = f"present, missing keys {', '.join(missing)}" if missing else "present with every key"
            checks.append(Check(taker, what, f"present with the keys of {source}'s", found, not missing))
    return checks


def _keys(core: client.CoreV1Api, name: str, namespace: str) -> set[str] | None:
    try:
        found = core.read_namespaced_config_map(name, namespace, _request_timeout=parity.TIMEOUT_S)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return set(found.data or {}) | set(found.binary_data or {})
