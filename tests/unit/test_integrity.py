"""The integrity inventory and its diff: a fake API server for objects, records as read back."""

import copy
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness import integrity

CONFIG = {
    "metadata": {
        "name": "shop-settings",
        "uid": "1",
        "resourceVersion": "10",
        "managedFields": [{"manager": "kubectl"}],
        "creationTimestamp": "2026-11-26T10:00:00Z",
        "labels": {"app": "shop", "velero.io/restore-name": "r1"},
    },
    "data": {"MODE": "primary"},
}
OBJECTS = {
    "/api/v1/namespaces/shop/configmaps": [
        CONFIG,
        {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "x"}},
    ],
    "/api/v1/namespaces/shop/pods": [
        {"metadata": {"name": "shop-abc", "ownerReferences": [{"kind": "ReplicaSet"}]}, "spec": {}}
    ],
    "/api/v1/namespaces/shop/services": [
        {"metadata": {"name": "shop"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}
    ],
    "/apis/apps/v1/namespaces/shop/deployments": [
        {"metadata": {"name": "shop"}, "spec": {"replicas": 2}, "status": {"readyReplicas": 2}}
    ],
}
DISCOVERY = {
    "/api/v1": {
        "resources": [
            {"name": n, "kind": k, "namespaced": True, "verbs": ["list"]}
            for n, k in (
                ("configmaps", "ConfigMap"),
                ("pods", "Pod"),
                ("services", "Service"),
                ("events", "Event"),
            )
        ]
        + [{"name": "pods/log", "kind": "Pod", "namespaced": True, "verbs": ["get"]}]
    },
    "/apis": {"groups": [{"preferredVersion": {"groupVersion": "apps/v1"}}]},
    "/apis/apps/v1": {
        "resources": [{"name": "deployments", "kind": "Deployment", "namespaced": True, "verbs": ["list"]}]
    },
}


class FakeApi:
    """Answers ApiClient.call_api for discovery and namespace lists from dicts."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects

    def call_api(self, path: str, method: str, **_: Any) -> SimpleNamespace:
        body = DISCOVERY.get(path) or {"items": copy.deepcopy(self.objects.get(path, []))}
        return SimpleNamespace(data=json.dumps(body).encode())


def streams() -> dict[str, dict[int, Any]]:
    """The app's data as its sentinel store reads it back: records by seq, per stream."""
    return {
        "default": {n: {"seq": n, "payload": f"order {n}"} for n in range(1, 2501)},
        "audit": {1: {"seq": 1, "payload": "a"}},
    }


def test_the_inventory_keeps_the_apps_own_objects_and_every_record() -> None:
    inventory = integrity.take_inventory(FakeApi(OBJECTS), "shop", streams())
    assert sorted(inventory.objects) == ["ConfigMap/shop-settings", "Deployment.apps/shop", "Service/shop"]
    assert inventory.objects["ConfigMap/shop-settings"].content == {
        "data": {"MODE": "primary"},
        "labels": {"app": "shop"},
    }
    assert inventory.objects["Service/shop"].content == {"spec": {"ports": [{"port": 80}]}}
    assert inventory.streams["default"].count == 2500
    assert inventory.streams["audit"].count == 1
    again = integrity.take_inventory(FakeApi(OBJECTS), "shop", streams())
    assert integrity.diff(inventory, again) == []
    assert again.to_dict() == inventory.to_dict()


def test_noise_is_ignored_but_a_changed_spec_is_named() -> None:
    noisy = copy.deepcopy(OBJECTS)
    noisy["/api/v1/namespaces/shop/configmaps"][0]["metadata"] |= {"uid": "2", "resourceVersion": "99"}
    noisy["/api/v1/namespaces/shop/services"][0]["spec"]["clusterIP"] = "10.9.9.9"
    noisy["/apis/apps/v1/namespaces/shop/deployments"][0]["status"] = {"readyReplicas": 0}
    before = integrity.take_inventory(FakeApi(OBJECTS), "shop")
    assert integrity.diff(before, integrity.take_inventory(FakeApi(noisy), "shop")) == []
    noisy["/apis/apps/v1/namespaces/shop/deployments"][0]["spec"]["replicas"] = 1
    noisy["/api/v1/namespaces/shop/configmaps"][0]["data"]["MODE"] = "replica"
    assert integrity.diff(before, integrity.take_inventory(FakeApi(noisy), "shop")) == [
        "changed object ConfigMap/shop-settings: data.MODE",
        "changed object Deployment.apps/shop: spec.replicas",
    ]


def test_a_missing_object_and_missing_records_are_caught() -> None:
    before = integrity.take_inventory(FakeApi(OBJECTS), "shop", streams())
    after_objects = copy.deepcopy(OBJECTS)
    after_objects["/api/v1/namespaces/shop/configmaps"].pop(0)
    after_objects["/api/v1/namespaces/shop/services"].append({"metadata": {"name": "extra"}, "spec": {}})
    data = streams()
    data["default"] = {seq: o for seq, o in data["default"].items() if seq not in (7, 2498, 2499, 2500)}
    data["default"][1] = {"seq": 1, "payload": "rewritten"}
    after = integrity.take_inventory(FakeApi(after_objects), "shop", data)
    assert integrity.diff(before, after) == [
        "missing object ConfigMap/shop-settings",
        "extra object Service/extra",
        "stream default: 4 missing record(s): seq 7, 2498-2500",
        "stream default: 1 changed record(s): seq 1",
    ]
    assert after.streams["default"].checksum != before.streams["default"].checksum


def test_a_backup_tarball_gives_the_app_s_own_objects_keyed_as_the_live_ones(tmp_path: Path) -> None:
    deployment = {"kind": "Deployment", "metadata": {"name": "web", "uid": "1"}, "spec": {"replicas": 2}}
    members = {
        "resources/deployments.apps/namespaces/shop/web.json": deployment,
        "resources/deployments.apps/v1-preferredversion/namespaces/shop/web.json": deployment,
        "resources/configmaps/namespaces/shop/settings.json": {
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
        },
        "resources/configmaps/namespaces/other/x.json": {"kind": "ConfigMap", "metadata": {"name": "x"}},
        "resources/pods/namespaces/shop/web-1.json": {
            "kind": "Pod",
            "metadata": {"name": "web-1", "ownerReferences": [{"kind": "ReplicaSet"}]},
        },
        "resources/events/namespaces/shop/web.1.json": {"kind": "Event", "metadata": {"name": "web.1"}},
    }
    archive = tmp_path / "backup.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, item in members.items():
            body = json.dumps(item).encode()
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    records = integrity.backup_inventory(archive, "shop")
    assert sorted(records) == ["ConfigMap/settings", "Deployment.apps/web"]
    assert records["Deployment.apps/web"].content == integrity.fingerprint(deployment)
