"""A scratch namespace: one a drill owns until it ends, e.g. to restore a backup into beside the original."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from harness.errors import FleetDrillError
from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed, are_names
from harness.permissions import Permission, verbs
from harness.timeline import Event


@dataclass(frozen=True)
class ScratchNamespace(Fault, kind="scratch-namespace"):
    """`namespaces` created in each target cluster, labelled with the fault's key; refused when a namespace of
    one of those names exists there already. Revert deletes every one of them, and everything in them, then
    waits until all are gone: Kubernetes' namespace controller takes some seconds for each (a fixed 5 s
    before it starts, then the pods' grace), so deleting them all first waits that out once, not once per
    namespace. The pods in them, the drill's scratch copies, are deleted at once (grace 0) once their
    namespace is terminating (no controller can make new ones there): the controller then finds none to
    wait for. Where that delete is forbidden the revert still completes, only slower (doctor names the
    missing grant). A namespace without the label is never deleted."""

    permissions: ClassVar[tuple[Permission, ...]] = verbs("create get delete", "namespaces") + verbs(
        "deletecollection", "pods"
    )
    namespaces: tuple[str, ...]
    delete_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not are_names(self.namespaces):
            raise ValueError(
                f"{self.kind}: expected namespaces as a list of namespace names, got {self.namespaces!r}"
            )

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            for namespace in self.namespaces:
                body = {"metadata": {"name": namespace, "labels": {kube.FAULT_LABEL: self.key}}}
                try:
                    api.create_namespace(body, _request_timeout=kube.REQUEST_TIMEOUT_S)
                except ApiException as exc:
                    if exc.status != 409 or not self._ours(api, namespace):
                        raise FleetDrillError(
                            f"scratch-namespace: cluster {cluster} already has namespace {namespace}, "
                            "which this drill did not make: it is left alone"
                        ) from None

    def revert(self, ctx: FaultContext) -> None:
        ours = []
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            ours += [(cluster, api, namespace) for namespace in self.namespaces if self._ours(api, namespace)]
        for _, api, namespace in ours:
            with kube.absent_is_fine():
                api.delete_namespace(namespace, _request_timeout=kube.REQUEST_TIMEOUT_S)
            try:
                api.delete_collection_namespaced_pod(
                    namespace, grace_period_seconds=0, _request_timeout=kube.REQUEST_TIMEOUT_S
                )
            except ApiException as exc:  # forbidden: the namespace controller deletes them, in their grace
                if exc.status not in (403, 404):
                    raise
        named = ", ".join(f"{namespace} in {cluster}" for cluster, _, namespace in ours)
        kube.wait_until(
            lambda: not any(self._ours(api, namespace) for _, api, namespace in ours),
            self.delete_timeout_s,
            f"namespaces to be gone: {named}",
        )

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Every namespace is there, the drill's own, in every target cluster."""
        missing = [
            f"{namespace} in {cluster}"
            for cluster in self.targets
            for namespace in self.namespaces
            if not self._ours(kube.core(ctx.api_client(cluster)), namespace)
        ]
        made = f"{', '.join(self.namespaces)} made in {', '.join(self.targets)}"
        return Evidence(not missing, f"namespaces missing: {'; '.join(missing)}" if missing else made)

    def _ours(self, api: CoreV1Api, namespace: str) -> bool:
        """The namespace exists and carries this fault's label."""
        try:
            found = api.read_namespace(namespace, _request_timeout=kube.REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return (found.metadata.labels or {}).get(kube.FAULT_LABEL) == self.key
