"""Burst/overflow: what the burst drill reads of the app's workload from the Kubernetes API (its
HorizontalPodAutoscaler, its pods left Pending for want of room, whether it runs at all in a cluster) and
its verdicts: the time until another cluster serves the excess (spill), and the primary serving alone again
once the load drops (return), from the global endpoint's probes. Nothing here knows which fleet or app."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import ApiClient, AutoscalingV2Api
from kubernetes.client.rest import ApiException

from harness import measure
from harness.config import App
from harness.errors import FleetDrillError
from harness.faults import kube
from harness.permissions import APP, Permission
from harness.samples import Coverage, ProbeSample, Verdict

BURST_PERMISSIONS = (
    Permission("list", "horizontalpodautoscalers", "autoscaling", APP),
    Permission("get", "deployments", "apps", APP),
    Permission("get", "statefulsets", "apps", APP),
    Permission("list", "pods", namespace=APP),
)
"""What the burst drill reads in each cluster: the autoscaler, the workload and its pods."""
POLL_S = 1.0
CAPPED_POLLS = 3
"""Polls in a row with the autoscaler at its maximum, wanting more, and no pod Pending: capped, not full."""


class Capped(FleetDrillError):
    """The autoscaler's maximum is below the load: it stays at its maximum, wanting more, while the primary's
    nodes still have room (no pod Pending). The cluster never fills, so nothing proves it spills when full."""


@dataclass(frozen=True)
class Autoscaler:
    """The HorizontalPodAutoscaler of the app's workload in one cluster, as its status says now."""

    name: str
    max_replicas: int
    current: int
    desired: int
    limited: bool
    """Its ScalingLimited condition says the load wants more replicas than its maximum (TooManyReplicas)."""

    def describe(self) -> str:
        wants = ", wanting more" if self.limited else ""
        return f"HorizontalPodAutoscaler {self.name} at {self.current} of at most {self.max_replicas}{wants}"


@dataclass(frozen=True)
class Full:
    """The primary full, proven from its API: the workload's pods left Pending as unschedulable."""

    at: float
    pending: tuple[str, ...]
    why: str
    """The scheduler's message on the first of them."""
    autoscaler: Autoscaler


def autoscaler(api: ApiClient, app: App) -> Autoscaler | None:
    """The HorizontalPodAutoscaler whose target is the app's workload in its namespace, None without one."""
    kind, _, name = app.workload.partition("/")
    found = AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(
        app.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S
    )
    for hpa in found.items:
        target = hpa.spec.scale_target_ref
        if target.kind.lower() == kind.lower() and target.name == name:
            conditions = hpa.status.conditions or []
            limited = any(
                c.type == "ScalingLimited" and c.status == "True" and c.reason == "TooManyReplicas"
                for c in conditions
            )
            status = hpa.status
            return Autoscaler(
                hpa.metadata.name,
                hpa.spec.max_replicas,
                status.current_replicas or 0,
                status.desired_replicas or 0,
                limited,
            )
    return None


def _workload(api: ApiClient, app: App) -> Any:
    kind, _, name = app.workload.partition("/")
    read = {
        "deployment": kube.apps(api).read_namespaced_deployment,
        "statefulset": kube.apps(api).read_namespaced_stateful_set,
    }[kind.lower()]
    return read(name, app.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S)


def unschedulable(api: ApiClient, app: App) -> list[tuple[str, str]]:
    """The workload's pods Pending because the scheduler found no node with room (its PodScheduled
    condition False, reason Unschedulable), each with the scheduler's message."""
    selector = kube.label_selector_text(_workload(api, app).spec.selector)
    pods = kube.core(api).list_namespaced_pod(
        app.namespace, label_selector=selector, _request_timeout=kube.REQUEST_TIMEOUT_S
    )
    found = []
    for pod in pods.items:
        if pod.status.phase != "Pending" or pod.metadata.deletion_timestamp is not None:
            continue
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                found.append((pod.metadata.name, condition.message or ""))
    return found


def absent(api: ApiClient, app: App, cluster: str) -> str | None:
    """Why the app cannot serve in `cluster`: its workload missing or without a ready replica; None when it
    has one (or the cluster's API does not answer: then nothing is claimed)."""
    try:
        workload = _workload(api, app)
    except ApiException as error:
        if error.status == 404:
            return f"{app.workload} is not in namespace {app.namespace} of {cluster}"
        return None
    except Exception:  # an API that does not answer proves nothing either way
        return None
    ready = (workload.status.ready_replicas or 0) if workload.status else 0
    return None if ready else f"{app.workload} in {cluster} has no ready replica"


def wait_room(api: ApiClient, app: App, cluster: str, deadline_s: float) -> None:
    """Poll until no pod of the workload is Pending for want of room in `cluster` (an earlier burst has
    passed), so that pods Pending later prove the drill's own load filled it; FleetDrillError naming them
    at the deadline."""
    deadline = time.monotonic() + deadline_s
    while pending := unschedulable(api, app):
        if time.monotonic() > deadline:
            names = ", ".join(name for name, _ in pending)
            raise FleetDrillError(
                f"{cluster} was full before the load: {len(pending)} pod(s) of {app.workload} still Pending "
                f"after {deadline_s:g} s ({names}); a burst drill starts from a primary with room"
            )
        time.sleep(POLL_S)


def wait_full(api: ApiClient, app: App, cluster: str, deadline_s: float) -> Full:
    """Poll `cluster`'s API until the workload has pods Pending for want of room (the cluster is full);
    Capped when its autoscaler stays at its maximum, wanting more, with none Pending; FleetDrillError at
    the deadline (the load did not fill it: no proof)."""
    deadline, capped = time.monotonic() + deadline_s, 0
    while True:
        scaler = autoscaler(api, app)
        if scaler is None:
            raise FleetDrillError(f"the HorizontalPodAutoscaler of {app.workload} in {cluster} is gone")
        pending = unschedulable(api, app)
        if pending:
            return Full(time.monotonic(), tuple(name for name, _ in pending), pending[0][1], scaler)
        at_max = scaler.limited and scaler.current >= scaler.max_replicas
        capped = capped + 1 if at_max else 0
        if capped >= CAPPED_POLLS:
            raise Capped(
                f"the HorizontalPodAutoscaler's maximum is below the load: {scaler.describe()} in {cluster} "
                f"with no pod of {app.workload} Pending, so {cluster} never fills and never proves it spills "
                f"when full; raise {scaler.name}'s maxReplicas above what {cluster}'s nodes hold"
            )
        if time.monotonic() > deadline:
            raise FleetDrillError(
                f"the load did not fill {cluster} within {deadline_s:g} s: no pod of {app.workload} Pending "
                f"({scaler.describe()}); no proof that {cluster} was full"
            )
        time.sleep(POLL_S)


def origin(sample: ProbeSample) -> str:
    """The cluster that answered a probe: its served_by up to the first "/"."""
    return (sample.served_by or "").split("/")[0]


def judge_spill(
    samples: Sequence[ProbeSample],
    primary: str,
    t0: float,
    full: Full,
    objective_s: float,
    coverage: Coverage,
    absent_from: dict[str, str],
) -> Verdict:
    """Spill: from t0 (the load began) until a probe of the global endpoint is answered by another cluster
    than the primary, within the objective; and other clusters still serve while the primary is full (from
    full.at to the end of the coverage window). absent_from names why the app cannot serve in a cluster."""
    expected = f"<= {objective_s:g} s, and served by another cluster than {primary} while it is full"
    moments: dict[str, float | None] = {"t0": t0, "full": full.at, "end": coverage.end}
    if not coverage.ok:
        why = f"spill not judged: the probes do not cover the burst: {'; '.join(coverage.problems)}"
        return Verdict("error", "spill", expected, "not measured", why, moments)
    spilled = [s for s in samples if s.ok and s.sent >= t0 and origin(s) not in ("", primary)]
    missing = "; ".join(absent_from.values())
    because = f" ({missing})" if missing else ""
    if not spilled:
        message = (
            f"no probe of the global endpoint was answered by another cluster than {primary} in the "
            f"{coverage.end - t0:.1f} s of load, {len(full.pending)} pod(s) Pending in {primary}{because}"
        )
        return Verdict("fail", "spill", expected, "never", message, moments)
    first = spilled[0]
    spill_s = first.received - t0
    moments["spill"] = first.received
    while_full = [s for s in spilled if s.sent >= full.at]
    if not while_full:
        message = (
            f"another cluster answered at +{spill_s:.2f} s, but none while {primary} was full "
            f"(from +{full.at - t0:.1f} s){because}"
        )
        return Verdict("fail", "spill", expected, f"{spill_s:.2f} s", message, moments)
    ok = spill_s <= objective_s
    message = (
        f"{origin(first)} served the excess {spill_s:.2f} s after the load began "
        f"({'within' if ok else 'above'} the {objective_s:g} s objective), and {len(while_full)} probes "
        f"while {primary} was full ({len(full.pending)} pod(s) Pending)"
    )
    return Verdict("pass" if ok else "fail", "spill", expected, f"{spill_s:.2f} s", message, moments)


def judge_return(
    samples: Sequence[ProbeSample],
    primary: str,
    dropped: float,
    objective_s: float,
    coverage: Coverage,
    latency_bound: float | None,
) -> Verdict:
    """Return: from `dropped` (the load stopped) until every probe of the global endpoint is answered by
    the primary to the end of the coverage window, within the objective."""
    expected = f"{primary} alone within {objective_s:g} s of the load dropping"
    moments: dict[str, float | None] = {"dropped": dropped, "end": coverage.end}
    if not coverage.ok:
        why = f"return not judged: the probes do not cover it: {'; '.join(coverage.problems)}"
        return Verdict("error", "return", expected, "not measured", why, moments)
    after = [s for s in samples if dropped <= s.sent < coverage.end]
    elsewhere = [
        i for i, s in enumerate(after) if measure.probe_failed(s, latency_bound) or origin(s) != primary
    ]
    if elsewhere and elsewhere[-1] == len(after) - 1:
        last = after[-1]
        said = last.error or f"served by {origin(last) or 'no cluster'}"
        message = (
            f"{primary} was not serving alone by the end, {coverage.end - dropped:.1f} s after the load "
            f"dropped: the last probe: {said}"
        )
        return Verdict("fail", "return", expected, "never", message, moments)
    back = after[elsewhere[-1] + 1] if elsewhere else after[0]
    return_s = max(0.0, back.sent - dropped)
    moments["returned"] = back.sent
    ok = return_s <= objective_s
    message = (
        f"{primary} served alone {return_s:.2f} s after the load dropped "
        f"({'within' if ok else 'above'} the {objective_s:g} s objective; {len(after) - len(elsewhere)} of "
        f"{len(after)} probes after it answered by {primary})"
    )
    return Verdict("pass" if ok else "fail", "return", expected, f"{return_s:.2f} s", message, moments)


def by_cluster(requests: Sequence[Any], who: Callable[[Any], str]) -> dict[str, int]:
    """How many of `requests` each cluster (or error) answered."""
    counts: dict[str, int] = {}
    for request in requests:
        counts[who(request)] = counts.get(who(request), 0) + 1
    return counts
