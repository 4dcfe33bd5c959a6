"""The node agent runs pods as processes: real addresses, probes, volumes, status and termination."""

import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import wait_for


def _web_deployment(namespace: str, replicas: int) -> dict:
    """Pods serving their projected ConfigMap and Secret files over HTTP, with an HTTP readiness probe."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "files", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "files"}},
            "template": {
                "metadata": {"labels": {"app": "files"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "web",
                            "image": "python:3.11",
                            "command": ["python3", "-m", "http.server", "8080", "--directory", "/srv/files"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/greeting", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [{"name": "files", "mountPath": "/srv/files", "readOnly": True}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "files",
                            "projected": {
                                "sources": [
                                    {"configMap": {"name": "greeting"}},
                                    {"secret": {"name": "password"}},
                                ]
                            },
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture
def namespace(api) -> Iterator[str]:
    """A namespace of the test's own holding the ConfigMap and Secret the pods serve."""
    core, name = client.CoreV1Api(api("us-east")), f"agent-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "greeting"}, "data": {"greeting": "hello"}})
    core.create_namespaced_secret(name, {"metadata": {"name": "password"}, "stringData": {"password": "s3"}})
    yield name
    core.delete_namespace(name)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


def _serves(url: str) -> bool:
    try:
        return _get(url) == "hello"
    except OSError:
        return False


def test_pods_run_with_their_own_addresses_volumes_and_readiness(api, namespace: str) -> None:
    apps, core = client.AppsV1Api(api("us-east")), client.CoreV1Api(api("us-east"))
    apps.create_namespaced_deployment(namespace, _web_deployment(namespace, 3))

    def ready_pods() -> list[client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=files").items
        ready = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready if len(ready) == 3 else []

    pods = wait_for(ready_pods, 60, "three Ready pods")
    assert len({p.status.pod_ip for p in pods}) == 3, "each pod has an address of its own"
    assert len({p.spec.node_name for p in pods}) > 1, "the scheduler spread them over nodes"
    for pod in pods:
        assert _get(f"http://{pod.status.pod_ip}:8080/greeting") == "hello"
        assert _get(f"http://{pod.status.pod_ip}:8080/password") == "s3"
        status = pod.status.container_statuses[0]
        assert status.ready and status.state.running and status.container_id.startswith("fleetdrill://")
    available = wait_for(
        lambda: apps.read_namespaced_deployment("files", namespace).status.available_replicas == 3,
        30,
        "the Deployment to count three available replicas",
    )
    assert available
    discovery = client.DiscoveryV1Api(api("us-east"))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "files"},
            "spec": {"selector": {"app": "files"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )

    def ready_endpoints() -> set[str]:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=files"
        )
        found = {
            a for s in slices.items for e in s.endpoints or [] if e.conditions.ready for a in e.addresses
        }
        return found if len(found) == 3 else set()

    assert wait_for(ready_endpoints, 30, "three ready endpoints") == {p.status.pod_ip for p in pods}


def test_graceful_deletion_removes_the_pod_and_its_process(api, namespace: str) -> None:
    apps, core = client.AppsV1Api(api("us-east")), client.CoreV1Api(api("us-east"))
    apps.create_namespaced_deployment(namespace, _web_deployment(namespace, 1))
    pod = wait_for(
        lambda: [p for p in core.list_namespaced_pod(namespace).items if p.status.pod_ip], 60, "a running pod"
    )[0]
    url = f"http://{pod.status.pod_ip}:8080/greeting"
    wait_for(lambda: _serves(url), 30, "the pod to serve")
    core.delete_namespaced_pod(pod.metadata.name, namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod(pod.metadata.name, namespace)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, 30, "the deleted pod's object to be removed by its node")
    with pytest.raises(OSError):
        _get(url)
    replacement = wait_for(
        lambda: [
            p
            for p in core.list_namespaced_pod(namespace).items
            if p.metadata.uid != pod.metadata.uid and p.status.phase == "Running"
        ],
        60,
        "the ReplicaSet's replacement pod",
    )
    assert json.dumps(replacement[0].status.host_ip)
