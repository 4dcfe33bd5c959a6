"""The kubelet's eviction manager for memory (pkg/kubelet/eviction), on the node's cgroups.

memory.available is the node's allocatable minus the working set of its pods' cgroups. Below the hard
threshold the node reports MemoryPressure and evicts one pod per pass, ranked as the kubelet ranks
them (over its request first, then lower priority, then usage above request): a Warning Event, then
the pod is killed with a 1 s grace and left Failed, reason Evicted, with a DisruptionTarget condition.
The condition stays for the transition period after the last pass below the threshold; meanwhile
BestEffort pods are rejected at admission. The messages are the kubelet's, trailing spaces included.
"""

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.utils import parse_quantity

from harness.localfleet.nodeagent import STRATEGIC
from harness.localfleet.nodeagent.cgroups import NodeCgroups
from harness.localfleet.nodeagent.node import NodeReporter
from harness.localfleet.nodeagent.pods import PodWorker, stamp

REASON = "Evicted"
NODE_LOW = "The node was low on resource: {}. "
THRESHOLD_MET = "Threshold quantity: {}, available: {}. "
CONTAINER_USAGE = "Container {} was using {}, request is {}, has larger consumption of {}. "
NODE_CONDITION = "The node had condition: {}. "
REJECTED = "Pod was rejected: "
SIGNAL = "memory.available"
PRESSURE_TAINT = "node.kubernetes.io/memory-pressure"
CRITICAL_PRIORITY = 2_000_000_000  # scheduling.SystemCriticalPriority: never evicted
PASS_INTERVAL_S = 1.0
CLEANUP_DEADLINE_S = 30.0
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def binary(value: int) -> str:
    """Bytes as resource.Quantity prints a BinarySI value: 71764Ki, 100Mi, 1048577."""
    exponent = 0
    if abs(value) >= 1024:
        while exponent < len(BINARY_SUFFIXES) - 1 and value % 1024 ** (exponent + 1) == 0:
            exponent += 1
    return f"{value // 1024**exponent}{BINARY_SUFFIXES[exponent]}"


def seconds(text: str) -> float:
    """A Go duration (10s, 5m, 1m30s, 500ms) in seconds."""
    parts = DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 10s, 5m or 1m30s)")
    return sum(float(number) * UNIT_S[unit] for number, unit in parts)


@dataclass(frozen=True)
class Config:
    """The node's memory and its eviction settings, as the kubelet's flags give them."""

    allocatable: int
    threshold: int
    threshold_text: str
    transition_s: float

    @classmethod
    def parse(cls, allocatable: str, hard: str, transition: str) -> "Config":
        """From --memory-allocatable 2Gi, --eviction-hard memory.available<100Mi (or <5%) and
        --eviction-pressure-transition-period 10s."""
        signal, _, quantity = hard.partition("<")
        if signal != SIGNAL or not quantity:
            raise ValueError(f"--eviction-hard {hard!r}: expected {SIGNAL}<QUANTITY, e.g. {SIGNAL}<100Mi")
        memory = int(parse_quantity(allocatable))
        if quantity.endswith("%"):
            threshold = int(memory * float(quantity[:-1]) / 100)
            return cls(memory, threshold, binary(threshold), seconds(transition))
        return cls(memory, int(parse_quantity(quantity)), quantity, seconds(transition))


def memory_request(spec: client.V1Container) -> str:
    return ((spec.resources.requests if spec.resources else None) or {}).get("memory", "0")


def tolerates_pressure(toleration: client.V1Toleration) -> bool:
    """The toleration tolerates the memory-pressure:NoSchedule taint."""
    if toleration.effect not in (None, "", "NoSchedule"):
        return False
    if not toleration.key:
        return toleration.operator == "Exists"
    return toleration.key == PRESSURE_TAINT and (toleration.operator == "Exists" or not toleration.value)


def critical(pod: client.V1Pod) -> bool:
    return (pod.spec.priority or 0) >= CRITICAL_PRIORITY


class EvictionManager:
    """Watches the node's memory, reports MemoryPressure, evicts and admits as the kubelet does."""

    def __init__(
        self,
        api: client.ApiClient,
        reporter: NodeReporter,
        cgroups: NodeCgroups,
        workers: Callable[[], list[PodWorker]],
        config: Config,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.reporter, self.cgroups, self.workers, self.config = reporter, cgroups, workers, config
        self.last_met = float("-inf")
        self.rejected: set[str] = set()

    def run_forever(self, stopping: threading.Event) -> None:
        """One pass a second, while the node has a memory cgroup to measure."""
        while self.cgroups.has("memory") and not stopping.wait(PASS_INTERVAL_S):
            try:
                self.synchronize()
            except Exception as error:
                print(f"eviction manager: {error}", flush=True)

    def synchronize(self) -> None:
        """Observe memory.available, update the node's condition, evict at most one pod."""
        available = self.config.allocatable - self.cgroups.working_set()
        met = available < self.config.threshold
        now = time.monotonic()
        if met:
            self.last_met = now
        pressure = now - self.last_met < self.config.transition_s
        if pressure != self.reporter.memory_pressure:
            self.reporter.memory_pressure = pressure
            print(
                f"memory pressure {'begins' if pressure else 'ends'}: available {binary(available)}",
                flush=True,
            )
            self.reporter.post_status()
        if met:
            self.evict_one(available)

    def _rank(self, worker: PodWorker) -> tuple[bool, int, int]:
        """exceedMemoryRequests, then priority, then usage above request (helpers.go rankMemoryPressure)."""
        pod = worker.pod
        usage = self.cgroups.working_set(pod.metadata.uid)
        request = sum(int(parse_quantity(memory_request(spec))) for spec in pod.spec.containers)
        return usage <= request, pod.spec.priority or 0, request - usage

    def evict_one(self, available: int) -> None:
        candidates = [w for w in self.workers() if w.is_alive() and w.running() and not critical(w.pod)]
        if not candidates:
            print("memory pressure: no pod left to evict", flush=True)
            return
        victim = min(candidates, key=self._rank)
        pod = victim.pod
        message = NODE_LOW.format("memory") + THRESHOLD_MET.format(
            self.config.threshold_text, binary(available)
        )
        offending, usages = [], []
        for spec in pod.spec.containers:
            usage, request = self.cgroups.working_set(pod.metadata.uid, spec.name), memory_request(spec)
            if usage > parse_quantity(request):
                message += CONTAINER_USAGE.format(spec.name, binary(usage), request, "memory")
                offending.append(spec.name)
                usages.append(binary(usage))
        annotations = {
            "offending_containers": ",".join(offending),
            "offending_containers_usage": ",".join(usages),
            "starved_resource": "memory",
        }
        print(f"evicting {pod.metadata.namespace}/{pod.metadata.name}: {message}", flush=True)
        self._event(pod, message, annotations)
        condition = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "TerminationByKubelet",
            "message": message,
            "lastTransitionTime": stamp(),
        }
        victim.evict(REASON, message, condition)
        victim.join(CLEANUP_DEADLINE_S)  # the kubelet waits for the pod's cleanup before the next pass

    def admit(self, pod: client.V1Pod) -> bool:
        """False, with the pod rejected (Failed, Evicted), for a BestEffort pod under memory pressure
        that does not tolerate the memory-pressure taint."""
        if (
            not self.reporter.memory_pressure
            or pod.status.qos_class != "BestEffort"
            or critical(pod)
            or any(map(tolerates_pressure, pod.spec.tolerations or []))
        ):
            return True
        if pod.metadata.uid not in self.rejected:
            message = NODE_CONDITION.format("[MemoryPressure]")
            self._event(pod, message)
            status = {"phase": "Failed", "reason": REASON, "message": REJECTED + message}
            self.core.patch_namespaced_pod_status(
                pod.metadata.name,
                pod.metadata.namespace,
                {"metadata": {"uid": pod.metadata.uid}, "status": status},
                _content_type=STRATEGIC,
            )
            self.rejected.add(pod.metadata.uid)
        return False

    def _event(self, pod: client.V1Pod, message: str, annotations: dict[str, str] | None = None) -> None:
        """A Warning Event on the pod from the kubelet of this node (best effort, as the recorder is)."""
        meta, now = pod.metadata, stamp()
        event = {
            "metadata": {
                "name": f"{meta.name}.{time.time_ns():x}",
                "namespace": meta.namespace,
                "annotations": annotations or {},
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
                "resourceVersion": meta.resource_version,
            },
            "type": "Warning",
            "reason": REASON,
            "message": message,
            "source": {"component": "kubelet", "host": self.reporter.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.reporter.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta.namespace, event)
        except client.ApiException as error:
            print(
                f"event {REASON} on {meta.namespace}/{meta.name}: {error.status} {error.reason}", flush=True
            )
