"""The kubelet's Summary API, `GET /stats/summary` (k8s.io/kubelet/pkg/apis/stats/v1alpha1 Summary), from
the node's cgroups: CPU and memory of the node (`fleetdrill/<node>`, which holds every pod), of each pod
(`<node>/<pod-uid>`) and of each running container (`<node>/<pod-uid>/<container>`), as the kubelet
lists running containers only. A pod or container whose cgroups are gone or unreadable is left out.
Each cgroup is read after those below it, so a count that only grows (CPU time) is never smaller than
the sum of its parts. `read` gives the figures as records (the resource metrics render them too),
`summary` the Summary API's JSON.
"""

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.localfleet.nodeagent.containers import stamp
from harness.localfleet.nodeagent.pods import PodWorker
from harness.localfleet.nodeagent.stats import CpuReader, CpuUsage, MemoryUsage, read_memory


@dataclass(frozen=True)
class Usage:
    """A cgroup's CPU and memory, each None when unreadable."""

    cpu: CpuUsage | None
    memory: MemoryUsage | None


@dataclass(frozen=True)
class ContainerUsage:
    name: str
    started: float
    """When the container's current run started (epoch seconds)."""
    usage: Usage


@dataclass(frozen=True)
class PodUsage:
    name: str
    namespace: str
    uid: str
    start_time: str
    """The pod's status.startTime (metav1.Time)."""
    containers: list[ContainerUsage]
    usage: Usage


@dataclass(frozen=True)
class NodeUsage:
    """One read of the node's cgroups and its pods'."""

    node: str
    started: float
    usage: Usage
    pods: list[PodUsage]


def _cpu(usage: CpuUsage) -> dict:
    """CPUStats: usageNanoCores only from the second read of a cgroup on."""
    rate = {} if usage.nano_cores is None else {"usageNanoCores": usage.nano_cores}
    return {"time": stamp(usage.time), **rate, "usageCoreNanoSeconds": usage.usage_core_ns}


def _memory(usage: MemoryUsage) -> dict:
    """MemoryStats: availableBytes only for a cgroup with a limit."""
    available = {} if usage.available_bytes is None else {"availableBytes": usage.available_bytes}
    return {
        "time": stamp(usage.time),
        **available,
        "usageBytes": usage.usage_bytes,
        "workingSetBytes": usage.working_set_bytes,
        "rssBytes": usage.rss_bytes,
    }


def _stats(usage: Usage) -> dict:
    """The "cpu" and "memory" of a Summary entry; each left out when unreadable."""
    return ({"cpu": _cpu(usage.cpu)} if usage.cpu else {}) | (
        {"memory": _memory(usage.memory)} if usage.memory else {}
    )


class NodeSummary:
    """The Summary of one node, whose cgroup folder in each hierarchy `dirs` names (NodeCgroups.dirs)."""

    def __init__(self, node: str, dirs: Mapping[str, Path], cpu: CpuReader) -> None:
        self.node, self.cpu = node, cpu
        self.cpuacct, self.memory = dirs.get("cpuacct"), dirs.get("memory")
        self.started = time.time()

    def summary(self, workers: Iterable[PodWorker]) -> dict:
        """The answer to GET /stats/summary for the node's pods."""
        found = self.read(workers)
        node = {"nodeName": found.node, "startTime": stamp(found.started), **_stats(found.usage)}
        pods = [
            {
                "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "startTime": pod.start_time,
                "containers": [
                    {"name": c.name, "startTime": stamp(c.started), **_stats(c.usage)} for c in pod.containers
                ],
                **_stats(pod.usage),
            }
            for pod in found.pods
        ]
        return {"node": node, "pods": pods}

    def read(self, workers: Iterable[PodWorker]) -> NodeUsage:
        """The node's and its pods' CPU and memory, read now."""
        read: set[Path] = set()
        pods = [pod for worker in workers if (pod := self._pod(worker, read))]
        node = NodeUsage(self.node, self.started, self._usage(read), pods)
        self.cpu.retain(read)
        return node

    def _pod(self, worker: PodWorker, read: set[Path]) -> PodUsage | None:
        meta = worker.pod.metadata
        containers = []
        for container in list(worker.containers):
            if container.process:
                usage = self._usage(read, meta.uid, container.spec.name)
                if usage.cpu or usage.memory:
                    containers.append(ContainerUsage(container.spec.name, container.started_wall, usage))
        usage = self._usage(read, meta.uid)
        if not (usage.cpu or usage.memory):
            return None
        return PodUsage(meta.name, meta.namespace, meta.uid, worker.start_time, containers, usage)

    def _usage(self, read: set[Path], *parts: str) -> Usage:
        """The CPU and memory of the cgroup at `parts` below the node's."""
        cpu = None
        if self.cpuacct:
            folder = self.cpuacct.joinpath(*parts)
            read.add(folder)
            cpu = self.cpu.read(folder)
        memory = read_memory(self.memory.joinpath(*parts)) if self.memory else None
        return Usage(cpu, memory)
