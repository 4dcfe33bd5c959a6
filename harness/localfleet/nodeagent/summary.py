"""The kubelet's Summary API, `GET /stats/summary` (k8s.io/kubelet/pkg/apis/stats/v1alpha1 Summary), from
the node's cgroups: CPU and memory of the node (`fleetdrill/<node>`, which holds every pod), of each pod
(`<node>/<pod-uid>`) and of each running container (`<node>/<pod-uid>/<container>`), as the kubelet
lists running containers only. A pod or container whose cgroups are gone or unreadable is left out.
Each cgroup is read after those below it, so a count that only grows (CPU time) is never smaller than
the sum of its parts.
"""

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from harness.localfleet.nodeagent.containers import stamp
from harness.localfleet.nodeagent.pods import PodWorker
from harness.localfleet.nodeagent.stats import CpuReader, CpuUsage, MemoryUsage, read_memory


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


class NodeSummary:
    """The Summary of one node, whose cgroup folder in each hierarchy `dirs` names (NodeCgroups.dirs)."""

    def __init__(self, node: str, dirs: Mapping[str, Path], cpu: CpuReader) -> None:
        self.node, self.cpu = node, cpu
        self.cpuacct, self.memory = dirs.get("cpuacct"), dirs.get("memory")
        self.started = time.time()

    def summary(self, workers: Iterable[PodWorker]) -> dict:
        """The answer to GET /stats/summary for the node's pods."""
        read: set[Path] = set()
        pods = [pod for worker in workers if (pod := self._pod(worker, read))]
        node = {"nodeName": self.node, "startTime": stamp(self.started), **self._usage(read)}
        self.cpu.retain(read)
        return {"node": node, "pods": pods}

    def _pod(self, worker: PodWorker, read: set[Path]) -> dict | None:
        meta = worker.pod.metadata
        containers = []
        for container in list(worker.containers):
            found = self._usage(read, meta.uid, container.spec.name) if container.process else {}
            if found:
                containers.append(
                    {"name": container.spec.name, "startTime": stamp(container.started_wall), **found}
                )
        usage = self._usage(read, meta.uid)
        if not usage:
            return None
        return {
            "podRef": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
            "startTime": worker.start_time,
            "containers": containers,
            **usage,
        }

    def _usage(self, read: set[Path], *parts: str) -> dict:
        """The "cpu" and "memory" of the cgroup at `parts` below the node's; each left out when unreadable."""
        found: dict = {}
        if self.cpuacct:
            folder = self.cpuacct.joinpath(*parts)
            read.add(folder)
            if cpu := self.cpu.read(folder):
                found["cpu"] = _cpu(cpu)
        if self.memory and (memory := read_memory(self.memory.joinpath(*parts))):
            found["memory"] = _memory(memory)
        return found
