"""Soft cluster loss: the cluster stays up but stops running the app (nodes cordoned, workload at zero)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.evidence import all_of
from harness.permissions import APP, Permission, verbs
from harness.timeline import Event

SCALED_BY = kube.PREFIX + "scaled-by"
"""Annotation on a workload the fault scaled to zero: its key."""
REPLICAS_BEFORE = kube.PREFIX + "replicas-before"
"""Annotation on that workload: the replicas it had, which revert restores."""
_SCALABLE = ("deployment", "statefulset")


@dataclass(frozen=True)
class SoftClusterLoss(Fault, kind="soft-cluster-loss"):
    """Every node of each target cluster cordoned and the app's workload (`kind/name` in `namespace`)
    scaled to zero; its replicas are recorded on the workload first. Revert uncordons the nodes this fault
    cordoned and restores the recorded replicas (the pods then start again; the drill measures that)."""

    permissions: ClassVar[tuple[Permission, ...]] = (
        *verbs("list get patch", "nodes"),
        *(p for kind in _SCALABLE for p in verbs("get patch", f"{kind}s", "apps", APP)),
    )
    namespace: str
    workload: str

    def __post_init__(self) -> None:
        super().__post_init__()
        kind, _, name = self.workload.partition("/")
        if kind not in _SCALABLE or not name:
            raise ValueError(
                f"soft-cluster-loss: expected workload deployment/NAME or statefulset/NAME, "
                f"got {self.workload!r}"
            )

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            for node in kube.node_names(api, (), ""):
                kube.cordon(api, node, self.key)
            found = self._read(ctx, cluster)
            annotations = found.metadata.annotations or {}
            marks = {}
            if annotations.get(SCALED_BY) != self.key:  # not yet recorded: a second inject keeps the first
                marks = {SCALED_BY: self.key, REPLICAS_BEFORE: str(found.spec.replicas or 0)}
            self._patch(ctx, cluster, {"metadata": {"annotations": marks}, "spec": {"replicas": 0}})

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            kube.uncordon_owned(kube.core(ctx.api_client(cluster)), self.key)
            with kube.absent_is_fine():
                annotations = self._read(ctx, cluster).metadata.annotations or {}
                if annotations.get(SCALED_BY) == self.key:
                    body = {
                        "metadata": {"annotations": {SCALED_BY: None, REPLICAS_BEFORE: None}},
                        "spec": {"replicas": int(annotations[REPLICAS_BEFORE])},
                    }
                    self._patch(ctx, cluster, body)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """The workload runs no available replica in any target cluster."""
        found = []
        for cluster in self.targets:
            status = self._read(ctx, cluster).status
            available = (status.available_replicas or 0) if status else 0
            found.append(Evidence(available == 0, f"{cluster}: {self.workload} has {available} available"))
        return all_of(found)

    def _read(self, ctx: FaultContext, cluster: str) -> Any:
        kind, _, name = self.workload.partition("/")
        api = kube.apps(ctx.api_client(cluster))
        read = api.read_namespaced_deployment if kind == "deployment" else api.read_namespaced_stateful_set
        return read(name, self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S)

    def _patch(self, ctx: FaultContext, cluster: str, body: dict[str, Any]) -> None:
        kind, _, name = self.workload.partition("/")
        api = kube.apps(ctx.api_client(cluster))
        patch = api.patch_namespaced_deployment if kind == "deployment" else api.patch_namespaced_stateful_set
        patch(name, self.namespace, body, _request_timeout=kube.REQUEST_TIMEOUT_S)
