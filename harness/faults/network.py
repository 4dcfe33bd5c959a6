"""Network partition where no chaos operator runs: a NetworkPolicy that denies all traffic of the pods.

Only a network plugin that enforces NetworkPolicy makes this a real partition; the local fleet's does not,
so there it is an object in the API and nothing more (its tests check the API only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kubernetes.client import NetworkingV1Api
from kubernetes.client.exceptions import ApiException

from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.evidence import all_of, endpoint_down
from harness.permissions import APP, Permission, verbs
from harness.timeline import Event

Direction = Literal["ingress", "egress", "both"]
_TYPES = {"ingress": ["Ingress"], "egress": ["Egress"], "both": ["Ingress", "Egress"]}


@dataclass(frozen=True)
class DenyAllPolicy(Fault, kind="deny-all-policy"):
    """A deny-all NetworkPolicy in `namespace` of each target cluster for the pods with `pod_labels` (all
    pods when empty), cutting their `direction` traffic. Revert deletes the policy."""

    permissions: ClassVar[tuple[Permission, ...]] = verbs(
        "create delete", "networkpolicies", "networking.k8s.io", APP
    )
    namespace: str
    pod_labels: dict[str, str] = field(default_factory=dict)
    direction: Direction = "both"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in _TYPES:
            raise ValueError(
                f"deny-all-policy: expected direction one of {', '.join(_TYPES)}, got {self.direction!r}"
            )

    def inject(self, ctx: FaultContext) -> None:
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": self.key, "labels": {kube.FAULT_LABEL: self.key}},
            "spec": {
                "podSelector": {"matchLabels": dict(self.pod_labels)},
                "policyTypes": _TYPES[self.direction],
            },
        }
        for cluster in self.targets:
            try:
                NetworkingV1Api(ctx.api_client(cluster)).create_namespaced_network_policy(
                    self.namespace, body, _request_timeout=kube.REQUEST_TIMEOUT_S
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            with kube.absent_is_fine():
                NetworkingV1Api(ctx.api_client(cluster)).delete_namespaced_network_policy(
                    self.key, self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S
                )

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """The policy is enforced: each target's app endpoint stops answering the drill's probes (a policy
        the network plugin does not enforce changes nothing, and unprobed it cannot be shown)."""
        found = []
        for cluster in self.targets:
            down = endpoint_down(observed, cluster, started.t_mono)
            found.append(down or Evidence(False, f"{cluster}'s endpoints are not probed: enforcement unseen"))
        return all_of(found)
