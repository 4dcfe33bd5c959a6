"""StressChaos: the real stress-ng (Debian's) inside a target container's cgroups, so its workers use the
CPU and memory of that container's node and count against its limits, as Chaos Mesh's daemon runs
stress-ng inside the container's cgroup. Its environment carries the chaos UID (its workers, which write
their titles over theirs, are its descendants), so a restarted controller finds and stops the stress of
a fault in force."""

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

from harness.localfleet.chaos import containers
from harness.localfleet.nodeagent.images import STRESS_PROGRAMS, missing_programs

MARKER = "FLEETDRILL_CHAOS"
HELD = 'read -r _ && exec "$@" </dev/null'
"""A shell that waits for a line on stdin, then becomes the program: moved into the container's cgroups
meanwhile, the program starts its workers there (Chaos Mesh's daemon holds it with its pause helper)."""
SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGT]?)(i?B?)$|^([0-9]+(?:\.[0-9]+)?)%$")
POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def size_bytes(text: str, total_memory: int) -> int:
    """Bytes from Chaos Mesh's memory size: 256MB, 1GB, 512Mi, 1024 or a percentage of total_memory."""
    match = SIZE.match(text.strip())
    if not match:
        raise ValueError(f"stressors.memory.size {text!r} is not a size such as 256MB or 10%")
    if match[4]:
        return int(total_memory * float(match[4]) / 100)
    return int(float(match[1]) * 1024 ** POWERS[match[2]])


def total_memory() -> int:
    with Path("/proc/meminfo").open() as meminfo:
        return int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1]) * 1024


def stress_args(stressors: dict) -> list[str]:
    """stress-ng's options: --cpu N --cpu-load L for cpu, --vm N --vm-keep --vm-bytes SIZE for memory, as
    Chaos Mesh passes them (SIZE is what all memory workers take together: stress-ng divides --vm-bytes
    among them; --vm-keep keeps the memory mapped and rewrites it instead of unmapping and mapping it
    again)."""
    args: list[str] = []
    cpu, memory = stressors.get("cpu"), stressors.get("memory")
    if cpu:
        args += ["--cpu", str(cpu["workers"]), "--cpu-load", str(cpu.get("load") or 100)]
    if memory:
        size = size_bytes(memory.get("size") or "256MB", total_memory())
        args += ["--vm", str(memory["workers"]), "--vm-keep", "--vm-bytes", str(max(size, 1))]
    if not args:
        raise ValueError("stressors: give cpu or memory (stressngStressors is not supported here)")
    return args


def start(uid: str, container: str, chaos_uid: str, stressors: dict) -> int:
    """Start stress-ng held, move it into the container's cgroups before it has started any worker (those
    inherit its cgroups), then let it run; return its pid."""
    folders = containers.container_cgroups(uid, container)
    if not folders or not containers.pids(uid, container):
        raise containers.NotRunning(f"container {container} of pod {uid} has no process on this machine")
    if "stress-ng" in missing_programs():
        raise FileNotFoundError(
            "stress-ng is not installed on this node's machine (Debian's stress-ng package)"
        )
    process = subprocess.Popen(
        ["sh", "-c", HELD, "stress-ng", str(STRESS_PROGRAMS["stress-ng"]), *stress_args(stressors)],
        env={**os.environ, MARKER: chaos_uid},
        cwd=tempfile.gettempdir(),  # stress-ng's temporary path is its working directory: writable
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with process.stdin:  # closed on every path: a held shell that reads no line exits
        try:
            for folder in folders:
                (folder / "cgroup.procs").write_text(str(process.pid))
        except OSError:
            process.kill()
            process.wait(timeout=10)
            raise
        process.stdin.write(b"go\n")
    return process.pid


def stop(uid: str, container: str, chaos_uid: str) -> list[int]:
    """Kill the chaos's workers in the container (none left is fine) and reap those that are ours."""
    found = containers.marked(uid, container, f"{MARKER}={chaos_uid}")
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in found:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return found
