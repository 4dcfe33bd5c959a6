"""Workloads as a real cluster runs them, seen through unmodified clients (the kubernetes client,
kubectl, chaosk8s): scaling, a rolling update, logs and exec into the sample app, ConfigMap and Secret
files the app reads, cordon and drain through the eviction API, a PodDisruptionBudget holding a drain.
Node loss (freeze) is in test_node_loss.py."""

import hashlib
import json
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from chaosk8s.node.actions import cordon_node, uncordon_node
from chaosk8s.pod.actions import terminate_pods
from kubernetes import client
from kubernetes.config import kube_config

from tests.conftest import wait_for

APP = "orders"
IMAGE = "fleetdrill.io/orders:1"
CONFIG_DIR = "/srv/orders"
DATA_MOUNT = {"name": "data", "mountPath": "/var/lib/orders"}
FLEET_APP_NAMESPACE = "orders"  # where `fleetdrill fleet up` runs the sample app in every cluster
DRILL_CONTEXT = "eu-west"  # cordon, drain and eviction happen here; the rest in us-east
DRAINED = "Cannot evict pod as it would violate the pod's disruption budget."


def app_container(cluster: str) -> dict:
    """The sample app as a standalone instance (no peers) named `cluster`, its data on an emptyDir."""
    return {
        "name": APP,
        "image": IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [
            {"name": "ORDERS_CLUSTER", "value": cluster},
            {"name": "ORDERS_ROLE", "value": "primary"},
            {"name": "ORDERS_DATA_DIR", "value": "/var/lib/orders"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [DATA_MOUNT],
    }


IDLE = {"name": APP, "image": "registry.k8s.io/pause:3.10", "volumeMounts": [DATA_MOUNT]}  # Running, Ready


def deployment(replicas: int, container: dict, **pod_spec: object) -> dict:
    """A Deployment of one container with an emptyDir, one pod per node while nodes allow (a hard spread
    over the nodes that do not taint it away)."""
    spread = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "nodeTaintsPolicy": "Honor",
        "labelSelector": {"matchLabels": {"app": APP}},
    }
    spec = {
        "terminationGracePeriodSeconds": 2,
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "topologySpreadConstraints": [spread],
        **pod_spec,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {"metadata": {"labels": {"app": APP}}, "spec": spec},
        },
    }


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def ready_pods(core: client.CoreV1Api, namespace: str, count: int) -> Callable[[], list[client.V1Pod]]:
    """A wait_for condition: exactly `count` app pods, all Ready and none terminating."""

    def check() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        return live if len(pods) == count and all(is_ready(p) for p in live) else []

    return check


def app_status(pod_ip: str) -> dict | None:
    """The app's GET /status on the pod's address, with the X-Served-By header; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{pod_ip}:8080/status", timeout=2) as response:
            return {**json.loads(response.read()), "served_by": response.headers["X-Served-By"]}
    except OSError:
        return None


def fleet_app_nodes(core: client.CoreV1Api) -> set[str]:
    """Nodes running the fleet's own sample app: drills here keep away from them (its claim pins it)."""
    return {p.spec.node_name for p in core.list_namespaced_pod(FLEET_APP_NAMESPACE).items if p.spec.node_name}


@contextmanager
def namespace_in(core: client.CoreV1Api, prefix: str) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards (its pods go with it)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def us_east(api) -> client.CoreV1Api:
    return client.CoreV1Api(api("us-east"))


@pytest.fixture
def drill_core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api(DRILL_CONTEXT))


@pytest.fixture
def namespace(us_east: client.CoreV1Api) -> Iterator[str]:
    with namespace_in(us_east, "workloads") as name:
        yield name


@pytest.fixture
def drill_namespace(drill_core: client.CoreV1Api) -> Iterator[str]:
    with namespace_in(drill_core, "drain") as name:
        yield name


def _gone(core: client.CoreV1Api, namespace: str, names: set[str]) -> bool:
    return not names & {p.metadata.name for p in core.list_namespaced_pod(namespace).items}


def test_scale_up_and_down_starts_and_stops_the_app(api, us_east, namespace: str, kubectl) -> None:
    apps = client.AppsV1Api(api("us-east"))
    apps.create_namespaced_deployment(namespace, deployment(1, app_container(namespace)))
    wait_for(ready_pods(us_east, namespace, 1), 60, "one Ready pod")
    kubectl("us-east", "-n", namespace, "scale", f"deployment/{APP}", "--replicas=3")
    pods = wait_for(ready_pods(us_east, namespace, 3), 60, "three Ready pods after scaling up")
    for pod in pods:
        status = wait_for(lambda pod=pod: app_status(pod.status.pod_ip), 10, f"{pod.metadata.name} to answer")
        assert status["served_by"] == f"{namespace}/{pod.metadata.name}", status
    kubectl("us-east", "-n", namespace, "scale", f"deployment/{APP}", "--replicas=1")
    kept = wait_for(ready_pods(us_east, namespace, 1), 60, "one pod left after scaling down")[0]
    removed = [p for p in pods if p.metadata.uid != kept.metadata.uid]
    assert len(removed) == 2
    for pod in removed:
        assert app_status(pod.status.pod_ip) is None, f"{pod.metadata.name} still answers after scale-down"
    assert app_status(kept.status.pod_ip)["pod"] == kept.metadata.name


def test_rolling_update_completes_and_new_pods_serve(api, us_east, namespace: str, kubectl) -> None:
    apps = client.AppsV1Api(api("us-east"))
    apps.create_namespaced_deployment(namespace, deployment(2, app_container("v1")))
    old = {p.metadata.uid for p in wait_for(ready_pods(us_east, namespace, 2), 60, "two v1 pods")}
    kubectl("us-east", "-n", namespace, "set", "env", f"deployment/{APP}", "ORDERS_CLUSTER=v2")
    # One new pod at a time (maxSurge 1, maxUnavailable 0); within the kubectl fixture's 60 s.
    rollout = kubectl("us-east", "-n", namespace, "rollout", "status", f"deployment/{APP}", "--timeout=55s")
    assert f'deployment "{APP}" successfully rolled out' in rollout.stdout, rollout.stdout
    new = wait_for(ready_pods(us_east, namespace, 2), 30, "only the two new pods left")
    assert not old & {p.metadata.uid for p in new}, "an old pod survived the rollout"
    for pod in new:
        status = wait_for(lambda pod=pod: app_status(pod.status.pod_ip), 10, f"{pod.metadata.name} to answer")
        assert status["served_by"] == f"v2/{pod.metadata.name}", status
    status = apps.read_namespaced_deployment(APP, namespace).status
    assert (status.updated_replicas, status.available_replicas) == (2, 2)


def test_logs_and_exec_reach_the_sample_app(api, us_east, namespace: str, kubectl) -> None:
    apps = client.AppsV1Api(api("us-east"))
    apps.create_namespaced_deployment(namespace, deployment(1, app_container(namespace)))
    pod = wait_for(ready_pods(us_east, namespace, 1), 60, "the app's pod")[0].metadata.name
    logs = kubectl("us-east", "-n", namespace, "logs", pod).stdout
    first_line = f"serving {namespace}/{pod} at ('0.0.0.0', 8080): its log in /var/lib/orders, primary"
    assert first_line in logs, logs
    ask = (
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/status').read().decode())"
    )
    done = kubectl("us-east", "-n", namespace, "exec", pod, "--", "python3", "-c", ask)
    assert json.loads(done.stdout)["pod"] == pod, "exec runs beside the app, in the pod's network namespace"


def test_configmap_and_secret_files_are_read_by_the_app(api, us_east, namespace: str) -> None:
    settings = {"settings.yaml": "replication: {lag: 0.5}\n", "greeting": "hello"}
    token = "s3cr3t-token"
    us_east.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": settings})
    us_east.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": token}}
    )
    configured = deployment(
        1,
        app_container(namespace),
        volumes=[
            {"name": "data", "emptyDir": {}},
            {"name": "settings", "configMap": {"name": "settings"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
        ],
    )
    container = configured["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "ORDERS_CONFIG_DIR", "value": CONFIG_DIR})
    container["volumeMounts"] += [
        {"name": "settings", "mountPath": f"{CONFIG_DIR}/settings", "readOnly": True},
        {"name": "creds", "mountPath": f"{CONFIG_DIR}/creds", "readOnly": True},
    ]
    client.AppsV1Api(api("us-east")).create_namespaced_deployment(namespace, configured)
    pod = wait_for(ready_pods(us_east, namespace, 1), 60, "the app's pod")[0]
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/config", timeout=2) as response:
        seen = json.loads(response.read())

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    expected = {f"settings/{key}": digest(value) for key, value in settings.items()}
    assert seen == {"dir": CONFIG_DIR, "files": {**expected, "creds/token": digest(token)}}


def _uncordon(core: client.CoreV1Api, node: str) -> None:
    core.patch_node(node, {"spec": {"unschedulable": None}})


def pod_off_the_fleet_app(core: client.CoreV1Api, pods: list[client.V1Pod]) -> client.V1Pod:
    """One of `pods` on a node that does not run the fleet's own app."""
    busy = fleet_app_nodes(core)
    return next(p for p in sorted(pods, key=lambda p: p.spec.node_name) if p.spec.node_name not in busy)


def test_cordon_and_drain_move_pods_through_the_eviction_api(
    api, drill_core, drill_namespace, kubectl
) -> None:
    namespace, core = drill_namespace, drill_core
    client.AppsV1Api(api(DRILL_CONTEXT)).create_namespaced_deployment(namespace, deployment(3, IDLE))
    pods = wait_for(ready_pods(core, namespace, 3), 60, "three Ready pods")
    drained = pod_off_the_fleet_app(core, pods)
    node = drained.spec.node_name
    second: str | None = None
    try:
        done = kubectl(
            DRILL_CONTEXT, "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"
        )
        assert f"evicting pod {namespace}/{drained.metadata.name}" in done.stdout + done.stderr, done
        assert f"node/{node} drained" in done.stdout, done.stdout
        assert core.read_node(node).spec.unschedulable
        moved = wait_for(ready_pods(core, namespace, 3), 60, "three Ready pods off the drained node")
        assert node not in {p.spec.node_name for p in moved}
        replacement = next(p for p in moved if p.metadata.uid not in {q.metadata.uid for q in pods})
        second = replacement.spec.node_name  # cordoned by the client, then the Eviction subresource
        core.patch_node(second, {"spec": {"unschedulable": True}})
        eviction = {"metadata": {"name": replacement.metadata.name, "namespace": namespace}}
        core.create_namespaced_pod_eviction(replacement.metadata.name, namespace, eviction)
        wait_for(lambda: _gone(core, namespace, {replacement.metadata.name}), 30, "the evicted pod to go")
        last = wait_for(ready_pods(core, namespace, 3), 60, "its replacement, Ready")
        third = next(p for p in last if p.metadata.uid not in {q.metadata.uid for q in moved})
        assert third.spec.node_name not in {node, second}, "the replacement landed on a cordoned node"
    finally:
        kubectl(DRILL_CONTEXT, "uncordon", node)
        if second:
            _uncordon(core, second)
    assert not core.read_node(node).spec.unschedulable


def _collect(stream: IO[str], lines: list[str]) -> threading.Thread:
    """Read a process's output lines into `lines` in the background."""
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    return reader


def test_a_disruption_budget_holds_a_drain_until_it_allows(
    api, drill_core, drill_namespace, fleet_dir: Path, kubectl_bin: Path
) -> None:
    namespace, core = drill_namespace, drill_core
    apps = client.AppsV1Api(api(DRILL_CONTEXT))
    policy = client.PolicyV1Api(api(DRILL_CONTEXT))
    apps.create_namespaced_deployment(namespace, deployment(2, IDLE))
    budget = {
        "metadata": {"name": APP},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": APP}}},
    }
    policy.create_namespaced_pod_disruption_budget(namespace, budget)
    pod = pod_off_the_fleet_app(core, wait_for(ready_pods(core, namespace, 2), 60, "two Ready pods"))
    wait_for(
        lambda: (
            (s := policy.read_namespaced_pod_disruption_budget(APP, namespace).status)
            and s.current_healthy == 2
        ),
        30,
        "the budget to count two healthy pods",
    )
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod_eviction(
            pod.metadata.name, namespace, {"metadata": {"name": pod.metadata.name, "namespace": namespace}}
        )
    assert refused.value.status == 429 and DRAINED in json.loads(refused.value.body)["message"]
    node = pod.spec.node_name
    argv = [str(kubectl_bin), "--kubeconfig", str(fleet_dir / "kubeconfig"), "--context", DRILL_CONTEXT]
    argv += ["drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s"]
    drain = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        reader = _collect(drain.stdout, output)
        wait_for(lambda: any(DRAINED in line for line in output), 30, "kubectl drain to report the budget")
        assert core.read_namespaced_pod(pod.metadata.name, namespace).metadata.deletion_timestamp is None
        apps.patch_namespaced_deployment_scale(APP, namespace, {"spec": {"replicas": 3}})
        assert drain.wait(timeout=60) == 0, "".join(output)
        reader.join(timeout=10)
        assert f"pod/{pod.metadata.name} evicted" in "".join(output), "".join(output)
        wait_for(lambda: _gone(core, namespace, {pod.metadata.name}), 30, "the evicted pod to go")
        wait_for(ready_pods(core, namespace, 3), 60, "three Ready pods off the drained node")
    finally:
        drain.kill()
        drain.wait(timeout=10)
        _uncordon(core, node)


@pytest.fixture
def chaosk8s_secrets(fleet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """chaosk8s loads the fleet's kubeconfig into the client's process-wide default; restored afterwards."""
    monkeypatch.setenv("KUBECONFIG", str(fleet_dir / "kubeconfig"))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(fleet_dir / "kubeconfig"))
    default = client.Configuration.get_default_copy()
    yield {"KUBERNETES_CONTEXT": DRILL_CONTEXT}
    client.Configuration.set_default(default)


def test_chaosk8s_terminates_pods_and_cordons_nodes(
    api, drill_core, drill_namespace, chaosk8s_secrets
) -> None:
    namespace, core = drill_namespace, drill_core
    client.AppsV1Api(api(DRILL_CONTEXT)).create_namespaced_deployment(namespace, deployment(2, IDLE))
    before = wait_for(ready_pods(core, namespace, 2), 60, "two Ready pods")
    killed = terminate_pods(label_selector=f"app={APP}", ns=namespace, secrets=chaosk8s_secrets)
    assert len(killed) == 1 and killed[0] in {p.metadata.name for p in before}
    wait_for(lambda: _gone(core, namespace, set(killed)), 30, "the terminated pod to go")
    after = wait_for(ready_pods(core, namespace, 2), 60, "the ReplicaSet's replacement")
    assert len({p.metadata.uid for p in after} - {p.metadata.uid for p in before}) == 1
    node = before[0].spec.node_name
    try:
        assert cordon_node(name=node, secrets=chaosk8s_secrets) == [node]
        assert core.read_node(node).spec.unschedulable is True
    finally:
        uncordon_node(name=node, secrets=chaosk8s_secrets)
    assert not core.read_node(node).spec.unschedulable
