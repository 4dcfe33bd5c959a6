"""Freeze and thaw a node of the local fleet with the freezer cgroup, as a hung machine stops.

The node's agent, its pods and every other process of its network namespace (kube-proxy) stop dead:
the Lease is no longer renewed, so the node goes NotReady once the node monitor grace period passes,
and its pods stop answering (the kernel still accepts connections; nobody reads them). A freeze is
recorded in the fleet folder before it happens, so `fleet down` thaws first: a frozen process cannot
die.
"""

import contextlib
import json
import time
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import groundtruth, netns, nodes
from harness.localfleet.nodeagent import cgroups
from harness.localfleet.state import FleetState

RECORD = "frozen.json"
DEADLINE_S = 10.0


def frozen(folder: Path) -> dict[str, str]:
    """The recorded freezes of the fleet in folder: node name -> its freezer cgroup."""
    path = folder / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def _record(folder: Path, records: dict[str, str]) -> None:
    path = folder / RECORD
    if not records:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{RECORD}.tmp")
    tmp.write_text(json.dumps(records, indent=1))
    tmp.replace(path)


def node_cgroup(state: FleetState, node: str) -> tuple[Path, str]:
    """The node's freezer cgroup and its network namespace."""
    names = []
    for cluster in state.clusters:
        prefix = cluster.netns_prefix(state.plan)
        for spec in nodes.node_specs(cluster.name, cluster.region, cluster.nodes, prefix):
            if spec.name != node:
                names.append(spec.name)
                continue
            folder = cgroups.node_dir("freezer", spec.netns)
            if folder is None:
                raise FleetDrillError("this machine has no cgroup v1 freezer hierarchy: nodes cannot freeze")
            if not (folder / cgroups.AGENT).is_dir():
                raise FleetDrillError(f"node {node} has no freezer cgroup: its agent is not running")
            return folder, spec.netns
    raise FleetDrillError(f"no node {node!r} in the fleet at {state.folder} (nodes: {', '.join(names)})")


def _set(folder: Path, wanted: str) -> None:
    """Write freezer.state and wait until the kernel reports it (FREEZING becomes FROZEN)."""
    path = folder / "freezer.state"
    path.write_text(wanted)
    deadline = time.monotonic() + DEADLINE_S
    while (current := path.read_text().strip()) != wanted:
        if time.monotonic() > deadline:
            raise FleetDrillError(f"{folder} is {current}, not {wanted}, after {DEADLINE_S:.0f} s")
        time.sleep(0.01)


def freeze(state: FleetState, node: str) -> int:
    """Freeze the node and everything on it; return how many processes stopped."""
    folder, namespace = node_cgroup(state, node)
    _record(state.folder, {**frozen(state.folder), node: str(folder)})
    inside = set(cgroups.processes(folder))
    for pid in netns.pids([namespace]):
        if pid not in inside:  # a process of the node the agent did not start (kube-proxy)
            with contextlib.suppress(ProcessLookupError, OSError):
                (folder / cgroups.AGENT / "cgroup.procs").write_text(str(pid))
    _set(folder, "FROZEN")
    groundtruth.record(state.folder / groundtruth.FILE, "fault", fault="node-frozen", node=node)
    return len(cgroups.processes(folder))


def thaw(state: FleetState, node: str) -> None:
    """Let the node run again."""
    folder, _namespace = node_cgroup(state, node)
    _set(folder, "THAWED")
    _record(state.folder, {name: path for name, path in frozen(state.folder).items() if name != node})
    groundtruth.record(state.folder / groundtruth.FILE, "fault", fault="node-thawed", node=node)


def thaw_all(folder: Path) -> list[str]:
    """Thaw every node the fleet in folder recorded as frozen; return their names."""
    records = frozen(folder)
    for path in records.values():
        if Path(path).is_dir():
            _set(Path(path), "THAWED")
    _record(folder, {})
    return list(records)
