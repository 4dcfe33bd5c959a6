"""PersistentVolumeClaims: the local-path provisioner gives each a folder on the node its first pod ran on."""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness.localfleet import provisioner
from harness.localfleet.state import FleetState
from tests.conftest import wait_for

CONTEXT, CLAIM, MOUNT = "us-east", "notes", "/var/lib/claim-test"


@pytest.fixture
def namespace(api) -> Iterator[str]:
    core, name = client.CoreV1Api(api(CONTEXT)), f"claims-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _pod(name: str, script: str) -> dict:
    """A pod that runs `script` once with the claim mounted at MOUNT."""
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "notes", "mountPath": MOUNT}],
                }
            ],
            "volumes": [{"name": "notes", "persistentVolumeClaim": {"claimName": CLAIM}}],
        },
    }


def _ended(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    """Wait for the pod's container to end, check it exited 0, return the pod."""

    def ended() -> client.V1Pod | None:
        found = core.read_namespaced_pod(name, namespace)
        states = [s.state for s in found.status.container_statuses or []]
        return found if states and states[0].terminated else None

    found = wait_for(ended, 60, f"pod {name} to run to its end")
    status = found.status.container_statuses[0].state.terminated
    assert status.exit_code == 0, f"pod {name} on {found.spec.node_name} failed: {status}"
    return found


def _delete_pod(core: client.CoreV1Api, namespace: str, name: str) -> None:
    core.delete_namespaced_pod(name, namespace)
    wait_for(lambda: _absent(lambda: core.read_namespaced_pod(name, namespace)), 30, f"pod {name} to go")


def _absent(read: Callable[[], object]) -> bool:
    try:
        read()
    except client.ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _bound(claim: client.V1PersistentVolumeClaim) -> client.V1PersistentVolumeClaim | None:
    return claim if claim.status.phase == "Bound" else None


def test_a_claim_gets_a_folder_on_its_pods_node_that_outlives_the_pod(api, namespace, fleet_dir: Path):
    core = client.CoreV1Api(api(CONTEXT))
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": CLAIM},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}},
        },
    )
    claim = core.read_namespaced_persistent_volume_claim(CLAIM, namespace)
    assert claim.spec.storage_class_name == provisioner.STORAGE_CLASS, "the default class was given"
    assert claim.status.phase == "Pending", "WaitForFirstConsumer: no volume before a pod needs one"

    core.create_namespaced_pod(namespace, _pod("writer", f"echo kept > {MOUNT}/note"))
    started = time.monotonic()
    claim = wait_for(
        lambda: _bound(core.read_namespaced_persistent_volume_claim(CLAIM, namespace)), 30, "a Bound claim"
    )
    print(f"claim Bound {time.monotonic() - started:.2f} s after its first pod was created")
    node = _ended(core, namespace, "writer").spec.node_name
    volume = core.read_persistent_volume(claim.spec.volume_name)
    terms = volume.spec.node_affinity.required.node_selector_terms
    assert [(e.key, e.values) for t in terms for e in t.match_expressions] == [
        ("kubernetes.io/hostname", [node])
    ]
    nodes = fleet_dir / "clusters" / CONTEXT / "nodes"
    folder = nodes / node / "claims" / f"{namespace}_{CLAIM}_{claim.metadata.uid}"
    assert Path(volume.spec.local.path) == folder
    assert volume.metadata.annotations[provisioner.PROVISIONED_BY] == provisioner.PROVISIONER
    assert (volume.spec.capacity["storage"], volume.spec.persistent_volume_reclaim_policy) == (
        "10Mi",
        "Delete",
    )
    assert (folder / "note").read_text() == "kept\n", "the pod wrote into the claim's folder"

    _delete_pod(core, namespace, "writer")
    reader = _pod("reader", f'test "$(cat {MOUNT}/note)" = kept && ! touch {MOUNT}/other')
    reader["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = True  # reads it, cannot write
    core.create_namespaced_pod(namespace, reader)
    reader = _ended(core, namespace, "reader")
    assert reader.spec.node_name == node, "the scheduler honoured the volume's node affinity"
    _delete_pod(core, namespace, "reader")

    core.delete_namespaced_persistent_volume_claim(CLAIM, namespace)
    started = time.monotonic()
    wait_for(
        lambda: _absent(lambda: core.read_persistent_volume(volume.metadata.name)) and not folder.exists(),
        30,
        "the released volume and its folder to be removed",
    )
    print(f"volume and folder removed {time.monotonic() - started:.2f} s after the claim was deleted")


def test_a_pod_on_an_unbound_claim_waits_with_the_reason(api, namespace) -> None:
    core = client.CoreV1Api(api(CONTEXT))
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": CLAIM},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
        },
    )
    pod = _pod("placed", "true")
    pod["spec"]["nodeName"] = core.list_node().items[0].metadata.name  # no scheduler: nobody picks a node

    def waiting() -> str:
        found = core.read_namespaced_pod("placed", namespace)
        states = [s.state for s in found.status.container_statuses or []]
        return states[0].waiting.message if states and states[0].waiting else ""

    core.create_namespaced_pod(namespace, pod)
    wait_for(waiting, 30, "the pod to report why it waits")
    # the first attempt may meet the node authorizer before it has linked the new pod to the claim (403)
    expected = f"persistentvolumeclaim {CLAIM!r} is not bound"
    wait_for(lambda: waiting() == expected, 30, f"the waiting message {expected!r}")
    assert core.read_namespaced_persistent_volume_claim(CLAIM, namespace).status.phase == "Pending"


def test_the_sample_app_keeps_its_data_on_a_bound_claim_in_every_cluster(api, fleet_dir: Path):
    for cluster in FleetState.load(fleet_dir).clusters:
        core = client.CoreV1Api(api(cluster.name))
        default = client.StorageV1Api(api(cluster.name)).read_storage_class(provisioner.STORAGE_CLASS)
        assert default.metadata.annotations[provisioner.DEFAULT_CLASS] == "true"
        assert default.volume_binding_mode == "WaitForFirstConsumer"
        claim = core.read_namespaced_persistent_volume_claim("orders-data", "orders")
        assert claim.status.phase == "Bound", f"{cluster.name}: {claim.status}"
        volume = core.read_persistent_volume(claim.spec.volume_name)
        pods = core.list_namespaced_pod("orders", label_selector="app=orders").items
        node = volume.spec.node_affinity.required.node_selector_terms[0].match_expressions[0].values[0]
        assert {p.spec.node_name for p in pods} == {node}, f"{cluster.name}: the app runs where its data is"
        assert (Path(volume.spec.local.path) / "orders.jsonl").exists(), f"{cluster.name}: the app's log"
