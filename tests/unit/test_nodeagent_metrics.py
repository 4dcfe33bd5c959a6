"""The node agent's /metrics/resource in the kubelet's resource metrics format (k/k
pkg/kubelet/metrics/collectors/resource_metrics.go), read from a fake cgroup v1 tree: names, help texts,
types, labels, CPU in core-seconds and millisecond timestamps, families and samples sorted as the
kubelet's registry writes them; a failed read is a scrape error and nothing else."""

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from harness.localfleet.nodeagent.metrics import kubelet_metrics, kubelet_registry, resource_metrics
from harness.localfleet.nodeagent.stats import CpuReader
from harness.localfleet.nodeagent.summary import NodeSummary
from tests.unit.test_nodeagent_stats import MIB, Clock, Tree, _worker

NAMES = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_start_time_seconds",
    "node_cpu_usage_seconds_total",
    "node_memory_working_set_bytes",
    "pod_cpu_usage_seconds_total",
    "pod_memory_working_set_bytes",
    "resource_scrape_error",
    "scrape_error",
]


def _text(tmp_path: Path, *running: str) -> str:
    tree = Tree(tmp_path)
    tree.cgroup(cpu_ns=5_000_000_000, usage=900 * MIB, inactive_file=100 * MIB, limit=2048 * MIB)
    tree.cgroup(
        "0f3c9a52-7d1e-4b8a-9c55-3e2f1a6b7c8d", cpu_ns=3_000_000_000, usage=300 * MIB, inactive_file=0
    )
    for i, name in enumerate(running):
        tree.cgroup(
            "0f3c9a52-7d1e-4b8a-9c55-3e2f1a6b7c8d",
            name,
            cpu_ns=1_250_000_000 + i,
            usage=(100 + i) * MIB,
            inactive_file=10 * MIB,
        )
    stats = NodeSummary("node-0", tree.dirs, CpuReader(Clock()))
    return resource_metrics(stats.read([_worker(*running)]))


def test_resource_metrics_follow_the_kubelet_names_labels_and_units(tmp_path: Path) -> None:
    text = _text(tmp_path, "burn", "agent")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # the parser drops _total from a counter family's name
    assert sorted(n + "_total" if f.type == "counter" else n for n, f in families.items()) == NAMES
    lines = text.splitlines()
    assert lines[0] == (
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container"
        " in core-seconds"
    )
    assert lines[1] == "# TYPE container_cpu_usage_seconds_total counter"
    cpu = [line for line in lines if line.startswith("container_cpu_usage_seconds_total{")]
    assert [line.split(" ")[0] for line in cpu] == [  # sorted by label values, label names sorted
        'container_cpu_usage_seconds_total{container="agent",namespace="load",pod="burner"}',
        'container_cpu_usage_seconds_total{container="burn",namespace="load",pod="burner"}',
    ]
    value, stamp = cpu[1].split(" ")[1:]
    assert float(value) == 1.25 and stamp.isdigit() and len(stamp) == 13, "core-seconds, a time in ms"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s for f in families.values() for s in f.samples}
    node_cpu = samples[("node_cpu_usage_seconds_total", ())]
    assert node_cpu.value == 5.0 and node_cpu.timestamp is not None
    assert samples[("node_memory_working_set_bytes", ())].value == 800 * MIB
    pod = (("namespace", "load"), ("pod", "burner"))
    assert samples[("pod_cpu_usage_seconds_total", pod)].value == 3.0
    assert samples[("pod_memory_working_set_bytes", pod)].value == 300 * MIB
    burn = (("container", "burn"), *pod)
    assert samples[("container_memory_working_set_bytes", burn)].value == 90 * MIB
    start = samples[("container_start_time_seconds", burn)]
    assert start.value == 1_700_000_000.0 and start.timestamp is None
    assert samples[("scrape_error", ())].value == 0 and samples[("resource_scrape_error", ())].value == 0


def test_a_failed_read_is_a_scrape_error_without_usage() -> None:
    assert resource_metrics(None).splitlines() == [
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics,"
        " 0 otherwise",
        "# TYPE resource_scrape_error gauge",
        "resource_scrape_error 1",
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        "# TYPE scrape_error gauge",
        "scrape_error 1",
    ]


def test_kubelet_metrics_count_running_pods_and_containers() -> None:
    running, ended = _worker("burn", "agent", waiting="sidecar"), _worker("done")
    running.is_alive, ended.is_alive = (lambda: True), (lambda: False)
    registry = kubelet_registry("node-0", lambda: [running, ended])
    families = {f.name: f for f in text_string_to_metric_families(kubelet_metrics(registry))}
    assert families["kubelet_node_name"].samples[0].labels == {"node": "node-0"}
    assert families["kubelet_running_pods"].samples[0].value == 1
    assert families["kubelet_running_containers"].samples[0].value == 2
    assert "process_resident_memory_bytes" in families
