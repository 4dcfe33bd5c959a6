"""What the node knows of one container of a pod, and its status as the kubelet writes it.

A container is an init container (run to completion, in order), a sidecar (an init container with
restartPolicy Always: started in order, then kept running beside the app containers) or an app
container. `restarts` numbers the container's runs for the log files: it counts the runs started
or due, so it is one ahead of restartCount while a restart waits out its back-off.
"""

import datetime as dt
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client

from harness.localfleet.nodeagent.backoff import Backoff
from harness.localfleet.nodeagent.probes import ContainerProbes
from harness.localfleet.nodeagent.runtime import StdinPipe
from harness.localfleet.nodeagent.terminal import Terminal

INIT, SIDECAR, APP = "init", "sidecar", "app"
NEVER = float("inf")


def stamp(moment: float | None = None) -> str:
    """metav1.Time: RFC 3339 with second precision."""
    return dt.datetime.fromtimestamp(moment or time.time(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kind_of(spec: client.V1Container, init: bool) -> str:
    if not init:
        return APP
    return SIDECAR if spec.restart_policy == "Always" else INIT


@dataclass
class Container:
    """One container's runs: its process, stdin or terminal, probes, restarts, last exit and why it
    waits."""

    spec: client.V1Container
    kind: str
    process: subprocess.Popen | None = None
    started_wall: float = 0.0
    restarts: int = 0
    last_exit: dict | None = None
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float = 0.0
    kill_at: float = NEVER
    restart_after_kill: bool = False
    note: str = ""
    probes: ContainerProbes | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    termination_log: Path | None = None
    stdin: StdinPipe | None = None  # this run's stdin, when the spec asks for one and no tty
    terminal: Terminal | None = None  # this run's terminal, when the spec asks for a tty
    stop_signal: int = signal.SIGTERM  # the image's STOPSIGNAL, as containerd sends it

    @property
    def succeeded(self) -> bool:
        """An init container that ran to completion (it never runs again)."""
        return self.process is None and self.restart_at == NEVER and self._exit_code() == 0

    @property
    def finished(self) -> bool:
        """Exited and not to be started again."""
        return self.process is None and self.restart_at == NEVER and self.last_exit is not None

    @property
    def started(self) -> bool:
        return self.process is not None and bool(self.probes and self.probes.started)

    @property
    def ready(self) -> bool:
        if self.kind == INIT:
            return self.succeeded
        return self.process is not None and bool(self.probes and self.probes.ready)

    def _exit_code(self) -> int | None:
        return self.last_exit["exitCode"] if self.last_exit else None

    def run_id(self, run: int) -> str:
        return f"{self.spec.name}-{run}"

    def status(self, uid: str, pod_label: str) -> dict:
        """containerStatuses[] / initContainerStatuses[] entry (kubelet convertToAPIContainerStatuses
        and the prober's UpdatePodStatus)."""
        waiting_restart = self.process is None and self.last_exit is not None and not self.finished
        status = {
            "name": self.spec.name,
            "image": self.spec.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts - 1 if waiting_restart else self.restarts,
        }
        if self.process is not None:
            status |= {"containerID": container_id(uid, self.run_id(self.restarts))}
            status["state"] = {"running": {"startedAt": stamp(self.started_wall)}}
        elif self.last_exit is not None:
            status["containerID"] = self.last_exit["containerID"]
        if self.process is not None or self.last_exit is not None:
            status["imageID"] = f"fleetdrill://{self.spec.image}"
        if self.finished:
            status["state"] = {"terminated": self.last_exit}
        elif self.process is None:
            message = self.waiting_message or self.note
            if waiting_restart:
                message = (
                    f"back-off {self.backoff.delay_s or 10:.0f}s restarting failed container="
                    f"{self.spec.name} pod={pod_label}"
                )
            status["state"] = {
                "waiting": {"reason": self.waiting_reason, **({"message": message} if message else {})}
            }
        if self.last_exit and "terminated" not in status["state"]:
            status["lastState"] = {"terminated": self.last_exit}
        if self.note and self.process is not None:
            status["state"]["running"]["message"] = self.note
        return status


def container_id(uid: str, run_id: str) -> str:
    """`fleetdrill://UID8-NAME-RUN`: the log server reads the run number from its end."""
    return f"fleetdrill://{uid[:8]}-{run_id}"
