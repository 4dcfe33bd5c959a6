"""The kubelet's metrics endpoints: `/metrics/resource`, the resource metrics the metrics-server reads
(k/k pkg/kubelet/metrics/collectors/resource_metrics.go: the same names, help texts, stability, labels
and sample timestamps, from the Summary's figures), and `/metrics`, the kubelet's own (a few of its
kubelet_* gauges and the agent's process_* metrics).

The text is Prometheus' exposition format 0.0.4 as the kubelet's registry writes it: families sorted by
name, label names sorted, samples sorted by label values, CPU time in core-seconds and a timestamp in
milliseconds on every usage sample (when the cgroup was read). A failed read gives scrape_error and
resource_scrape_error 1 and no usage samples.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from harness.localfleet.nodeagent.pods import PodWorker
from harness.localfleet.nodeagent.stats import NS_PER_S
from harness.localfleet.nodeagent.summary import NodeUsage, Usage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CONTAINER, POD = ("container", "pod", "namespace"), ("pod", "namespace")
"""The label names of a container's and a pod's samples, in kubelet's order (written sorted)."""


@dataclass(frozen=True)
class Family:
    """One metric family of the resource metrics: name, help text with its stability, type."""

    name: str
    help: str
    kind: str


NODE_CPU = Family(
    "node_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    "counter",
)
NODE_MEMORY = Family(
    "node_memory_working_set_bytes", "[STABLE] Current working set of the node in bytes", "gauge"
)
CONTAINER_CPU = Family(
    "container_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    "counter",
)
CONTAINER_MEMORY = Family(
    "container_memory_working_set_bytes", "[STABLE] Current working set of the container in bytes", "gauge"
)
CONTAINER_START = Family(
    "container_start_time_seconds",
    "[STABLE] Start time of the container since unix epoch in seconds",
    "gauge",
)
POD_CPU = Family(
    "pod_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    "counter",
)
POD_MEMORY = Family(
    "pod_memory_working_set_bytes", "[STABLE] Current working set of the pod in bytes", "gauge"
)
SCRAPE_ERROR = Family(
    "scrape_error", "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise", "gauge"
)
RESOURCE_SCRAPE_ERROR = Family(
    "resource_scrape_error",
    "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    "gauge",
)
Sample = tuple[dict[str, str], float, float | None]
"""Labels, value, and the time it was read (epoch seconds) or None."""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(name: str, sample: Sample) -> str:
    labels, value, at = sample
    pairs = ",".join(f'{key}="{_escape(labels[key])}"' for key in sorted(labels))
    stamp = f" {round(at * 1000)}" if at is not None else ""
    return f"{name}{{{pairs}}} {_number(value)}{stamp}" if pairs else f"{name} {_number(value)}{stamp}"


def _usage_samples(usage: Usage, labels: dict[str, str]) -> tuple[list[Sample], list[Sample]]:
    """The CPU-seconds and working-set samples of one cgroup (none for what was unreadable)."""
    cpu = [(labels, usage.cpu.usage_core_ns / NS_PER_S, usage.cpu.time)] if usage.cpu else []
    memory = [(labels, usage.memory.working_set_bytes, usage.memory.time)] if usage.memory else []
    return cpu, memory


def resource_metrics(found: NodeUsage | None) -> str:
    """GET /metrics/resource for one read of the node (None: the read failed)."""
    samples: dict[Family, list[Sample]] = {
        SCRAPE_ERROR: [({}, float(found is None), None)],
        RESOURCE_SCRAPE_ERROR: [({}, float(found is None), None)],
    }

    def add(family: Family, more: list[Sample]) -> None:
        samples.setdefault(family, []).extend(more)

    if found is not None:
        cpu, memory = _usage_samples(found.usage, {})
        add(NODE_CPU, cpu)
        add(NODE_MEMORY, memory)
        for pod in found.pods:
            for container in pod.containers:
                labels = dict(zip(CONTAINER, (container.name, pod.name, pod.namespace), strict=True))
                if container.started > 0:
                    add(CONTAINER_START, [(labels, container.started, None)])
                cpu, memory = _usage_samples(container.usage, labels)
                add(CONTAINER_CPU, cpu)
                add(CONTAINER_MEMORY, memory)
            cpu, memory = _usage_samples(pod.usage, dict(zip(POD, (pod.name, pod.namespace), strict=True)))
            add(POD_CPU, cpu)
            add(POD_MEMORY, memory)
    lines = []
    for family in sorted((f for f, found in samples.items() if found), key=lambda f: f.name):
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        ordered = sorted(samples[family], key=lambda s: [s[0][key] for key in sorted(s[0])])
        lines += [_line(family.name, sample) for sample in ordered]
    return "\n".join(lines) + "\n"


class _KubeletGauges(Collector):
    """kubelet_node_name, kubelet_running_pods and kubelet_running_containers, read at each scrape."""

    def __init__(self, node: str, workers: Callable[[], Iterable[PodWorker]]) -> None:
        self.node, self.workers = node, workers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        workers = [w for w in self.workers() if w.is_alive()]
        name = GaugeMetricFamily(
            "kubelet_node_name", "[ALPHA] The node's name. The count is always 1.", labels=["node"]
        )
        name.add_metric([self.node], 1)
        pods = GaugeMetricFamily(
            "kubelet_running_pods",
            "[ALPHA] Number of pods that have a running pod sandbox",
            value=len(workers),
        )
        running = sum(1 for w in workers for c in list(w.containers) if c.process)
        containers = GaugeMetricFamily(
            "kubelet_running_containers",
            "[ALPHA] Number of containers currently running",
            labels=["container_state"],
        )
        containers.add_metric(["running"], running)
        return [name, pods, containers]


def kubelet_registry(node: str, workers: Callable[[], Iterable[PodWorker]]) -> CollectorRegistry:
    """The registry behind GET /metrics: the kubelet gauges and the agent's own process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_KubeletGauges(node, workers))
    ProcessCollector(registry=registry)
    return registry


def kubelet_metrics(registry: CollectorRegistry) -> str:
    """GET /metrics."""
    return generate_latest(registry).decode()
