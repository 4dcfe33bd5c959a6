"""Pod kill: delete pods chosen by namespace and label selector, as Chaos Mesh's PodChaos pod-kill does."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from harness.errors import FleetDrillError
from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.evidence import after, all_of
from harness.permissions import APP, Permission, verbs
from harness.timeline import Event

log = logging.getLogger(__name__)

Mode = Literal["one", "all", "fixed", "fixed-percent"]
MODES: tuple[str, ...] = ("one", "all", "fixed", "fixed-percent")


def choose(pods: list[Any], mode: str, value: int | None, rng: random.Random) -> list[Any]:
    """The pods to kill out of `pods`, as Chaos Mesh picks them: one at random, all, `value` of them at
    random, or `value` percent of them (rounded down, at least one)."""
    if mode == "all":
        return list(pods)
    if mode == "one":
        count = 1
    elif mode == "fixed":
        count = value or 0
    else:
        count = max(1, math.floor(len(pods) * (value or 0) / 100))
    return rng.sample(pods, min(count, len(pods)))


@dataclass(frozen=True)
class PodKill(Fault, kind="pod-kill"):
    """Delete the pods of `namespace` matching `selector` in each target cluster (`mode` picks which).

    Revert: when some Deployment, StatefulSet or DaemonSet of the namespace owns pods the selector matches,
    wait (at most ready_timeout_s) until each has all its replicas Ready again; when none does (bare pods),
    there is nothing to revert and the revert says so in the log. Unlike the other kinds, injecting twice
    kills twice (the ledger only ever reverts, so a crash never re-injects).
    """

    permissions: ClassVar[tuple[Permission, ...]] = (
        *verbs("list delete", "pods", namespace=APP),
        *(Permission("list", kind, "apps", APP) for kind in ("deployments", "statefulsets", "daemonsets")),
    )
    namespace: str
    selector: str = ""
    mode: Mode = "one"
    value: int | None = None
    """How many pods (fixed) or what percentage of them (fixed-percent)."""
    grace_period_s: int | None = None
    """Grace period of the deletes; None: each pod's own terminationGracePeriodSeconds."""
    ready_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"pod-kill: expected mode one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode in ("fixed", "fixed-percent") and not (isinstance(self.value, int) and self.value > 0):
            raise ValueError(f"pod-kill: mode {self.mode} needs a value above zero, got {self.value!r}")
        kube.parse_selector(self.selector)

    def inject(self, ctx: FaultContext) -> None:
        rng = random.Random()
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            pods = [
                pod
                for pod in api.list_namespaced_pod(
                    self.namespace,
                    label_selector=self.selector or None,
                    _request_timeout=kube.REQUEST_TIMEOUT_S,
                ).items
                if pod.metadata.deletion_timestamp is None and pod.status.phase in ("Pending", "Running")
            ]
            if not pods:
                where = f"namespace {self.namespace}" + (
                    f" matching {self.selector}" if self.selector else ""
                )
                raise FleetDrillError(f"pod-kill in cluster {cluster}: no running pod in {where}")
            for pod in choose(pods, self.mode, self.value, rng):
                with kube.absent_is_fine():
                    api.delete_namespaced_pod(
                        pod.metadata.name,
                        self.namespace,
                        grace_period_seconds=self.grace_period_s,
                        _request_timeout=kube.REQUEST_TIMEOUT_S,
                    )

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """In every target cluster a matching pod is ending, or one was made after injection began (the
        killed pods' replacement)."""
        found = []
        for cluster in self.targets:
            pods = (
                kube.core(ctx.api_client(cluster))
                .list_namespaced_pod(
                    self.namespace,
                    label_selector=self.selector or None,
                    _request_timeout=kube.REQUEST_TIMEOUT_S,
                )
                .items
            )
            ending = sum(1 for pod in pods if pod.metadata.deletion_timestamp is not None)
            new = sum(1 for pod in pods if after(pod.metadata.creation_timestamp, started.t_wall))
            detail = f"{cluster}: {ending} matching pod(s) ending, {new} made since the kill"
            found.append(Evidence(bool(ending or new), detail))
        return all_of(found)

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            workloads = self.workloads(ctx, cluster)
            if not workloads:
                log.info("pod-kill in %s: no workload owns the killed pods, nothing to revert", cluster)
            api = kube.core(ctx.api_client(cluster))
            for name, selector, wanted in workloads:
                kube.wait_until(
                    lambda api=api, selector=selector, wanted=wanted: self._ready(api, selector) >= wanted,
                    self.ready_timeout_s,
                    f"{name} in cluster {cluster} to have {wanted} ready pod(s) again",
                )

    def workloads(self, ctx: FaultContext, cluster: str) -> list[tuple[str, str, int]]:
        """(kind/name, its pod selector, pods it wants ready) of each workload whose pods the selector
        matches."""
        api = kube.apps(ctx.api_client(cluster))
        found = []
        kinds = (
            ("deployment", api.list_namespaced_deployment),
            ("statefulset", api.list_namespaced_stateful_set),
            ("daemonset", api.list_namespaced_daemon_set),
        )
        for kind, lister in kinds:
            for item in lister(self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S).items:
                if not kube.selector_matches(self.selector, item.spec.template.metadata.labels):
                    continue
                wanted = (
                    item.status.desired_number_scheduled or 0
                    if kind == "daemonset"
                    else item.spec.replicas or 0
                )
                found.append(
                    (f"{kind}/{item.metadata.name}", kube.label_selector_text(item.spec.selector), wanted)
                )
        return found

    def _ready(self, api: Any, selector: str) -> int:
        pods = api.list_namespaced_pod(
            self.namespace, label_selector=selector or None, _request_timeout=kube.REQUEST_TIMEOUT_S
        ).items
        return sum(1 for pod in pods if kube.pod_ready(pod))
