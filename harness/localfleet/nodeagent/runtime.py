"""The node's container runtime: pod sandboxes wired by the real CNI plugins, containers as processes."""

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import netns
from harness.localfleet.nodeagent import podexec
from harness.localfleet.nodeagent.cgroups import NodeCgroups
from harness.localfleet.nodeagent.terminal import Terminal

EXEC_DEADLINE_S = 30.0
KILL_AGAIN_S = 30.0
"""How long a killed container is awaited before it is killed again and said to be slow to end."""


class SandboxError(FleetDrillError):
    """A sandbox or container could not be created."""


@dataclass(frozen=True)
class Sandbox:
    """A pod's network namespace and the address CNI gave it."""

    netns: str
    ip: str

    @property
    def path(self) -> Path:
        """The network namespace's file (to join it)."""
        return netns.NETNS_DIR / self.netns


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


class StdinPipe:
    """The write end of a container's stdin, kept open by the node for attach (spec.stdin), as a runtime
    keeps it. `once` (spec.stdinOnce): closed for good when the first attach that writes to it ends."""

    def __init__(self, once: bool) -> None:
        self.child_end, fd = os.pipe()
        self._fd: int | None = fd
        self.once = once
        self._lock = threading.Lock()

    def dup(self) -> int | None:
        """A copy of the write end for one attach (closed by it); None once stdin is closed."""
        with self._lock:
            return None if self._fd is None else os.dup(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class Runtime:
    """Sandboxes and processes of one node, called as a container runtime calls CNI."""

    def __init__(
        self, node_root: Path, netns_prefix: str, pod_cidr: str, cni_bin: Path, cgroups: NodeCgroups
    ) -> None:
        self.root, self.cgroups = node_root, cgroups
        self.prefix = netns_prefix
        self.cni_bin = cni_bin
        self.network = {
            "cniVersion": "1.0.0",
            "name": "podnet",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(node_root / "cni"),
            },
        }

    def sandbox_name(self, uid: str) -> str:
        return f"{self.prefix}p{uid[:8]}"

    def _cni(self, command: str, uid: str, name: str) -> dict:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": uid,
            "CNI_NETNS": str(netns.NETNS_DIR / name),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.cni_bin),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        done = subprocess.run(
            [str(self.cni_bin / "bridge")],
            input=json.dumps(self.network),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise SandboxError(f"CNI {command} for pod {uid}: {done.stdout.strip() or done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def create_sandbox(self, uid: str) -> Sandbox:
        """A network namespace for the pod with its own address from the node's pod CIDR."""
        name = self.sandbox_name(uid)
        netns.create(name)
        result = self._cni("ADD", uid, name)
        address = result["ips"][0]["address"].split("/")[0]
        return Sandbox(name, address)

    def remove_sandbox(self, uid: str) -> None:
        """Release the pod's address and delete its namespace (idempotent)."""
        name = self.sandbox_name(uid)
        if netns.exists(name):
            self._cni("DEL", uid, name)
            netns.delete(name)

    def start(
        self,
        sandbox: Sandbox,
        argv: list[str],
        env: dict[str, str],
        mounts: list[Mount],
        workdir: str | None,
        log: Path,
        cgroups: list[Path],
        stdin: StdinPipe | None = None,
        terminal: Terminal | None = None,
    ) -> subprocess.Popen:
        """Start a container process inside the sandbox and its cgroups, with its volumes bound at their
        mount paths. With a `terminal`, that is its stdin, stdout, stderr and controlling terminal, and
        what it outputs goes to `log`; otherwise its stdin is the pipe `stdin`, else /dev/null, and its
        output goes to `log`. Both are closed here if the start fails."""
        shim = [
            sys.executable,
            "-S",  # the shim needs only the standard library: skip site, start faster
            "-I",
            str(Path(podexec.__file__)),
            "--netns",
            str(sandbox.path),
        ]
        for mount in mounts:
            shim += ["--bind", f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}"]
        if workdir:
            shim += ["--workdir", workdir]
        if terminal is not None:
            shim += ["--tty"]
        for folder in cgroups:
            shim += ["--cgroup", str(folder)]
        ready, ready_writer = os.pipe()
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                if terminal is not None:
                    stdio = {name: terminal.child_end for name in ("stdin", "stdout", "stderr")}
                else:
                    source = subprocess.DEVNULL if stdin is None else stdin.child_end
                    stdio = {"stdin": source, "stdout": out, "stderr": subprocess.STDOUT}
                process = subprocess.Popen(
                    [*shim, "--ready-fd", str(ready_writer), "--", *argv],
                    env=env,
                    **stdio,
                    start_new_session=True,
                    pass_fds=(ready_writer,),
                )
            os.close(ready_writer)
            _wait_for_exec(ready, process)
        except BaseException:
            for end in (stdin, terminal):
                if end is not None:
                    end.close()
            raise
        finally:
            os.close(ready)
            for end in (stdin, terminal):
                if end is not None:
                    os.close(end.child_end)
        if terminal is not None:
            terminal.pump(log)
        return process


def _wait_for_exec(ready: int, process: subprocess.Popen) -> None:
    """Wait until the shim has entered the pod's namespaces and exec'd the container (the pipe's last
    writer closes at exec, or when the shim fails), so a running container is really in its sandbox."""
    readable, _, _ = select.select([ready], [], [], EXEC_DEADLINE_S)
    if not readable:
        killed_and_reaped(process)
        raise SandboxError(f"the container did not start within {EXEC_DEADLINE_S:.0f} s")
    os.read(ready, 1)


def _signal(process: subprocess.Popen, signum: int) -> None:
    """Signal the container's process group (the container and everything it started)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


def terminate(process: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    """Ask the container to stop with its stop signal (the image's STOPSIGNAL, else SIGTERM)."""
    _signal(process, signum)


def kill(process: subprocess.Popen) -> None:
    _signal(process, signal.SIGKILL)


def stop_all(stops: list[tuple[subprocess.Popen, int]], deadline: float) -> list[int]:
    """Each process's stop signal to it, SIGKILL to those still running at the (monotonic) deadline;
    return their exit codes once every one has ended (killed_and_reaped)."""
    for process, signum in stops:
        terminate(process, signum)
    codes = []
    for process, _ in stops:
        try:
            codes.append(process.wait(timeout=max(deadline - time.monotonic(), 0)))
        except subprocess.TimeoutExpired:
            codes.append(killed_and_reaped(process))
    return codes


def killed_and_reaped(process: subprocess.Popen) -> int:
    """SIGKILL the container, again every KILL_AGAIN_S (saying so) until it has ended; its exit code.
    A killed process can take minutes to end: one held to a small CPU quota frees its memory at that
    quota's pace. The kubelet keeps such a pod Terminating until the runtime reports its containers gone;
    so does the node, instead of giving the pod up while its container still runs."""
    while True:
        kill(process)
        try:
            return process.wait(timeout=KILL_AGAIN_S)
        except subprocess.TimeoutExpired:
            print(f"container process {process.pid} runs on {KILL_AGAIN_S:g} s after SIGKILL", flush=True)
