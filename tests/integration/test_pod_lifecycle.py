"""Pod lifecycle on the node agent, seen through the real API server and kubectl: init containers in
order sharing the pod's volumes, a native sidecar, failing init containers (Init:Error,
Init:CrashLoopBackOff and the back-off), startup probes holding readiness back and restarting a
container that never starts; a temporary folder (TMPDIR) of each container's own that goes with its pod."""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness.localfleet.nodeagent import tmpdirs
from tests.conftest import wait_for

CONTEXT = "us-east"
SCRATCH = {"name": "scratch", "mountPath": "/work"}
WAIT_FOR_GO = "while [ ! -f /work/go ]; do sleep 0.1; done"


@pytest.fixture
def namespace(api) -> Iterator[str]:
    """A namespace of the test's own, deleted with its pods at the end."""
    core, name = client.CoreV1Api(api(CONTEXT)), f"lifecycle-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api(CONTEXT))


def _pod(name: str, containers: list[dict], init: list[dict] | None = None, policy: str = "Always") -> dict:
    """A bare pod whose containers share the emptyDir `scratch` at /work."""
    spec = {
        "restartPolicy": policy,
        "terminationGracePeriodSeconds": 1,
        "containers": containers,
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _shell(name: str, script: str, **extra: object) -> dict:
    return {
        "name": name,
        "image": "busybox",
        "command": ["sh", "-c", script],
        "volumeMounts": [SCRATCH],
        **extra,
    }


def _status_column(kubectl: Callable, namespace: str, name: str) -> str:
    """The STATUS column of `kubectl get pod` (kubectl computes it from the status the node wrote)."""
    done = kubectl(CONTEXT, "-n", namespace, "get", "pod", name, "--no-headers", check=False)
    columns = done.stdout.split()
    return columns[2] if len(columns) > 2 else ""


def _condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def _shows(kubectl: Callable, namespace: str, name: str, wanted: str) -> Callable[[], bool]:
    return lambda: _status_column(kubectl, namespace, name) == wanted


def test_init_containers_run_in_order_and_share_the_pods_volume(
    core: client.CoreV1Api, kubectl: Callable, namespace: str
) -> None:
    first = _shell("first", f"{WAIT_FOR_GO}; echo first >> /work/order")
    second = _shell("second", "echo second >> /work/order")
    main = _shell("main", "cat /work/order; exec sleep 3600")
    core.create_namespaced_pod(namespace, _pod("ordered", [main], [first, second]))

    def first_running() -> client.V1Pod | None:
        # the pod waits for its namespace's kube-root-ca.crt, which the controller manager publishes
        pod = core.read_namespaced_pod("ordered", namespace)
        statuses = pod.status.init_container_statuses or []
        return pod if statuses and statuses[0].state.running else None

    pod = wait_for(first_running, 60, "the first init container to run")
    assert _status_column(kubectl, namespace, "ordered") == "Init:0/2"
    initialized = _condition(pod, "Initialized")
    assert pod.status.phase == "Pending"
    assert (initialized.status, initialized.reason) == ("False", "ContainersNotInitialized")
    assert initialized.message == "containers with incomplete status: [first second]"
    assert pod.status.init_container_statuses[0].state.running
    assert pod.status.init_container_statuses[1].state.waiting.reason == "PodInitializing"
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"

    kubectl(CONTEXT, "-n", namespace, "exec", "ordered", "-c", "first", "--", "touch", "/work/go")

    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("ordered", namespace)
        return pod if _condition(pod, "Ready") and _condition(pod, "Ready").status == "True" else None

    pod = wait_for(ready, 60, "the pod to be Ready once its init containers are done")
    assert _condition(pod, "Initialized").status == "True"
    for status in pod.status.init_container_statuses:
        assert (status.state.terminated.exit_code, status.state.terminated.reason) == (0, "Completed")
        assert status.ready and not status.started
    first_done, second_done = (s.state.terminated for s in pod.status.init_container_statuses)
    assert first_done.finished_at <= second_done.started_at, "the second init container ran after the first"
    logs = wait_for(
        lambda: kubectl(CONTEXT, "-n", namespace, "logs", "ordered", "-c", "main", check=False).stdout,
        30,
        "the main container's log",
    )
    assert logs.split() == ["first", "second"], "the main container reads what the init containers wrote"
    assert _status_column(kubectl, namespace, "ordered") == "Running"


def test_a_native_sidecar_starts_before_the_next_init_container_and_runs_beside_the_app(
    core: client.CoreV1Api, kubectl: Callable, namespace: str
) -> None:
    helper = _shell(
        "helper",
        "sleep 1; touch /work/helper-up; exec sleep 3600",
        restartPolicy="Always",
        startupProbe={"exec": {"command": ["cat", "/work/helper-up"]}, "periodSeconds": 1},
    )
    setup = _shell("setup", "test -f /work/helper-up")  # fails unless the sidecar has started
    core.create_namespaced_pod(
        namespace, _pod("sidecar", [_shell("main", "exec sleep 3600")], [helper, setup])
    )

    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("sidecar", namespace)
        return pod if _condition(pod, "Ready") and _condition(pod, "Ready").status == "True" else None

    pod = wait_for(ready, 60, "the pod with a sidecar to be Ready")
    helper_status, setup_status = pod.status.init_container_statuses
    assert helper_status.state.running and helper_status.started and helper_status.ready
    assert setup_status.state.terminated.exit_code == 0 and setup_status.restart_count == 0
    assert helper_status.state.running.started_at <= setup_status.state.terminated.started_at
    columns = kubectl(CONTEXT, "-n", namespace, "get", "pod", "sidecar", "--no-headers").stdout.split()
    assert columns[1:3] == ["2/2", "Running"], "kubectl counts the sidecar among the ready containers"


def test_a_failing_init_container_fails_a_pod_that_never_restarts(
    core: client.CoreV1Api, kubectl: Callable, namespace: str
) -> None:
    pod = _pod("doomed", [_shell("main", "exec sleep 3600")], [_shell("setup", "exit 3")], policy="Never")
    core.create_namespaced_pod(namespace, pod)
    wait_for(_shows(kubectl, namespace, "doomed", "Init:Error"), 60, "kubectl to show Init:Error")
    pod = wait_for(
        lambda: (p := core.read_namespaced_pod("doomed", namespace)).status.phase == "Failed" and p,
        30,
        "phase Failed",
    )
    setup = pod.status.init_container_statuses[0]
    assert (setup.state.terminated.exit_code, setup.state.terminated.reason) == (3, "Error")
    assert setup.restart_count == 0 and not setup.ready
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert _condition(pod, "Initialized").status == "False"


def test_a_failing_init_container_restarts_with_the_kubelets_back_off(
    core: client.CoreV1Api, kubectl: Callable, namespace: str
) -> None:
    core.create_namespaced_pod(
        namespace, _pod("flaky", [_shell("main", "exec sleep 3600")], [_shell("setup", "exit 1")])
    )
    seen: dict[int, float] = {}

    def restarts() -> int:
        statuses = core.read_namespaced_pod("flaky", namespace).status.init_container_statuses or []
        count = statuses[0].restart_count if statuses else -1
        seen.setdefault(count, time.monotonic())
        return count

    wait_for(lambda: restarts() >= 1, 60, "the first restart")
    wait_for(_shows(kubectl, namespace, "flaky", "Init:CrashLoopBackOff"), 30, "Init:CrashLoopBackOff")
    setup = core.read_namespaced_pod("flaky", namespace).status.init_container_statuses[0]
    assert setup.state.waiting.reason == "CrashLoopBackOff"
    assert setup.state.waiting.message.startswith("back-off 10s restarting failed container=setup pod=flaky_")
    assert setup.last_state.terminated.exit_code == 1
    wait_for(lambda: restarts() >= 2, 40, "the restart after the back-off")
    waited = seen[2] - seen[1]
    print(f"restart 1 -> restart 2: {waited:.1f} s (the kubelet waits 10 s)")
    assert 9.0 <= waited <= 20.0
    pod = core.read_namespaced_pod("flaky", namespace)
    assert pod.status.phase == "Pending" and pod.status.container_statuses[0].restart_count == 0


def test_a_startup_probe_holds_readiness_until_it_passes(
    core: client.CoreV1Api, kubectl: Callable, namespace: str
) -> None:
    exec_probe = {"periodSeconds": 1, "failureThreshold": 120}
    main = _shell(
        "main",
        "exec sleep 3600",
        startupProbe={"exec": {"command": ["cat", "/work/started"]}, **exec_probe},
        readinessProbe={"exec": {"command": ["touch", "/work/readiness-probed"]}, "periodSeconds": 1},
        livenessProbe={"exec": {"command": ["touch", "/work/liveness-probed"]}, "periodSeconds": 1},
    )
    core.create_namespaced_pod(namespace, _pod("slow", [main]))

    def running() -> client.V1ContainerStatus | None:
        statuses = core.read_namespaced_pod("slow", namespace).status.container_statuses or []
        return statuses[0] if statuses and statuses[0].state.running else None

    status = wait_for(running, 60, "the container to run")
    assert status.started is False and status.ready is False
    listing = kubectl(CONTEXT, "-n", namespace, "exec", "slow", "--", "ls", "/work").stdout.split()
    assert listing == [], "neither liveness nor readiness probes run before the startup probe passes"
    assert _condition(core.read_namespaced_pod("slow", namespace), "Ready").status == "False"

    kubectl(CONTEXT, "-n", namespace, "exec", "slow", "--", "touch", "/work/started")
    status = wait_for(lambda: (s := running()) and s.ready and s, 30, "the container to be started and ready")
    assert status.started is True and status.restart_count == 0
    listing = kubectl(CONTEXT, "-n", namespace, "exec", "slow", "--", "ls", "/work").stdout.split()
    assert {"liveness-probed", "readiness-probed"} <= set(listing)
    assert _condition(core.read_namespaced_pod("slow", namespace), "Ready").status == "True"


def test_a_container_whose_startup_probe_never_passes_is_restarted(
    core: client.CoreV1Api, namespace: str
) -> None:
    main = _shell(
        "main",
        "exec sleep 3600",
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2},
    )
    core.create_namespaced_pod(namespace, _pod("stuck", [main]))

    def restarted() -> client.V1ContainerStatus | None:
        statuses = core.read_namespaced_pod("stuck", namespace).status.container_statuses or []
        return statuses[0] if statuses and statuses[0].restart_count >= 1 else None

    status = wait_for(restarted, 60, "the container to be restarted after its startup probe failed")
    assert status.last_state.terminated is not None and status.started is False and not status.ready
    assert status.last_state.terminated.exit_code in (137, 143)


def test_each_container_has_a_temporary_folder_of_its_own_that_goes_with_the_pod(
    core: client.CoreV1Api, namespace: str
) -> None:
    script = 'echo "$TMPDIR"; touch "$TMPDIR/written"; exec sleep 3600'
    core.create_namespaced_pod(namespace, _pod("scratch", [_shell("one", script), _shell("two", script)]))

    def tmpdir_of(container: str) -> Path | None:
        try:
            answer = core.read_namespaced_pod_log(
                "scratch", namespace, container=container, _preload_content=False
            )
            said = answer.data.decode().strip()
        except client.ApiException:  # not started yet
            return None
        return Path(said) if said and (Path(said) / "written").exists() else None

    folders = [wait_for(lambda c=c: tmpdir_of(c), 60, f"{c} to write to its TMPDIR") for c in ("one", "two")]
    assert folders[0] != folders[1], "each container has a TMPDIR of its own"
    assert all(f.is_relative_to(tmpdirs.ROOT) for f in folders), folders  # short: sockets live there
    core.delete_namespaced_pod("scratch", namespace, grace_period_seconds=1)
    wait_for(lambda: not any(f.exists() for f in folders), 60, "the pod's TMPDIRs to go with it")
