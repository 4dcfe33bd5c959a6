"""Per-node cgroups, laid out as the kubelet and its container runtime lay them out (cgroup v1).

In each of the memory, cpu, cpuacct and freezer hierarchies, `fleetdrill/<node>/<pod-uid>/<container>`
holds a container: its memory limit from limits.memory, cpu.shares from requests.cpu and a CFS quota from
limits.cpu; cpuacct counts its CPU time for /stats/summary (where the machine mounts cpu and cpuacct
together, both are one folder). `<node>` is limited to the node's allocatable memory (as the kubelet
limits kubepods), and `<node>/agent` in the freezer holds the node agent, so freezing `<node>` freezes
the node and all its pods. Every node stands for a machine of its own, yet all of them share this one: the
cpu.shares of `fleetdrill` are SHARES_PER_CPU for each node in it, so the pods of each node weigh as much as
one of the machine's processes (one weight for the pods of every node together starved a node's app behind
its stress pod whenever the machine was busy). `<node>` is the node's network namespace name, which
starts with its fleet's prefix: `fleet down` removes a fleet's cgroups by that prefix.
"""

import contextlib
import os
import signal
import time
from pathlib import Path

from kubernetes import client
from kubernetes.utils import parse_quantity

from harness.errors import FleetDrillError
from harness.localfleet.nodeagent import stats

PARENT = "fleetdrill"
AGENT = "agent"
CONTROLLERS = ("freezer", "memory", "cpu", "cpuacct")  # the freezer first: a frozen process cannot die
WITHOUT = {
    "memory": "memory limits, OOMKilled and memory-pressure eviction",
    "cpu": "CPU shares and quotas",
    "cpuacct": "CPU usage in /stats/summary",
    "freezer": "`fleetdrill fleet freeze`",
}
MIN_SHARES, SHARES_PER_CPU, MAX_SHARES = 2, 1024, 262_144
CFS_PERIOD_US, MIN_QUOTA_US = 100_000, 1_000
REMOVE_DEADLINE_S = 10.0


def hierarchies() -> dict[str, Path]:
    """The mount point of each cgroup v1 hierarchy that carries one of our controllers."""
    found: dict[str, Path] = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        _source, mountpoint, kind, options, *_ = line.split()
        for option in options.split(",") if kind == "cgroup" else ():
            if option in CONTROLLERS:
                found.setdefault(option, Path(mountpoint))
    return {name: found[name] for name in CONTROLLERS if name in found}


def millicores(quantity: str) -> int:
    return int(parse_quantity(quantity) * 1000)


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def processes(folder: Path) -> list[int]:
    """Every process in a cgroup and its descendants."""
    pids = []
    for path, _dirs, _files in os.walk(folder):
        with contextlib.suppress(FileNotFoundError):
            pids += [int(pid) for pid in Path(path, "cgroup.procs").read_text().split()]
    return pids


def remove_tree(folder: Path) -> list[int]:
    """Thaw a cgroup, kill every process left in it or below, then remove it deepest first; return the
    pids killed. Raises OSError naming the folder when it is still busy after a deadline."""
    if not folder.is_dir():
        return []
    freezer = folder / "freezer.state"
    if freezer.exists() and freezer.read_text().strip() != "THAWED":
        _write(freezer, "THAWED")
    pids = processes(folder)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + REMOVE_DEADLINE_S
    for path, _dirs, _files in os.walk(folder, topdown=False):
        while True:
            try:
                Path(path).rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    return pids


def remove_fleet(prefix: str) -> list[int]:
    """Remove every cgroup of the fleet whose namespaces start with prefix; return the pids killed."""
    killed = []
    for root in hierarchies().values():
        for folder in sorted((root / PARENT).glob(f"{prefix}*")):
            try:
                killed += remove_tree(folder)
            except OSError as error:
                raise FleetDrillError(f"cannot remove the fleet's cgroup {folder}: {error}") from error
        with contextlib.suppress(OSError):
            (root / PARENT).rmdir()  # fails while another fleet uses it
    weigh_nodes()
    return killed


def weigh_nodes() -> None:
    """Give `fleetdrill` SHARES_PER_CPU of CPU shares for each node in it (see the module's docstring)."""
    folder = hierarchies().get("cpu")
    if folder is None or not (folder / PARENT).is_dir():
        return
    nodes = sum(1 for child in (folder / PARENT).iterdir() if child.is_dir())
    with contextlib.suppress(OSError):  # the last node of the last fleet removed it meanwhile
        _write(folder / PARENT / "cpu.shares", min(MAX_SHARES, max(1, nodes) * SHARES_PER_CPU))


def node_dir(controller: str, node: str) -> Path | None:
    """A node's cgroup in one hierarchy (None when the machine has no such hierarchy)."""
    root = hierarchies().get(controller)
    return root / PARENT / node if root else None


class NodeCgroups:
    """The cgroups of one node: its agent's and its containers', in every hierarchy the machine has."""

    def __init__(self, node: str) -> None:
        self.dirs = {name: root / PARENT / node for name, root in hierarchies().items()}
        missing = [name for name in CONTROLLERS if name not in self.dirs]
        if missing:
            v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
            why = " (this machine mounts cgroup v2, which the node agent does not use)" if v2 else ""
            print(
                f"cgroups: no cgroup v1 hierarchy for {', '.join(missing)}{why}; "
                f"running without {'; '.join(WITHOUT[name] for name in missing)}",
                flush=True,
            )

    def has(self, controller: str) -> bool:
        return controller in self.dirs

    def start(self, memory_limit: int) -> None:
        """Make the node's cgroups, remove what an earlier agent of the node left, limit the pods' memory
        to the node's allocatable and move this process into `<node>/agent` of the freezer."""
        for controller, folder in self.dirs.items():
            folder.mkdir(parents=True, exist_ok=True)
            for child in folder.iterdir():
                if child.is_dir() and child.name != AGENT:
                    remove_tree(child)
            if controller == "memory":
                _write(folder / "memory.limit_in_bytes", memory_limit)
            if controller == "freezer":
                (folder / AGENT).mkdir(exist_ok=True)
                _write(folder / AGENT / "cgroup.procs", os.getpid())
        weigh_nodes()

    def create(self, uid: str, container: str, resources: client.V1ResourceRequirements | None) -> list[Path]:
        """Fresh cgroups for a container, with its limits; the folders its process must join."""
        self.remove(uid, container)
        limits = (resources.limits if resources else None) or {}
        requests = (resources.requests if resources else None) or {}
        folders: list[Path] = []
        for controller, node in self.dirs.items():
            folder = node / uid / container
            if folder not in folders:  # cpu and cpuacct mounted together: one folder
                folder.mkdir(parents=True)
                folders.append(folder)
            if controller == "memory" and "memory" in limits:
                _write(folder / "memory.limit_in_bytes", int(parse_quantity(limits["memory"])))
            if controller == "cpu":
                shares = millicores(requests.get("cpu", "0")) * SHARES_PER_CPU // 1000
                _write(folder / "cpu.shares", max(MIN_SHARES, shares))
                if "cpu" in limits:
                    quota = millicores(limits["cpu"]) * CFS_PERIOD_US // 1000
                    _write(folder / "cpu.cfs_period_us", CFS_PERIOD_US)
                    _write(folder / "cpu.cfs_quota_us", max(MIN_QUOTA_US, quota))
        return folders

    def oom_killed(self, uid: str, container: str) -> bool:
        """The kernel's OOM killer killed a process of the container (oom_kill in memory.oom_control)."""
        if "memory" not in self.dirs:
            return False
        try:
            control = (self.dirs["memory"] / uid / container / "memory.oom_control").read_text()
        except FileNotFoundError:
            return False
        counts = dict(line.split() for line in control.splitlines() if line.strip())
        return int(counts.get("oom_kill", "0")) > 0

    def working_set(self, *parts: str) -> int:
        """Memory of the node, a pod (uid) or a container (uid, name) as the kubelet counts it: usage
        minus inactive file pages, which the kernel can drop at once."""
        usage = stats.read_memory(self.dirs["memory"].joinpath(*parts)) if "memory" in self.dirs else None
        return usage.working_set_bytes if usage else 0

    def remove(self, uid: str, container: str = "") -> None:
        """Remove a container's cgroups, or with no container a pod's, killing what is left in them."""
        for node in self.dirs.values():
            remove_tree(node / uid / container if container else node / uid)
