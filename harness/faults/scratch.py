"""A scratch namespace: one a drill owns until it ends, e.g. to restore a backup into beside the original."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from harness.errors import FleetDrillError
from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.permissions import Permission, verbs
from harness.timeline import Event


@dataclass(frozen=True)
class ScratchNamespace(Fault, kind="scratch-namespace"):
    """`namespace` created in each target cluster, labelled with the fault's key; refused when a namespace of
    that name exists there already. Revert deletes it, and everything in it, and waits until it is gone (a
    namespace without the label is never deleted)."""

    permissions: ClassVar[tuple[Permission, ...]] = verbs("create get delete", "namespaces")
    namespace: str
    delete_timeout_s: float = 120.0

    def inject(self, ctx: FaultContext) -> None:
        body = {"metadata": {"name": self.namespace, "labels": {kube.FAULT_LABEL: self.key}}}
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            try:
                api.create_namespace(body, _request_timeout=kube.REQUEST_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 409 or not self._ours(api):
                    raise FleetDrillError(
                        f"scratch-namespace: cluster {cluster} already has namespace {self.namespace}, "
                        "which this drill did not make: it is left alone"
                    ) from None

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            if not self._ours(api):
                continue
            with kube.absent_is_fine():
                api.delete_namespace(self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S)
            kube.wait_until(
                lambda api=api: not self._ours(api),
                self.delete_timeout_s,
                f"namespace {self.namespace} to be gone from cluster {cluster}",
            )

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """The namespace is there, the drill's own, in every target cluster."""
        missing = [c for c in self.targets if not self._ours(kube.core(ctx.api_client(c)))]
        where = ", ".join(missing or self.targets)
        return Evidence(
            not missing, f"namespace {self.namespace} {'missing in' if missing else 'made in'} {where}"
        )

    def _ours(self, api: CoreV1Api) -> bool:
        """The namespace exists and carries this fault's label."""
        try:
            found = api.read_namespace(self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return (found.metadata.labels or {}).get(kube.FAULT_LABEL) == self.key
