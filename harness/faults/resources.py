"""Resource exhaustion: stress pods that take what a node has left, and a ResourceQuota squeeze."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from harness.config import STRESS_IMAGE
from harness.errors import FleetDrillError
from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.evidence import all_of
from harness.permissions import APP, EVERY, Permission, verbs
from harness.timeline import Event

MIB = 2**20
VM_SHARE = Decimal("0.9")  # of the memory limit the stress workers fill: near it, never past (OOM kill)
FILL_CALL_BYTES = 32 * MIB
"""The most memory one stress-ng memory worker fills in its one system call. The kernel holds a task to its
CPU limit only when it returns to user space (Linux 6.18 and later): one worker filling 1 GiB in one call
took 640 ms of CPU in 1.4 s at a 200m limit, and one such pod per node took every core of the machine from
the app under test. Filled 32 MiB a call, the pods keep to their limits (200 ms a second)."""
BURN_SHARE = 0.25
"""Of the CPU a stress pod requested, the least it must burn to count as stress (a busy runner gives less)."""
HOLD_SHARE = 0.5
"""Of the memory a stress pod requested, the least its working set must hold to count as stress."""
SAMPLE_S = 1.0
"""How long CPU time is watched to measure what a stress pod burns."""
STRESS_NAMESPACE = "default"
"""Where stress pods go unless the drill says otherwise."""


def requested(pods: list[Any]) -> dict[str, Decimal]:
    """CPU (cores) and memory (bytes) the containers of `pods` request."""
    total = {"cpu": Decimal(0), "memory": Decimal(0)}
    for pod in pods:
        for container in pod.spec.containers:
            for resource, amount in ((container.resources and container.resources.requests) or {}).items():
                if resource in total:
                    total[resource] += parse_quantity(amount)
    return total


def stress_pod(name: str, node: str, owner: str, cpu_m: int, memory: int, image: str) -> dict[str, Any]:
    """A Guaranteed pod bound to `node` (the image's entrypoint stress-ng) that spins `cpu_m` millicores and
    holds most of `memory` bytes. Its memory workers, one for each FILL_CALL_BYTES, share `--vm-bytes`
    (stress-ng divides it among them); each has the kernel fill every page as it maps them
    (`--vm-populate`), then sleeps holding them (`--vm-hang 0`; without it the worker unmaps and maps again,
    and the working set comes and goes). Filled by the workers' own writes instead, the memory grows only as
    fast as the pod's CPU limit lets it (180 MiB/s at 0.2 CPU on an idle machine): too slow for the fault's
    effect deadline on a busy one."""
    workers = max(1, math.ceil(cpu_m / 1000))
    args = ["--cpu", str(workers), "--cpu-load", str(min(100, max(1, cpu_m // (workers * 10))))]
    if memory >= MIB:
        vm_bytes = int(memory * VM_SHARE)
        fillers = math.ceil(vm_bytes / FILL_CALL_BYTES)
        args += ["--vm", str(fillers), "--vm-bytes", f"{vm_bytes // MIB}M", "--vm-populate", "--vm-hang", "0"]
    amounts = {"cpu": f"{max(cpu_m, 1)}m", "memory": f"{max(memory, MIB) // MIB}Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {kube.FAULT_LABEL: owner}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "stress",
                    "image": image,
                    "args": args,  # to the image's entrypoint, stress-ng
                    "resources": {"requests": amounts, "limits": amounts},
                }
            ],
        },
    }


@dataclass(frozen=True)
class NodeStress(Fault, kind="node-stress"):
    """On each chosen node (named, matching `selector`, or all) of the target clusters, a stress pod that
    requests and burns `cpu_fraction` of the CPU and `memory_fraction` of the memory the node's allocatable
    still leaves free: nothing else fits there, and what runs there competes for what is left. Revert
    deletes the stress pods."""

    permissions: ClassVar[tuple[Permission, ...]] = (
        *verbs("list get", "nodes"),
        Permission("get", "nodes/proxy"),  # the kubelet's Summary API: what the stress pods consume
        Permission("list", "pods", namespace=EVERY),
        *verbs("create list deletecollection", "pods", namespace=STRESS_NAMESPACE),
    )
    namespace: str = STRESS_NAMESPACE
    nodes: tuple[str, ...] = ()
    selector: str = ""
    cpu_fraction: float = 1.0
    memory_fraction: float = 1.0
    image: str = STRESS_IMAGE
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("cpu_fraction", "memory_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ValueError(f"node-stress: expected {name} in [0, 1], got {value!r}")
        kube.parse_selector(self.selector)

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            names = kube.node_names(api, self.nodes, self.selector)
            for node in names:
                self._start(api, node)
            count = len(names)
            kube.wait_until(
                lambda api=api, count=count: self._running(api) >= count,
                self.start_timeout_s,
                f"{count} stress pod(s) to run in cluster {cluster}",
            )

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            with kube.absent_is_fine():
                api.delete_collection_namespaced_pod(
                    self.namespace,
                    label_selector=f"{kube.FAULT_LABEL}={self.key}",
                    grace_period_seconds=1,  # not 0: the node stops the pod before the API forgets it
                    _request_timeout=kube.REQUEST_TIMEOUT_S,
                )
            kube.wait_until(
                lambda api=api: not self._pods(api), self.start_timeout_s, f"stress pods in {cluster} to end"
            )

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Every stress pod is Running and consuming, as its node's kubelet counts it (the Summary API): CPU
        time growing at BURN_SHARE or more of the CPU it requested, and HOLD_SHARE or more of the memory it
        requested in its working set. A pod that runs but burns nothing (an image without stress-ng, an
        admission policy that rewrote it) is no stress."""
        found = []
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            pods = self._pods(api)
            running = [pod for pod in pods if pod.status.phase == "Running"]
            if not pods or len(running) < len(pods):
                found.append(
                    Evidence(False, f"{cluster}: {len(running)} of {len(pods)} stress pod(s) running")
                )
                continue
            found += _consuming(api, cluster, running)
        return all_of(found)

    def _start(self, api: Any, node: str) -> None:
        found = api.read_node(node, _request_timeout=kube.REQUEST_TIMEOUT_S)
        allocatable = {key: parse_quantity(value) for key, value in (found.status.allocatable or {}).items()}
        on_node = [
            pod
            for pod in api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _request_timeout=kube.REQUEST_TIMEOUT_S
            ).items
            if pod.status.phase not in ("Succeeded", "Failed")
            and (pod.metadata.labels or {}).get(kube.FAULT_LABEL) != self.key
        ]
        used = requested(on_node)
        free_cpu = max(Decimal(0), allocatable.get("cpu", Decimal(0)) - used["cpu"])
        free_memory = max(Decimal(0), allocatable.get("memory", Decimal(0)) - used["memory"])
        cpu_m = int(free_cpu * 1000 * Decimal(str(self.cpu_fraction)))
        memory = int(free_memory * Decimal(str(self.memory_fraction)))
        body = stress_pod(f"{self.key}-{node}"[:63].rstrip("-"), node, self.key, cpu_m, memory, self.image)
        try:
            api.create_namespaced_pod(self.namespace, body, _request_timeout=kube.REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 409:  # already there: injected before a crash
                raise

    def _pods(self, api: Any) -> list[Any]:
        return api.list_namespaced_pod(
            self.namespace,
            label_selector=f"{kube.FAULT_LABEL}={self.key}",
            _request_timeout=kube.REQUEST_TIMEOUT_S,
        ).items

    def _running(self, api: Any) -> int:
        pods = self._pods(api)
        failed = [pod.metadata.name for pod in pods if pod.status.phase in ("Failed", "Succeeded")]
        if failed:
            raise FleetDrillError(f"node-stress: stress pod(s) {', '.join(failed)} ended instead of running")
        return sum(1 for pod in pods if pod.status.phase == "Running")


@dataclass(frozen=True)
class QuotaSqueeze(Fault, kind="quota-squeeze"):
    """A ResourceQuota in `namespace` of each target cluster with the `hard` limits given, or (none given)
    pods capped at the number running now: no new pod starts there, so a pod that dies is not replaced.
    Revert deletes the quota."""

    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("list", "pods", namespace=APP),
        *verbs("create get delete", "resourcequotas", namespace=APP),
    )
    namespace: str
    hard: dict[str, str] = field(default_factory=dict)

    def inject(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            api = kube.core(ctx.api_client(cluster))
            hard = dict(self.hard) or {"pods": str(self._pods_now(api))}
            body = {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": self.key, "labels": {kube.FAULT_LABEL: self.key}},
                "spec": {"hard": hard},
            }
            try:
                api.create_namespaced_resource_quota(
                    self.namespace, body, _request_timeout=kube.REQUEST_TIMEOUT_S
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def revert(self, ctx: FaultContext) -> None:
        for cluster in self.targets:
            with kube.absent_is_fine():
                kube.core(ctx.api_client(cluster)).delete_namespaced_resource_quota(
                    self.key, self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S
                )

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """The quota is enforced: the quota controller has taken up every limit (status.hard)."""
        found = []
        for cluster in self.targets:
            quota = kube.core(ctx.api_client(cluster)).read_namespaced_resource_quota(
                self.key, self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S
            )
            enforced = set((quota.status.hard or {}) if quota.status else {}) >= set(quota.spec.hard or {})
            state = "enforced" if enforced else "not yet taken up by the quota controller"
            found.append(Evidence(enforced, f"{cluster}: quota in {self.namespace} {state}"))
        return all_of(found)

    def _pods_now(self, api: Any) -> int:
        pods = api.list_namespaced_pod(self.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S).items
        return sum(1 for pod in pods if pod.status.phase not in ("Succeeded", "Failed"))


def _usage(api: Any, pods: list[Any]) -> dict[str, tuple[int, int]]:
    """By pod name: its cumulative CPU time (ns) and memory working set (bytes), from its node's kubelet."""
    found = {}
    for node in sorted({pod.spec.node_name for pod in pods}):
        for entry in kube.node_summary(api, node).get("pods", []):
            ref, cpu, memory = (entry.get(key) or {} for key in ("podRef", "cpu", "memory"))
            found[(ref.get("namespace"), ref.get("name"))] = (
                int(cpu.get("usageCoreNanoSeconds") or 0),
                int(memory.get("workingSetBytes") or 0),
            )
    usage = {}
    for pod in pods:
        key = (pod.metadata.namespace, pod.metadata.name)
        if key not in found:
            raise FleetDrillError(f"node {pod.spec.node_name}'s kubelet reports no stats of pod {key[1]}")
        usage[pod.metadata.name] = found[key]
    return usage


def _consuming(api: Any, cluster: str, pods: list[Any]) -> list[Evidence]:
    """Whether each running stress pod burns and holds what it requested (BURN_SHARE, HOLD_SHARE), over
    SAMPLE_S."""
    before, began = _usage(api, pods), time.monotonic()
    time.sleep(SAMPLE_S)
    after, elapsed = _usage(api, pods), time.monotonic() - began
    found = []
    for pod in pods:
        wants, name = requested([pod]), pod.metadata.name
        burns, holds = (after[name][0] - before[name][0]) / 1e9 / elapsed, after[name][1]
        burning = burns >= BURN_SHARE * float(wants["cpu"])
        holding = wants["memory"] < MIB or holds >= HOLD_SHARE * float(wants["memory"])
        burned = f"burns {burns:.2f} of {float(wants['cpu']):.2f} CPU requested"
        held = f"holds {holds // MIB} of {int(wants['memory']) // MIB} MiB"
        found.append(
            Evidence(burning and holding, f"{cluster}: stress pod on {pod.spec.node_name} {burned}, {held}")
        )
    return found
