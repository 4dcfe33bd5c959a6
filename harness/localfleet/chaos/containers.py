"""A pod's containers on this machine, found as Chaos Mesh's daemon finds them through the container
runtime: here the node agent's cgroups (`fleetdrill/<node>/<pod-uid>/<container>` in every hierarchy,
see nodeagent/cgroups.py) give each container's processes, and a process gives the pod's network
namespace (/proc/PID/ns/net). Between two runs of a container (a restart) the pod's sandbox still holds
its namespace, as a pause container does: the node agent names it `<node-netns>-p<uid[:8]>`."""

import contextlib
import os
import signal
from pathlib import Path

from harness.localfleet.netns import NETNS_DIR
from harness.localfleet.nodeagent.cgroups import PARENT, hierarchies, processes


class NotRunning(LookupError):
    """The container has no process on this machine (not started yet, restarting, or gone)."""


def container_cgroups(uid: str, container: str) -> list[Path]:
    """The container's cgroup folder in every hierarchy the machine has (empty when it has none)."""
    found = []
    for root in hierarchies().values():
        found += [p for p in (root / PARENT).glob(f"*/{uid}/{container}") if p.is_dir()]
    return found


def pids(uid: str, container: str) -> list[int]:
    """Every process of the container (its main process first, as cgroup.procs lists by pid)."""
    folders = container_cgroups(uid, container)
    return sorted(set(processes(folders[0]))) if folders else []


def main_pid(uid: str, containers: list[str]) -> int:
    """A process of the first running container of the pod: its network namespace is the pod's."""
    for container in containers:
        found = pids(uid, container)
        if found:
            return found[0]
    raise NotRunning(f"no running container of pod {uid} on this machine")


def netns_path(uid: str, containers: list[str]) -> str:
    """The pod's network namespace: through a running container, else its sandbox's name."""
    try:
        return f"/proc/{main_pid(uid, containers)}/ns/net"
    except NotRunning:
        sandboxes = list(NETNS_DIR.glob(f"*-p{uid[:8]}"))
        if len(sandboxes) == 1:
            return str(sandboxes[0])
        raise NotRunning(f"pod {uid} has no network namespace on this machine") from None


def kill(uid: str, container: str) -> list[int]:
    """SIGKILL every process of the container (the node agent then restarts it per restartPolicy)."""
    found = pids(uid, container)
    if not found:
        raise NotRunning(f"container {container} of pod {uid} has no process on this machine")
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def marked(uid: str, container: str, marker: str) -> list[int]:
    """Processes in the container's cgroups with an environment entry that starts with `marker`
    (KEY=VALUE for one chaos, KEY= for any), and their descendants there: stress-ng's workers write
    their titles over their copy of the environment."""
    wanted, inside = marker.encode(), pids(uid, container)
    found = set()
    for pid in inside:
        with contextlib.suppress(OSError):
            if any(e.startswith(wanted) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                found.add(pid)
    parents = {pid: _parent(pid) for pid in inside}
    while grown := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= grown
    return sorted(found)


def _parent(pid: int) -> int:
    """The parent's pid (0 when the process is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
