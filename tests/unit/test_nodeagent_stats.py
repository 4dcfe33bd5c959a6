"""The node agent's Summary API (/stats/summary) read from a fake cgroup v1 tree: cumulative CPU time,
the rate from the second read on, the working set, and cgroups that are gone or unreadable left out."""

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client

from harness.localfleet.nodeagent.containers import APP, Container
from harness.localfleet.nodeagent.stats import CpuReader
from harness.localfleet.nodeagent.summary import NodeSummary

UID = "0f3c9a52-7d1e-4b8a-9c55-3e2f1a6b7c8d"
UNLIMITED = 9223372036854771712  # what cgroup v1 shows for no limit
MIB = 1 << 20
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Tree:
    """`fleetdrill/<node>` in a fake cpuacct and memory hierarchy; a cgroup is a path below it."""

    def __init__(self, root: Path) -> None:
        self.dirs = {"cpuacct": root / "cpuacct" / "node", "memory": root / "memory" / "node"}

    def cgroup(
        self, *parts: str, cpu_ns: int, usage: int, inactive_file: int, limit: int = UNLIMITED
    ) -> None:
        cpu, memory = (folder.joinpath(*parts) for folder in self.dirs.values())
        cpu.mkdir(parents=True, exist_ok=True)
        memory.mkdir(parents=True, exist_ok=True)
        (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")
        (memory / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (memory / "memory.limit_in_bytes").write_text(f"{limit}\n")
        stat = f"cache {inactive_file}\nrss 0\ntotal_rss {usage - inactive_file}\n"
        (memory / "memory.stat").write_text(stat + f"total_inactive_file {inactive_file}\n")

    def remove(self, *parts: str) -> None:
        for folder in self.dirs.values():
            shutil.rmtree(folder.joinpath(*parts))


class Clock:
    """A monotonic clock in ns that moves only when told."""

    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def _worker(*running: str, waiting: str = "") -> SimpleNamespace:
    """What the summary reads of a PodWorker: the pod, its start time and its containers."""
    containers = [
        Container(client.V1Container(name=name), APP, process=object(), started_wall=1_700_000_000.0)
        for name in running
    ]
    if waiting:
        containers.append(Container(client.V1Container(name=waiting), APP))
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="burner", namespace="load", uid=UID))
    return SimpleNamespace(pod=pod, start_time="2023-11-14T22:13:20Z", containers=containers)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    tree = Tree(tmp_path)
    tree.cgroup(cpu_ns=5_000_000_000, usage=900 * MIB, inactive_file=100 * MIB, limit=2048 * MIB)
    tree.cgroup(UID, cpu_ns=3_000_000_000, usage=300 * MIB, inactive_file=50 * MIB)
    tree.cgroup(UID, "burn", cpu_ns=2_900_000_000, usage=290 * MIB, inactive_file=50 * MIB)
    return tree


def _times(answer: object) -> list[str]:
    """Every "time" and "startTime" in the answer (they must be metav1.Time)."""
    if isinstance(answer, dict):
        here = [v for k, v in answer.items() if k in ("time", "startTime")]
        return here + [t for v in answer.values() for t in _times(v)]
    return [t for v in answer for t in _times(v)] if isinstance(answer, list) else []


def test_first_read_has_cumulative_cpu_and_the_working_set_but_no_rate(tree: Tree) -> None:
    stats = NodeSummary("node-0", tree.dirs, CpuReader(Clock()))
    answer = stats.summary([_worker("burn", waiting="sidecar")])
    assert all(RFC3339.match(stamp) for stamp in _times(answer)), _times(answer)
    node, [pod] = answer["node"], answer["pods"]
    assert node["nodeName"] == "node-0"
    assert node["cpu"] == {"time": node["cpu"]["time"], "usageCoreNanoSeconds": 5_000_000_000}
    assert node["memory"] == {
        "time": node["memory"]["time"],
        "availableBytes": (2048 - 800) * MIB,  # the limit minus the working set
        "usageBytes": 900 * MIB,
        "workingSetBytes": 800 * MIB,  # usage minus total_inactive_file
        "rssBytes": 800 * MIB,
    }
    assert pod["podRef"] == {"name": "burner", "namespace": "load", "uid": UID}
    assert pod["startTime"] == "2023-11-14T22:13:20Z"
    assert pod["cpu"]["usageCoreNanoSeconds"] == 3_000_000_000 and "usageNanoCores" not in pod["cpu"]
    assert "availableBytes" not in pod["memory"]  # no limit
    assert pod["memory"]["workingSetBytes"] == 250 * MIB
    [burn] = pod["containers"]  # the waiting container has no process: left out
    assert (burn["name"], burn["startTime"]) == ("burn", "2023-11-14T22:13:20Z")
    assert burn["cpu"]["usageCoreNanoSeconds"] == 2_900_000_000
    assert burn["memory"]["workingSetBytes"] == 240 * MIB


def test_second_read_has_the_rate_since_the_first(tree: Tree) -> None:
    clock = Clock()
    stats = NodeSummary("node-0", tree.dirs, CpuReader(clock))
    stats.summary([_worker("burn")])
    clock.now += 2_000_000_000
    tree.cgroup(cpu_ns=6_500_000_000, usage=900 * MIB, inactive_file=100 * MIB, limit=2048 * MIB)
    tree.cgroup(UID, cpu_ns=4_500_000_000, usage=300 * MIB, inactive_file=50 * MIB)
    tree.cgroup(UID, "burn", cpu_ns=4_400_000_000, usage=290 * MIB, inactive_file=50 * MIB)
    answer = stats.summary([_worker("burn")])
    [pod] = answer["pods"]
    assert answer["node"]["cpu"]["usageNanoCores"] == 750_000_000  # 1.5 s of CPU in 2 s
    assert (pod["cpu"]["usageCoreNanoSeconds"], pod["cpu"]["usageNanoCores"]) == (4_500_000_000, 750_000_000)
    assert pod["containers"][0]["cpu"]["usageNanoCores"] == 750_000_000


def test_a_container_made_anew_starts_without_a_rate(tree: Tree) -> None:
    """A restarted container's cgroup is a new one at the same path: its count starts again."""
    clock = Clock()
    stats = NodeSummary("node-0", tree.dirs, CpuReader(clock))
    stats.summary([_worker("burn")])
    tree.remove(UID, "burn")
    tree.cgroup(UID, "burn", cpu_ns=100_000_000, usage=10 * MIB, inactive_file=0)
    clock.now += 1_000_000_000
    [burn] = stats.summary([_worker("burn")])["pods"][0]["containers"]
    assert burn["cpu"] == {"time": burn["cpu"]["time"], "usageCoreNanoSeconds": 100_000_000}


def test_vanished_or_unreadable_cgroups_are_left_out(tree: Tree) -> None:
    reader = CpuReader(Clock())
    stats = NodeSummary("node-0", tree.dirs, reader)
    stats.summary([_worker("burn")])
    tree.remove(UID, "burn")
    [pod] = stats.summary([_worker("burn")])["pods"]
    assert pod["containers"] == [] and pod["cpu"]["usageCoreNanoSeconds"] == 3_000_000_000
    assert set(reader.last) == {tree.dirs["cpuacct"], tree.dirs["cpuacct"] / UID}  # no sample kept
    (tree.dirs["cpuacct"] / UID / "cpuacct.usage").write_text("")
    [pod] = stats.summary([_worker()])["pods"]
    assert "cpu" not in pod and pod["memory"]["usageBytes"] == 300 * MIB
    tree.remove(UID)
    answer = stats.summary([_worker("burn")])
    assert answer["pods"] == [] and answer["node"]["cpu"]["usageCoreNanoSeconds"] == 5_000_000_000
    assert set(reader.last) == {tree.dirs["cpuacct"]}


def test_without_the_hierarchies_the_node_has_only_its_name() -> None:
    answer = NodeSummary("node-0", {}, CpuReader()).summary([_worker("burn")])
    assert answer == {"node": {"nodeName": "node-0", "startTime": answer["node"]["startTime"]}, "pods": []}
