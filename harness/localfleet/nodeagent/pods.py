"""One worker per pod bound to the node: sandbox, volumes, containers, probes, status, termination."""

import datetime as dt
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from harness.localfleet import netns
from harness.localfleet.nodeagent import STRATEGIC, images, probes
from harness.localfleet.nodeagent.env import EnvBuilder, EnvError
from harness.localfleet.nodeagent.runtime import Mount, Runtime, Sandbox, SandboxError, stop
from harness.localfleet.nodeagent.volumes import VolumeError, Volumes

TICK_S = 0.1
RESYNC_S = 10.0
BACKOFF_START_S, BACKOFF_MAX_S = 10.0, 300.0
EVICTION_GRACE_S = 1  # the kubelet's immediateEvictionGracePeriodSeconds (hard thresholds)
REPLACE_LIST = {"$patch": "replace"}  # strategic merge: replace the list (a new sandbox has a new address)


def stamp(moment: float | None = None) -> str:
    return dt.datetime.fromtimestamp(moment or time.time(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """What the node knows of one container: its process, restarts, probes, last exit."""

    spec: client.V1Container
    process: subprocess.Popen | None = None
    started_wall: float = 0.0
    restarts: int = 0
    last_exit: dict | None = None
    backoff_s: float = BACKOFF_START_S
    backoff_until: float = 0.0
    note: str = ""
    readiness: probes.ProbeState | None = None
    liveness: probes.ProbeState | None = None
    ready_since: str = ""
    waiting_reason: str = "ContainerCreating"
    ready: bool = False


class PodWorker(threading.Thread):
    """Runs one pod as the kubelet would, until it is deleted."""

    def __init__(
        self,
        pod: client.V1Pod,
        api: client.ApiClient,
        runtime: Runtime,
        volumes: Volumes,
        node_ip: str,
        env_for: EnvBuilder,
    ) -> None:
        super().__init__(name=f"pod-{pod.metadata.name}", daemon=True)
        self.pod, self.core, self.runtime, self.volumes = pod, client.CoreV1Api(api), runtime, volumes
        self.node_ip, self.env_for = node_ip, env_for
        self.wake, self.gone, self.stopping = threading.Event(), threading.Event(), threading.Event()
        self.sandbox: Sandbox | None = None
        self.folders: dict[str, Path] = {}
        self.containers = [Container(c) for c in pod.spec.containers]
        self.start_time = stamp()
        self.problem = ""
        self.published: dict | None = None
        self.published_at = 0.0
        self.ready_transition = stamp()
        self.eviction: tuple[str, str, dict] | None = None

    def update(self, pod: client.V1Pod) -> None:
        self.pod = pod
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
            or self.pod.metadata.deletion_timestamp
        )

    def run(self) -> None:
        try:
            self._start()
            while self.running():
                self._attempt(self._tick)
                self.wake.wait(TICK_S)
                self.wake.clear()
            if self.eviction:
                self._evicted()
            elif not self.stopping.is_set():
                self._terminate()
        finally:
            self._release(keep_data=self.stopping.is_set())

    def _attempt(self, step: Callable[[], None]) -> bool:
        """Run one step; an API or sandbox failure is reported and retried later, as the kubelet does."""
        try:
            step()
            return True
        except (client.ApiException, EnvError, VolumeError, SandboxError, OSError) as error:
            reason = (
                f"{error.status} {error.reason}: {str(error.body)[:300]}"
                if isinstance(error, client.ApiException)
                else str(error)
            )
            print(
                f"pod {self.pod.metadata.namespace}/{self.pod.metadata.name}: {reason}; retrying", flush=True
            )
            self.problem = reason
            return False

    def _start(self) -> None:
        """Volumes and sandbox, retried until they exist or the pod goes (an API server that has just
        started may refuse the node's token requests until its node authorizer has seen the pod)."""
        while not self.sandbox and self.running():
            if not self._attempt(self._prepare):
                self._attempt(lambda: self._publish(force=False))
                self.wake.wait(1.0)
        self.problem = ""

    def _prepare(self) -> None:
        self.runtime.remove_sandbox(self.pod.metadata.uid)
        self.folders = self.volumes.prepare(self.pod)
        self.sandbox = self.runtime.create_sandbox(self.pod.metadata.uid)

    def _mounts(self, spec: client.V1Container) -> list[Mount]:
        claims = {v.name: v.persistent_volume_claim for v in self.pod.spec.volumes or []}
        mounts = []
        for mount in spec.volume_mounts or []:
            self.volumes.ensure_mountpoint(Path(mount.mount_path))
            claim = claims.get(mount.name)  # a claim volume marked readOnly is read-only in every mount
            read_only = bool(mount.read_only) or bool(claim and claim.read_only)
            mounts.append(Mount(self.folders[mount.name], mount.mount_path, read_only))
        return mounts

    def _launch(self, container: Container) -> None:
        resolved = images.resolve(
            container.spec.image, container.spec.command or [], container.spec.args or []
        )
        env = self.env_for(self.pod, container.spec, self.sandbox.ip if self.sandbox else "")
        log = (
            self.volumes.pod_dir(self.pod.metadata.uid)
            / "logs"
            / container.spec.name
            / f"{container.restarts}.log"
        )
        cgroups = self.runtime.cgroups.create(
            self.pod.metadata.uid, container.spec.name, container.spec.resources
        )
        container.process = self.runtime.start(
            self.sandbox,
            resolved.argv,
            env,
            self._mounts(container.spec),
            container.spec.working_dir,
            log,
            cgroups,
        )
        container.started_wall, container.note = time.time(), resolved.note
        container.readiness = probes.ProbeState.of(container.spec.readiness_probe)
        container.liveness = probes.ProbeState.of(container.spec.liveness_probe)

    def _tick(self) -> None:
        now = time.monotonic()
        for container in self.containers:
            process = container.process
            if process is None:
                if now >= container.backoff_until:
                    self._launch(container)
                continue
            code = process.poll()
            if code is not None:
                self._exited(container, code, now)
                continue
            self._probe(container, now)
        self._publish(force=now - self.published_at > RESYNC_S)

    def _exited(self, container: Container, code: int, now: float) -> None:
        exit_code = 128 - code if code < 0 else code
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
        container.process, container.ready = None, False
        policy = self.pod.spec.restart_policy or "Always"
        if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
            container.backoff_until = float("inf")
            return
        container.restarts += 1
        container.backoff_until = now + container.backoff_s
        container.backoff_s = min(container.backoff_s * 2, BACKOFF_MAX_S)
        container.waiting_reason = "CrashLoopBackOff"

    def _probe(self, container: Container, now: float) -> None:
        argv = netns.enter_argv(self.sandbox.netns, []) if self.sandbox else []
        for state in (container.liveness, container.readiness):
            if state and state.due(now):
                state.record(probes.check(state.probe, container.spec, self.sandbox.ip, argv), now)
        if container.liveness and container.liveness.failures >= (
            container.liveness.probe.failure_threshold or 3
        ):
            stop(container.process, self.pod.spec.termination_grace_period_seconds or 30)
            return
        ready = container.readiness.result if container.readiness else True
        if ready != container.ready:
            container.ready, container.ready_since = ready, stamp()

    def _container_id(self, container: Container) -> str:
        return f"fleetdrill://{self.pod.metadata.uid[:8]}-{container.spec.name}-{container.restarts}"

    def _container_status(self, container: Container) -> dict:
        status = {
            "name": container.spec.name,
            "image": container.spec.image,
            "imageID": f"fleetdrill://{container.spec.image}",
            "ready": container.ready,
            "started": container.process is not None,
            "restartCount": container.restarts,
            "containerID": self._container_id(container),
        }
        if container.process is not None:
            status["state"] = {"running": {"startedAt": stamp(container.started_wall)}}
        elif container.backoff_until == float("inf") and container.last_exit:
            status["state"] = {"terminated": container.last_exit}
        else:
            message = self.problem or container.note
            status["state"] = {
                "waiting": {"reason": container.waiting_reason, **({"message": message} if message else {})}
            }
        if container.last_exit and "terminated" not in status["state"]:
            status["lastState"] = {"terminated": container.last_exit}
        if container.note and container.process is not None:
            status["state"]["running"]["message"] = container.note
        return status

    def _status(self, phase: str | None = None) -> dict:
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        ready_text = "True" if ready else "False"
        if ready_text != (self.published or {}).get("ready"):
            self.ready_transition = stamp()
        not_ready = [c.spec.name for c in self.containers if not c.ready]
        why = (
            {}
            if ready
            else {
                "reason": "ContainersNotReady",
                "message": f"containers with unready status: [{' '.join(not_ready)}]",
            }
        )
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True" if self.sandbox else "False"},
            {"type": "Initialized", "status": "True"},
            {
                "type": "ContainersReady",
                "status": ready_text,
                "lastTransitionTime": self.ready_transition,
                **why,
            },
            {"type": "Ready", "status": ready_text, "lastTransitionTime": self.ready_transition, **why},
        ]
        status = {
            "phase": phase
            or ("Running" if self.sandbox and any(c.process for c in self.containers) else "Pending"),
            "conditions": conditions,
            "hostIP": self.node_ip,
            "hostIPs": [REPLACE_LIST, {"ip": self.node_ip}],
            "startTime": self.start_time,
            "containerStatuses": [self._container_status(c) for c in self.containers],
        }
        if self.sandbox:
            status |= {"podIP": self.sandbox.ip, "podIPs": [REPLACE_LIST, {"ip": self.sandbox.ip}]}
        if self.eviction:
            reason, message, condition = self.eviction
            status |= {"reason": reason, "message": message}
            conditions.append(condition)
        return status

    def _publish(self, force: bool, phase: str | None = None) -> None:
        """Patch pods/status when it changed (or on resync), as a strategic merge with a UID precondition."""
        status = self._status(phase)
        comparable = {**status, "ready": status["conditions"][3]["status"]}
        if not force and self.published == comparable:
            return
        self.core.patch_namespaced_pod_status(
            self.pod.metadata.name,
            self.pod.metadata.namespace,
            {"metadata": {"uid": self.pod.metadata.uid}, "status": status},
            _content_type=STRATEGIC,
        )
        self.published, self.published_at = comparable, time.monotonic()

    def _terminate(self) -> None:
        """Graceful stop, the terminal phase, then the final delete with grace 0 and a UID precondition."""
        grace = self.pod.metadata.deletion_grace_period_seconds
        grace = self.pod.spec.termination_grace_period_seconds if grace is None else grace
        self._stop_containers(grace or 0)
        codes = [c.last_exit["exitCode"] for c in self.containers if c.last_exit]
        phase = "Succeeded" if codes and not any(codes) else "Failed"
        while not self.gone.is_set() and not self._attempt(lambda: self._finish(phase)):
            self.wake.wait(1.0)

    def _evicted(self) -> None:
        """Stop the evicted pod at once and write phase Failed; its object stays, as the kubelet leaves it."""
        self._stop_containers(EVICTION_GRACE_S)
        while not self.gone.is_set() and not self._attempt(lambda: self._publish(force=True, phase="Failed")):
            self.wake.wait(1.0)

    def _stop_containers(self, grace: float) -> None:
        """SIGTERM, the grace period, SIGKILL; no container starts again."""
        for container in self.containers:
            if container.process is not None:
                self._exited(container, stop(container.process, grace), time.monotonic())
                container.backoff_until = float("inf")
            container.ready = False

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
        for container in self.containers:
            if container.process is not None:
                stop(container.process, 0)
        self._attempt(lambda: self.runtime.remove_sandbox(self.pod.metadata.uid))
        self._attempt(lambda: self.runtime.cgroups.remove(self.pod.metadata.uid))
        if not keep_data:
            self.volumes.remove(self.pod.metadata.uid)
