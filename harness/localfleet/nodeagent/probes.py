"""Container probes as the kubelet runs them: HTTP GET, TCP socket and exec, with their thresholds."""

import http.client
import socket
import subprocess
import time
from dataclasses import dataclass

from kubernetes import client


def _port(port: int | str, container: client.V1Container) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.ports or []:
        if declared.name == port:
            return declared.container_port
    raise ValueError(f"no container port named {port!r}")


def check(probe: client.V1Probe, container: client.V1Container, pod_ip: str, netns_argv: list[str]) -> bool:
    """One attempt of the probe against the container at pod_ip."""
    timeout = probe.timeout_seconds or 1
    try:
        if probe.http_get:
            connection = http.client.HTTPConnection(
                pod_ip, _port(probe.http_get.port, container), timeout=timeout
            )
            try:
                connection.request("GET", probe.http_get.path or "/")
                return 200 <= connection.getresponse().status < 400
            finally:
                connection.close()
        if probe.tcp_socket:
            with socket.create_connection((pod_ip, _port(probe.tcp_socket.port, container)), timeout=timeout):
                return True
        if probe._exec:
            done = subprocess.run([*netns_argv, *probe._exec.command], capture_output=True, timeout=timeout)
            return done.returncode == 0
    except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException):
        return False
    return True


@dataclass
class ProbeState:
    """Schedule and outcome of one probe of one container."""

    probe: client.V1Probe
    started_at: float
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    result: bool = False

    def due(self, now: float) -> bool:
        return now >= max(self.next_at, self.started_at + (self.probe.initial_delay_seconds or 0))

    def record(self, ok: bool, now: float) -> None:
        """Apply success/failure thresholds to one attempt's outcome."""
        self.next_at = now + (self.probe.period_seconds or 10)
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= (self.probe.success_threshold or 1):
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= (self.probe.failure_threshold or 3):
                self.result = False

    @classmethod
    def of(cls, probe: client.V1Probe | None) -> "ProbeState | None":
        return cls(probe, time.monotonic()) if probe else None
