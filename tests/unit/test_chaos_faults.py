"""harness.faults.chaosmesh: Chaos Mesh faults as data, their objects, and their waits with deadlines."""

import json

import pytest
from kubernetes import client

from harness.faults.base import KubeContext
from harness.faults.chaosmesh import ChaosMeshError, NetworkChaosFault, PodChaosFault, StressChaosFault
from harness.faults.ledger import fault_from_record

SPEC = {
    "action": "partition",
    "mode": "all",
    "direction": "both",
    "selector": {"labelSelectors": {"app": "orders"}, "namespaces": ["orders"]},
    "externalTargets": ["198.18.1.0/26", "100.64.16.0/20"],
}


class FakeApi:
    """The few CustomObjectsApi calls the faults make, over a dict of objects."""

    def __init__(self, status: dict | None = None, sticky: bool = False) -> None:
        self.objects: dict[str, dict] = {}
        self.status, self.sticky = status, sticky

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.objects[body["metadata"]["name"]] = {**body, "status": self.status or {}}

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if name not in self.objects:
            raise client.ApiException(status=404)
        return self.objects[name]

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        if name not in self.objects:
            raise client.ApiException(status=404)
        if not self.sticky:
            del self.objects[name]


def fault_with(api: FakeApi, monkeypatch: pytest.MonkeyPatch, **extra: object) -> NetworkChaosFault:
    monkeypatch.setattr(client, "CustomObjectsApi", lambda _api: api)
    return NetworkChaosFault(targets=("us-east",), namespace="orders", spec=SPEC, deadline_s=0.2, **extra)


def test_a_fault_survives_the_ledger_round_trip_and_keeps_its_name() -> None:
    fault = NetworkChaosFault(targets=("us-east",), namespace="orders", spec=SPEC)
    rebuilt = fault_from_record(json.loads(json.dumps(fault.to_record())))
    assert (
        rebuilt == fault
        and rebuilt.name == fault.name
        and fault.name.startswith("fleetdrill-chaos-mesh-network-")
    )
    body = fault.body()
    assert body["kind"] == "NetworkChaos" and body["apiVersion"] == "chaos-mesh.org/v1alpha1"
    assert body["spec"]["externalTargets"] == SPEC["externalTargets"]  # lists again for the API
    assert {StressChaosFault.kind, PodChaosFault.kind} == {"chaos-mesh-stress", "chaos-mesh-pod"}


def test_inject_waits_for_selected_and_all_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    injected = {
        "conditions": [{"type": "Selected", "status": "True"}, {"type": "AllInjected", "status": "True"}]
    }
    api = FakeApi(injected)
    fault = fault_with(api, monkeypatch)
    fault.inject(KubeContext({"us-east": object()}))
    fault.inject(KubeContext({"us-east": object()}))  # idempotent: the object exists already
    fault.revert(KubeContext({"us-east": object()}))
    fault.revert(KubeContext({"us-east": object()}))
    assert api.objects == {}


def test_a_fault_chaos_mesh_cannot_inject_fails_with_its_records_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = {
        "id": "orders/a",
        "phase": "Not Injected",
        "events": [
            {
                "type": "Failed",
                "operation": "Apply",
                "message": "tc netem is needed for delay",
                "timestamp": "t",
            }
        ],
    }
    status = {
        "conditions": [{"type": "Selected", "status": "True"}, {"type": "AllInjected", "status": "False"}],
        "experiment": {"containerRecords": [record]},
    }
    fault = fault_with(FakeApi(status), monkeypatch)
    with pytest.raises(ChaosMeshError, match=r"not injected after 0\.2 s: orders/a: Not Injected, tc netem"):
        fault.inject(KubeContext({"us-east": object()}))


def test_revert_fails_when_the_object_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(
        {"conditions": [{"type": "Selected", "status": "False", "reason": "no pod is selected"}]}, True
    )
    fault = fault_with(api, monkeypatch)
    api.create_namespaced_custom_object("", "", "orders", "", fault.body())
    with pytest.raises(ChaosMeshError, match=r"still there after 0\.2 s .*no pod is selected"):
        fault.revert(KubeContext({"us-east": object()}))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match="expected a namespace"):
        NetworkChaosFault(targets=("us-east",), namespace="", spec=SPEC)
