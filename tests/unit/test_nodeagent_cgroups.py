"""The weight of the fleet's pods on this machine: `fleetdrill` gets one process's CPU shares per node."""

from pathlib import Path

import pytest

from harness.localfleet.nodeagent import cgroups


@pytest.fixture
def cpu_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cgroups, "hierarchies", lambda: {"cpu": tmp_path})
    (tmp_path / cgroups.PARENT).mkdir()
    return tmp_path / cgroups.PARENT


def test_each_node_weighs_as_much_as_one_process(cpu_root: Path) -> None:
    for node in ("fd1-us-east-0", "fd1-us-east-1", "fd2-eu-west-0"):
        (cpu_root / node).mkdir()
    (cpu_root / "cpu.shares").write_text("1024\n")
    cgroups.weigh_nodes()
    assert (cpu_root / "cpu.shares").read_text() == "3072\n"
    (cpu_root / "fd2-eu-west-0").rmdir()
    cgroups.weigh_nodes()
    assert (cpu_root / "cpu.shares").read_text() == "2048\n"


def test_the_weight_stays_within_what_the_kernel_takes(cpu_root: Path) -> None:
    for index in range(300):
        (cpu_root / f"fd1-node-{index}").mkdir()
    cgroups.weigh_nodes()
    assert (cpu_root / "cpu.shares").read_text() == f"{cgroups.MAX_SHARES}\n"


def test_no_cpu_hierarchy_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "hierarchies", dict)
    cgroups.weigh_nodes()  # a machine without cgroup v1's cpu controller: the agent runs without shares
