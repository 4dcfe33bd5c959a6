"""A pod's phase and conditions computed from its containers, as the kubelet computes them
(pkg/kubelet/kubelet_pods.go getPhase, pkg/kubelet/status/generate.go)."""

from kubernetes import client

from harness.localfleet.nodeagent.containers import APP, INIT, SIDECAR, Container

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL = (SUCCEEDED, FAILED)


def _names(containers: list[Container]) -> str:
    """A Go-formatted []string: [a b]."""
    return f"[{' '.join(c.spec.name for c in containers)}]"


def _failed(container: Container) -> bool:
    return container.process is None and bool(container.last_exit and container.last_exit["exitCode"])


def phase(containers: list[Container], restart_policy: str) -> str:
    """getPhase: init containers decide Pending or Failed; then the app containers decide."""
    inits = [c for c in containers if c.kind == INIT]
    if restart_policy == "Never" and any(_failed(c) for c in inits):
        return FAILED
    apps = [c for c in containers if c.kind == APP]
    ever_started = any(c.process is not None or c.last_exit is not None for c in apps)
    pending_init = any(not c.succeeded and not _failed(c) for c in inits)
    if (pending_init and not ever_started) or any(c.process is None and c.last_exit is None for c in apps):
        return PENDING
    if any(c.process is not None for c in apps) or not all(c.finished for c in apps):
        return RUNNING  # running, or restarting after an exit
    if restart_policy == "Always":
        return RUNNING
    if all(c.last_exit["exitCode"] == 0 for c in apps):
        return SUCCEEDED
    return RUNNING if restart_policy == "OnFailure" else FAILED


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict:
    found = {"type": kind, "status": "True" if ok else "False"}
    return found | ({"reason": reason} if reason else {}) | ({"message": message} if message else {})


def initialized(containers: list[Container], pod_phase: str) -> dict:
    """GeneratePodInitializedCondition: every init container succeeded, every sidecar started."""
    incomplete = [
        c for c in containers if (c.kind == INIT and not c.succeeded) or (c.kind == SIDECAR and not c.started)
    ]
    if pod_phase == SUCCEEDED:
        return _condition("Initialized", True, "PodCompleted")
    if not incomplete or any(c.kind == APP and (c.process or c.last_exit) for c in containers):
        return _condition("Initialized", True)
    message = f"containers with incomplete status: {_names(incomplete)}"
    return _condition("Initialized", False, "ContainersNotInitialized", message)


def containers_ready(containers: list[Container], pod_phase: str) -> dict:
    """GenerateContainersReadyCondition: every app container and sidecar is ready."""
    if pod_phase == SUCCEEDED:
        return _condition("ContainersReady", False, "PodCompleted")
    if pod_phase == FAILED:
        return _condition("ContainersReady", False, "PodFailed")
    unready = [c for c in containers if c.kind in (APP, SIDECAR) and not c.ready]
    if unready:
        message = f"containers with unready status: {_names(unready)}"
        return _condition("ContainersReady", False, "ContainersNotReady", message)
    return _condition("ContainersReady", True)


def ready(containers_ready_condition: dict, pod: client.V1Pod) -> dict:
    """GeneratePodReadyCondition: ContainersReady, then every readiness gate's condition True."""
    if containers_ready_condition["status"] != "True":
        return containers_ready_condition | {"type": "Ready"}
    present = {c.type: c.status for c in pod.status.conditions or []} if pod.status else {}
    messages = []
    for gate in pod.spec.readiness_gates or []:
        kind = gate.condition_type
        if kind not in present:
            messages.append(f'corresponding condition of pod readiness gate "{kind}" does not exist.')
        elif present[kind] != "True":
            messages.append(f'the status of pod readiness gate "{kind}" is not "True", but {present[kind]}')
    if messages:
        return _condition("Ready", False, "ReadinessGatesNotReady", ", ".join(messages))
    return _condition("Ready", True)
