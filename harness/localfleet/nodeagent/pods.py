"""One worker per pod bound to the node: sandbox, volumes, init containers, containers, probes, status,
termination.

The worker sleeps until something is due (a probe, a restart after its back-off, a kill after its grace
period) or something happens (a process exits, the pod object changes), so an idle node costs next to
nothing. Status is written when it changes, and again when the watch shows that someone else changed
the phase or one of our conditions (the node controller marks pods not ready when a node goes quiet).
"""

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from harness.localfleet.nodeagent import STRATEGIC, images, podstatus, tmpdirs
from harness.localfleet.nodeagent.containers import (
    APP,
    INIT,
    NEVER,
    SIDECAR,
    Container,
    container_id,
    kind_of,
    stamp,
)
from harness.localfleet.nodeagent.env import EnvBuilder, EnvError, expand_all
from harness.localfleet.nodeagent.probes import ContainerProbes, Prober, Target
from harness.localfleet.nodeagent.runtime import (
    Mount,
    Runtime,
    Sandbox,
    SandboxError,
    StdinPipe,
    kill,
    stop_all,
    terminate,
)
from harness.localfleet.nodeagent.terminal import Terminal
from harness.localfleet.nodeagent.volumes import VolumeError, Volumes

__all__ = ["Container", "PodWorker", "stamp"]

IDLE_WAKE_S = 60.0  # nothing due: wake now and then all the same
RETRY_S = 1.0
EVICTION_GRACE_S = 1  # the kubelet's immediateEvictionGracePeriodSeconds (hard thresholds)
MESSAGE_BYTES = 4096  # the kubelet reads at most this much of a termination log
FALLBACK_BYTES, FALLBACK_LINES = 2048, 80  # FallbackToLogsOnError: the tail of the output
DRAIN_S = 2.0  # how long an exited container's terminal may take to copy its last output to the log
REPLACE_LIST = {"$patch": "replace"}  # strategic merge: replace the list (a new sandbox has a new address)


class PodWorker(threading.Thread):
    """Runs one pod as the kubelet would, until it is deleted or has completed."""

    def __init__(
        self,
        pod: client.V1Pod,
        api: client.ApiClient,
        runtime: Runtime,
        volumes: Volumes,
        node_ip: str,
        env_for: EnvBuilder,
        prober: Prober,
    ) -> None:
        super().__init__(name=f"pod-{pod.metadata.name}", daemon=True)
        self.pod, self.core, self.runtime, self.volumes = pod, client.CoreV1Api(api), runtime, volumes
        self.node_ip, self.env_for, self.prober = node_ip, env_for, prober
        self.wake, self.gone, self.stopping = threading.Event(), threading.Event(), threading.Event()
        self.sandbox: Sandbox | None = None
        self.folders: dict[str, Path] = {}
        inits = [Container(spec, kind_of(spec, True)) for spec in pod.spec.init_containers or []]
        self.containers = inits + [Container(spec, APP) for spec in pod.spec.containers]
        for container in self.containers if inits else []:
            container.waiting_reason = "PodInitializing"
        self.initialized = not inits
        self.start_time = stamp()
        self.problem = ""
        self.published: dict | None = None
        self.drifted = False
        self.transitions: dict[str, tuple[str, str]] = {}
        self.completed = ""
        self.eviction: tuple[str, str, dict] | None = None

    def update(self, pod: client.V1Pod) -> None:
        self.pod = pod
        self.drifted = self.drifted or self._differs(pod)
        self.wake.set()

    def vanish(self) -> None:
        """The pod object is gone (force-deleted): stop everything without writing status."""
        self.gone.set()
        self.wake.set()

    def shut_down(self) -> None:
        """The node agent stops: stop the pod's processes but keep its data, as a machine going down does."""
        self.stopping.set()
        self.wake.set()

    def evict(self, reason: str, message: str, condition: dict) -> None:
        """The node evicts the pod: stop it, then keep it Failed with the reason, message and condition."""
        self.eviction = (reason, message, condition)
        self.wake.set()

    def running(self) -> bool:
        return not (
            self.gone.is_set()
            or self.stopping.is_set()
            or self.eviction
            or self.completed
            or self.pod.metadata.deletion_timestamp
        )

    def run(self) -> None:
        try:
            self._start()
            while self.running():
                failed = self._attempt(self._tick)
                if self.running():
                    self.wake.wait(RETRY_S if failed else self._sleep_s())
                    self.wake.clear()
            if self.eviction:
                self._stop_and_report(EVICTION_GRACE_S, podstatus.FAILED)
            elif self.completed and not self.gone.is_set():
                self._stop_and_report(self._grace(), self.completed)
            elif not self.stopping.is_set():
                self._terminate()
        finally:
            kept = (self.eviction or self.completed) and not self.gone.is_set()  # for `kubectl logs`
            self._release(keep_data=bool(self.stopping.is_set() or kept))

    def _attempt(self, step: Callable[[], None]) -> str:
        """Run one step; an API or sandbox failure is reported (and returned) and retried later, as the
        kubelet does. Returns "" when the step succeeded."""
        try:
            step()
            return ""
        except (client.ApiException, VolumeError, SandboxError, OSError) as error:
            problem = _describe(error)
            print(f"pod {self._label()}: {problem}; retrying", flush=True)
            return problem

    def _label(self) -> str:
        return f"{self.pod.metadata.namespace}/{self.pod.metadata.name}"

    def _start(self) -> None:
        """Volumes and sandbox, retried until they exist or the pod goes (an API server that has just
        started may refuse the node's token requests until its node authorizer has seen the pod)."""
        while not self.sandbox and self.running():
            self.problem = self._attempt(self._prepare)
            if self.problem:
                self._attempt(lambda: self._publish(force=False))
                self.wake.wait(RETRY_S)
        self.problem = ""

    def _prepare(self) -> None:
        self.runtime.remove_sandbox(self.pod.metadata.uid)
        self.folders = self.volumes.prepare(self.pod)
        self.sandbox = self.runtime.create_sandbox(self.pod.metadata.uid)

    def _sleep_s(self) -> float:
        """Until the next probe, restart or kill is due."""
        moments = [time.monotonic() + IDLE_WAKE_S]
        for container in self.containers:
            if container.process is not None:
                moments.append(container.kill_at)
                moments.append(container.probes.next_due() if container.probes else NEVER)
        moments += [c.restart_at for c in self._runnable() if c.process is None and not c.finished]
        return max(0.0, min(moments) - time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        for container in self.containers:
            if container.process is None:
                continue
            code = container.process.poll()
            if code is not None:
                self._exited(container, code, now)
            elif now >= container.kill_at:
                kill(container.process)
                container.kill_at = now + RETRY_S  # again, should it still run by then
            elif container.kill_at == NEVER:
                self._probe(container, now)
        for container in self._runnable():
            if container.process is None and not container.finished and now >= container.restart_at:
                self._launch(container, now)
        phase = podstatus.phase(self.containers, self._restart_policy())
        if phase in podstatus.TERMINAL:
            self.completed = phase
            return
        self._publish(force=self.drifted)

    def _runnable(self) -> list[Container]:
        """The containers that should run now: the init containers one at a time, in order (a sidecar
        must have started before the next one starts), then the app containers beside the sidecars."""
        runnable = []
        for container in self.containers:
            if container.kind == APP:
                self.initialized = True
                runnable.append(container)
            elif container.kind == SIDECAR:
                runnable.append(container)
                if not (container.started or self.initialized):
                    return runnable
            elif not (container.succeeded or self.initialized):
                return [*runnable, container]
        return runnable

    def _restart_policy(self) -> str:
        return self.pod.spec.restart_policy or "Always"

    def _grace(self) -> float:
        grace = self.pod.spec.termination_grace_period_seconds
        return 30 if grace is None else grace

    def _mounts(self, spec: client.V1Container) -> list[Mount]:
        claims = {v.name: v.persistent_volume_claim for v in self.pod.spec.volumes or []}
        mounts = []
        for mount in spec.volume_mounts or []:
            self.volumes.ensure_mountpoint(Path(mount.mount_path))
            claim = claims.get(mount.name)  # a claim volume marked readOnly is read-only in every mount
            read_only = bool(mount.read_only) or bool(claim and claim.read_only)
            mounts.append(Mount(self.folders[mount.name], mount.mount_path, read_only))
        return mounts

    def _home(self, container: Container) -> Path:
        """The container's own home folder, HOME unless its env sets one (a runtime sets HOME from the
        image's user; our containers share the machine's filesystem, so each gets a folder of the pod's,
        removed with it)."""
        home = self.volumes.pod_dir(self.pod.metadata.uid) / "containers" / container.spec.name / "home"
        home.mkdir(parents=True, exist_ok=True)
        return home

    def _termination_log(self, container: Container) -> list[Mount]:
        """A fresh file of this run bound at the container's terminationMessagePath, read when it exits."""
        path, name = container.spec.termination_message_path, container.spec.name
        if not path:
            return []
        folder = self.volumes.pod_dir(self.pod.metadata.uid) / "containers" / name
        log = folder / f"{container.restarts}.termlog"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        self.volumes.ensure_mount_file(Path(path))
        container.termination_log = log
        return [Mount(log, path)]

    def _termination_message(self, container: Container, exit_code: int) -> str:
        """What the container wrote to its termination log (at most 4 KiB, as the kubelet reads), or with
        FallbackToLogsOnError after a failure, the tail of its output."""
        message = _head(container.termination_log, MESSAGE_BYTES) if container.termination_log else ""
        if message or exit_code == 0 or container.spec.termination_message_policy != "FallbackToLogsOnError":
            return message
        output = self.volumes.pod_dir(self.pod.metadata.uid) / "logs" / container.spec.name
        tail = _tail(output / f"{container.restarts}.log", FALLBACK_BYTES)
        return "\n".join(tail.splitlines()[-FALLBACK_LINES:])

    def _launch(self, container: Container, now: float) -> None:
        """Start the container's next run; a missing env source or a failed start waits and retries."""
        spec, uid = container.spec, self.pod.metadata.uid
        try:
            image_env = images.resolve(spec.image, spec.command or [], spec.args or []).env
            home = str(self._home(container))
            pod_ip = self.sandbox.ip if self.sandbox else ""
            scratch = tmpdirs.fresh(self.runtime.sandbox_name(uid), self.containers.index(container))
            tty = {"TERM": "xterm"} if spec.tty else {}  # oci.WithTTY's
            defaults = {"HOME": home, "TMPDIR": str(scratch)} | tty
            env = defaults | self.env_for(self.pod, spec, pod_ip, image_env)
            command, args = (expand_all(spec.command or [], env), expand_all(spec.args or [], env))
            resolved = images.resolve(spec.image, command, args)
            workdir = spec.working_dir or (home if resolved.own_folder else None)
            log = self.volumes.pod_dir(uid) / "logs" / spec.name / f"{container.restarts}.log"
            cgroups = self.runtime.cgroups.create(uid, spec.name, spec.resources)
            mounts = [*self._mounts(spec), *self._termination_log(container)]
            stdin = StdinPipe(bool(spec.stdin_once)) if spec.stdin and not spec.tty else None
            terminal = Terminal() if spec.tty else None
            process = self.runtime.start(
                self.sandbox, resolved.argv, env, mounts, workdir, log, cgroups, stdin, terminal
            )
        except (EnvError, client.ApiException, SandboxError, OSError) as error:
            reason = "CreateContainerConfigError" if isinstance(error, EnvError) else "CreateContainerError"
            container.waiting_reason, container.waiting_message = reason, _describe(error)
            container.restart_at = now + RETRY_S
            return
        if container.last_exit is not None:
            container.backoff.restarted(now)
        container.process, container.started_wall, container.note = process, time.time(), resolved.note
        container.stdin, container.terminal = stdin, terminal
        container.stop_signal = resolved.stop_signal
        container.kill_at, container.waiting_message = NEVER, ""
        container.probes = ContainerProbes(spec, now)
        threading.Thread(target=self._await_exit, args=(process,), daemon=True).start()

    def _await_exit(self, process: subprocess.Popen) -> None:
        """Wake the worker when a container's process exits."""
        process.wait()
        self.wake.set()

    def _probe(self, container: Container, now: float) -> None:
        """Run the container's due probes; a failed liveness or startup probe kills it for a restart."""
        target = Target(container.spec, self.sandbox.ip, container.process.pid)
        failed = container.probes.run_due(self.prober, target, now)
        if not failed:
            return
        probe = getattr(container.spec, f"{failed}_probe")
        grace = probe.termination_grace_period_seconds
        print(f"pod {self._label()}: {container.spec.name} failed its {failed} probe; killing it", flush=True)
        terminate(container.process, container.stop_signal)
        container.kill_at = now + (self._grace() if grace is None else grace)
        container.restart_after_kill = self._restart_policy() != "Never"

    def _exited(self, container: Container, code: int, now: float) -> None:
        exit_code = 128 - code if code < 0 else code
        if container.terminal is not None:  # its last output in the log before the status says it ended
            container.terminal.drain(DRAIN_S)
        uid, name = self.pod.metadata.uid, container.spec.name
        oom_killed = self.runtime.cgroups.oom_killed(uid, name)
        self._attempt(lambda: self.runtime.cgroups.remove(uid, name))
        container.last_exit = {
            "exitCode": exit_code,
            "reason": "OOMKilled" if oom_killed else "Completed" if exit_code == 0 else "Error",
            "startedAt": stamp(container.started_wall),
            "finishedAt": stamp(),
            "containerID": self._container_id(container),
        }
        if message := self._termination_message(container, exit_code):
            container.last_exit["message"] = message
        if container.stdin is not None:
            container.stdin.close()
        container.stdin = container.terminal = None
        container.process, container.probes, container.kill_at = None, None, NEVER
        policy, killed = self._restart_policy(), container.restart_after_kill
        container.restart_after_kill = False
        if container.kind == SIDECAR:
            restart = True
        elif container.kind == INIT:
            restart = policy != "Never" and (exit_code != 0 or killed)
        else:
            restart = policy == "Always" or (policy == "OnFailure" and (exit_code != 0 or killed))
        if not restart:
            container.restart_at = NEVER
            return
        container.restarts += 1
        container.restart_at = container.backoff.restart_at(now)
        if container.restart_at > now:
            container.waiting_reason = "CrashLoopBackOff"

    def _container_id(self, container: Container) -> str:
        return container_id(self.pod.metadata.uid, container.run_id(container.restarts))

    def _differs(self, pod: client.V1Pod) -> bool:
        """Whether the API's copy of our status drifted (someone else wrote phase or a condition)."""
        if self.published is None or pod.status is None:
            return False
        if pod.status.phase != self.published["phase"]:
            return True
        ours = {c["type"]: c["status"] for c in self.published["conditions"]}
        return any(c.type in ours and ours[c.type] != c.status for c in pod.status.conditions or [])

    def _stamped(self, condition: dict) -> dict:
        """The condition with a lastTransitionTime that changes only when its status does."""
        kind, status = condition["type"], condition["status"]
        if self.transitions.get(kind, ("",))[0] != status:
            self.transitions[kind] = (status, stamp())
        cleared = {"reason": None, "message": None}  # a strategic merge keeps fields it is not told to drop
        return cleared | condition | {"lastTransitionTime": self.transitions[kind][1]}

    def _status(self, phase: str) -> dict:
        containers_ready = podstatus.containers_ready(self.containers, phase)
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True" if self.sandbox else "False"},
            podstatus.initialized(self.containers, phase),
            containers_ready,
            podstatus.ready(containers_ready, self.pod),
        ]
        conditions = [self._stamped(condition) for condition in conditions]
        label = f"{self.pod.metadata.name}_{self.pod.metadata.namespace}({self.pod.metadata.uid})"
        uid = self.pod.metadata.uid
        status = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.node_ip,
            "hostIPs": [REPLACE_LIST, {"ip": self.node_ip}],
            "startTime": self.start_time,
            "initContainerStatuses": [c.status(uid, label) for c in self.containers if c.kind != APP],
            "containerStatuses": [c.status(uid, label) for c in self.containers if c.kind == APP],
        }
        for entry in status["containerStatuses"] + status["initContainerStatuses"]:
            waiting = entry["state"].get("waiting")
            if waiting is not None and self.problem and "message" not in waiting:
                waiting["message"] = self.problem
        if self.sandbox:
            status |= {"podIP": self.sandbox.ip, "podIPs": [REPLACE_LIST, {"ip": self.sandbox.ip}]}
        if self.eviction:
            reason, message, condition = self.eviction
            status |= {"reason": reason, "message": message}
            conditions.append(condition)
        return status

    def _publish(self, force: bool, phase: str | None = None) -> None:
        """Patch pods/status when it changed or the API's copy drifted from it (the status manager's
        needsReconcile), as a strategic merge with a UID precondition."""
        status = self._status(phase or podstatus.phase(self.containers, self._restart_policy()))
        if not force and self.published == status:
            return
        self.core.patch_namespaced_pod_status(
            self.pod.metadata.name,
            self.pod.metadata.namespace,
            {"metadata": {"uid": self.pod.metadata.uid}, "status": status},
            _content_type=STRATEGIC,
        )
        self.published, self.drifted = status, False

    def _terminate(self) -> None:
        """Graceful stop, the terminal phase, then the final delete with grace 0 and a UID precondition."""
        grace = self.pod.metadata.deletion_grace_period_seconds
        self._stop_containers(self._grace() if grace is None else grace)
        codes = [c.last_exit["exitCode"] for c in self.containers if c.kind == APP and c.last_exit]
        phase = podstatus.SUCCEEDED if codes and not any(codes) else podstatus.FAILED
        while not self.gone.is_set() and self._attempt(lambda: self._finish(phase)):
            self.wake.wait(RETRY_S)

    def _stop_and_report(self, grace: float, phase: str) -> None:
        """Stop what still runs and write the terminal phase; the pod object stays, as the kubelet
        leaves evicted and completed pods."""
        self._stop_containers(grace)
        while not self.gone.is_set() and self._attempt(lambda: self._publish(force=True, phase=phase)):
            self.wake.wait(RETRY_S)

    def _stop_containers(self, grace: float) -> None:
        """SIGTERM, the grace period, SIGKILL, as one deadline for the pod: the app containers (and a
        running init container) first, then the sidecars in reverse order. No container starts again."""
        deadline = time.monotonic() + max(grace, 0)
        sidecars = [c for c in self.containers if c.kind == SIDECAR]
        for group in [[c for c in self.containers if c.kind != SIDECAR], *([c] for c in reversed(sidecars))]:
            running = [c for c in group if c.process is not None]
            codes = stop_all([(c.process, c.stop_signal) for c in running], deadline)
            for container, code in zip(running, codes, strict=True):
                self._exited(container, code, time.monotonic())
        for container in self.containers:
            container.restart_at = NEVER

    def _finish(self, phase: str) -> None:
        """Write the terminal phase, then delete the pod object for good."""
        self._publish(force=True, phase=phase)
        try:
            self.core.delete_namespaced_pod(
                self.pod.metadata.name,
                self.pod.metadata.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.pod.metadata.uid)
                ),
            )
        except client.ApiException as error:
            if error.status not in (404, 409):
                raise

    def _release(self, keep_data: bool) -> None:
        """Stop what still runs and free the sandbox; the volumes go with the pod, not with the agent."""
        stop_all([(c.process, c.stop_signal) for c in self.containers if c.process], time.monotonic())
        self._attempt(lambda: self.runtime.remove_sandbox(self.pod.metadata.uid))
        self._attempt(lambda: self.runtime.cgroups.remove(self.pod.metadata.uid))
        if not keep_data:
            self.remove_files()

    def remove_files(self) -> None:
        """The pod's folder (volumes, logs, homes) and its containers' temporary folders."""
        self.volumes.remove(self.pod.metadata.uid)
        tmpdirs.remove(self.runtime.sandbox_name(self.pod.metadata.uid))


def _head(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as file:
            return file.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, file.seek(0, 2) - limit))
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def _describe(error: Exception) -> str:
    if isinstance(error, client.ApiException):
        return f"{error.status} {error.reason}: {str(error.body)[:300]}"
    return str(error)
