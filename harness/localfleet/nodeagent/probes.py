"""Container probes as the kubelet runs them (pkg/kubelet/prober, pkg/probe).

Handlers: HTTP GET (scheme, host, headers, the kubelet's User-Agent, same-host redirects followed,
200-399 passes), TCP connect, exec inside the container (its network and mount namespaces, working
directory and environment, killed at timeoutSeconds). gRPC health checks need a gRPC client we do not
have: a gRPC probe is checked as a TCP connect to its port.

Scheduling and thresholds follow the prober worker: a probe first runs initialDelaySeconds after the
container started, then every periodSeconds; its result changes only after successThreshold
consecutive successes or failureThreshold consecutive failures. Readiness starts as failure, liveness
as success; liveness and readiness do not run until the startup probe has succeeded; a failed
liveness or startup probe holds (no more attempts) until the container is restarted.

The first attempt of each probe runs as soon as the container has started (after initialDelaySeconds,
if any). A readiness probe that has not yet passed in this run is then tried again sooner than its
period: after FIRST_RETRY_S, then RETRY_GROWTH times as long each time, never later than the period.
The kubelet does the same by other means: its prober manager triggers an immediate readiness run on
every pod sync while a started container is not ready (prober_manager.go UpdatePodStatus), and a
container start and each change of a probe result cause a pod sync. So an app that opens its port a
hundred milliseconds after its process starts is Ready then, not a whole period later. Once it has
passed, readiness runs every periodSeconds; the thresholds count these attempts like any other.
"""

import socket
import ssl
import subprocess
import urllib.parse
from dataclasses import dataclass

from kubernetes import client

from harness.localfleet.nodeagent.containerexec import container_env

MAX_REDIRECTS = 10
INSECURE = ssl.create_default_context()  # the kubelet does not verify a probe's certificate
INSECURE.check_hostname, INSECURE.verify_mode = False, ssl.CERT_NONE
BODY_LIMIT = 10 * 1024
LIVENESS, READINESS, STARTUP = "liveness", "readiness", "startup"
FIRST_RETRY_S = 0.025
RETRY_GROWTH = 1.5
"""How soon a readiness probe that has not passed yet is tried again, and how much later each next time."""


def _port(port: int | str, container: client.V1Container) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.ports or []:
        if declared.name == port:
            return declared.container_port
    raise ValueError(f"no container port named {port!r}")


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection; a pod address needs no getaddrinfo (a fifth of an HTTP probe's CPU)."""
    connection = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        connection.connect((host, port))
    except OSError:
        connection.close()
        raise
    return connection


@dataclass(frozen=True)
class Target:
    """What a probe attempt reaches: the container's spec, its pod's address and its process."""

    spec: client.V1Container
    pod_ip: str
    pid: int


class Prober:
    """Runs one attempt of a probe, as the kubelet's prober does."""

    def __init__(self, kubelet_version: str) -> None:
        major_minor = ".".join(kubelet_version.lstrip("v").split(".")[:2])
        self.user_agent = f"kube-probe/{major_minor}"

    def check(self, probe: client.V1Probe, target: Target) -> bool:
        timeout = probe.timeout_seconds or 1
        try:
            if probe.http_get:
                return self._http(probe.http_get, target, timeout)
            if probe.tcp_socket:
                port = _port(probe.tcp_socket.port, target.spec)
                return self._tcp(probe.tcp_socket.host or target.pod_ip, port, timeout)
            if probe.grpc:
                return self._tcp(target.pod_ip, probe.grpc.port, timeout)
            if probe._exec:
                return self._exec(probe._exec.command or [], target.pid, timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False
        return False

    @staticmethod
    def _tcp(host: str, port: int, timeout: float) -> bool:
        with _connect(host, port, timeout):
            return True

    @staticmethod
    def _exec(command: list[str], pid: int, timeout: float) -> bool:
        """The command in the container's namespaces and environment; exit 0 passes, a timeout fails."""
        argv = ["nsenter", f"--target={pid}", "--net", "--mount", "--wd", "--", *command]
        done = subprocess.run(
            argv, env=container_env(pid), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return done.returncode == 0

    def _http(self, action: client.V1HTTPGetAction, target: Target, timeout: float) -> bool:
        scheme = (action.scheme or "HTTP").lower()
        host, port = action.host or target.pod_ip, _port(action.port, target.spec)
        headers = {"User-Agent": self.user_agent, "Accept": "*/*"}
        headers |= {header.name: header.value for header in action.http_headers or []}
        path = action.path or "/"
        for _ in range(MAX_REDIRECTS + 1):
            status, location = self._get(scheme, host, port, path, headers, timeout)
            if not (300 <= status < 400 and location):
                return 200 <= status < 400
            moved = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}:{port}{path}", location))
            if (moved.hostname, moved.port or port) != (host, port):
                return True  # the kubelet does not follow a redirect to another host: it passes
            path = moved.path + (f"?{moved.query}" if moved.query else "")
        return False

    @staticmethod
    def _get(
        scheme: str, host: str, port: int, path: str, headers: dict[str, str], timeout: float
    ) -> tuple[int, str]:
        """One GET on a connection of its own: the status code and the Location header. Written on a
        plain socket (a third of http.client's CPU), reading at most the response head."""
        connection = _connect(host, port, timeout)
        if scheme == "https":
            connection = INSECURE.wrap_socket(connection, server_hostname=host)
        default_host = {} if any(k.lower() == "host" for k in headers) else {"Host": f"{host}:{port}"}
        fields = default_host | headers | {"Connection": "close"}
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        with connection:
            connection.sendall(request.encode("latin-1"))
            response = b""
            while b"\r\n\r\n" not in response and len(response) < BODY_LIMIT:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                response += chunk
        status_line, _, head = response.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError("not an HTTP response")
        lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        location = next(
            (line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"location:")), b""
        )
        return int(parts[1]), location.decode("latin-1")


@dataclass
class ProbeState:
    """Schedule and outcome of one probe of one container run (the kubelet's prober worker)."""

    kind: str
    probe: client.V1Probe
    started_at: float
    result: bool
    next_at: float = 0.0
    last: bool | None = None
    run: int = 0
    on_hold: bool = False
    passed: bool = False
    retry_s: float = FIRST_RETRY_S

    def due(self, now: float) -> bool:
        return not self.on_hold and now >= max(self.next_at, self.started_at + self.initial_delay)

    @property
    def initial_delay(self) -> float:
        return self.probe.initial_delay_seconds or 0

    def record(self, ok: bool, now: float) -> None:
        """Count one attempt; the result flips only once a threshold of equal outcomes is reached."""
        period = self.probe.period_seconds or 10
        self.next_at = now + period
        self.passed = self.passed or ok
        if self.kind == READINESS and not self.passed:  # not ready yet: try again soon (module docstring)
            self.next_at = now + min(self.retry_s, period)
            self.retry_s *= RETRY_GROWTH
        self.run = self.run + 1 if ok == self.last else 1
        self.last = ok
        threshold = (self.probe.success_threshold or 1) if ok else (self.probe.failure_threshold or 3)
        if self.run < threshold:
            return
        self.result = ok
        if not ok and self.kind in (LIVENESS, STARTUP):
            self.on_hold, self.run = True, 0


class ContainerProbes:
    """The startup, liveness and readiness probes of one container run."""

    def __init__(self, spec: client.V1Container, started_at: float) -> None:
        def state(kind: str, probe: client.V1Probe | None, initial: bool) -> ProbeState | None:
            return ProbeState(kind, probe, started_at, initial) if probe else None

        self.startup = state(STARTUP, spec.startup_probe, False)
        self.liveness = state(LIVENESS, spec.liveness_probe, True)
        self.readiness = state(READINESS, spec.readiness_probe, False)

    @property
    def started(self) -> bool:
        """containerStatuses[].started: the startup probe has succeeded (or there is none)."""
        return self.startup is None or self.startup.result

    @property
    def ready(self) -> bool:
        return self.started and (self.readiness is None or self.readiness.result)

    def run_due(self, prober: Prober, target: Target, now: float) -> str:
        """Run the probes that are due; name the probe that failed for good ("" while none did)."""
        if self.startup and not self.started:
            if self.startup.due(now):
                self.startup.record(prober.check(self.startup.probe, target), now)
            return STARTUP if self.startup.on_hold else ""
        for state in (self.liveness, self.readiness):
            if state and state.due(now):
                state.record(prober.check(state.probe, target), now)
        return LIVENESS if self.liveness and self.liveness.on_hold else ""

    def next_due(self) -> float:
        """When a probe is next due (monotonic), so the pod worker can sleep until then."""
        states = [self.startup] if self.startup and not self.started else [self.liveness, self.readiness]
        times = [max(s.next_at, s.started_at + s.initial_delay) for s in states if s and not s.on_hold]
        return min(times, default=float("inf"))
