"""Scheduling capacity as the scheduler counts it: requests of pods and workloads, and what Ready nodes
have left (allocatable minus the requests of the pods bound to them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

TIMEOUT_S = 10


@dataclass(frozen=True)
class Resources:
    """CPU in cores and memory in bytes."""

    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)

    @classmethod
    def of(cls, values: dict[str, str] | None) -> Resources:
        values = values or {}
        return cls(parse_quantity(values.get("cpu", "0")), parse_quantity(values.get("memory", "0")))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory)

    def times(self, count: int) -> Resources:
        return Resources(self.cpu * count, self.memory * count)

    def at_least_zero(self) -> Resources:
        return Resources(max(self.cpu, Decimal(0)), max(self.memory, Decimal(0)))


def _total(resources: Iterable[Resources]) -> Resources:
    return sum(resources, Resources())


def pod_requests(spec: Any) -> Resources:
    """A pod spec's effective requests: the larger of its containers' sum and its largest init container,
    plus its overhead (what the scheduler reserves)."""

    def requests(container: Any) -> Resources:
        return Resources.of(container.resources.requests if container.resources else None)

    regular = _total(requests(c) for c in spec.containers or [])
    inits = [requests(c) for c in spec.init_containers or []]
    peak = Resources(
        max([regular.cpu, *(i.cpu for i in inits)]), max([regular.memory, *(i.memory for i in inits)])
    )
    return peak + Resources.of(spec.overhead)


def workload_requests(workload: Any) -> Resources:
    """The requests of every replica of a Deployment or StatefulSet (one pod for a DaemonSet's template)."""
    replicas = getattr(workload.spec, "replicas", None)
    return pod_requests(workload.spec.template.spec).times(1 if replicas is None else replicas)


def _ready(node: Any) -> bool:
    conditions = node.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ready and not node.spec.unschedulable


def free_capacity(core: client.CoreV1Api) -> Resources:
    """Allocatable minus requests, summed over the cluster's Ready, schedulable nodes."""
    nodes = {n.metadata.name: n for n in core.list_node(_request_timeout=TIMEOUT_S).items if _ready(n)}
    pods = core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed", _request_timeout=TIMEOUT_S
    ).items
    allocatable = _total(Resources.of(n.status.allocatable) for n in nodes.values())
    used = _total(pod_requests(p.spec) for p in pods if p.spec.node_name in nodes)
    return allocatable - used
