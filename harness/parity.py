"""Configuration parity: does a standby cluster run what the active one runs?

Compares an app's workload across clusters (pod template, replicas) and the ConfigMaps and Secrets
its pods reference (present, same keys; values may differ per cluster by design), and reports every
difference as one precise line.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from harness.config import App
from harness.fleet import FleetAccess

KINDS = {"deployment": "deployment", "statefulset": "stateful_set", "daemonset": "daemon_set"}
# Pod template fields that say what runs (scheduling hints and API defaults are left out).
CONTAINER_FIELDS = (
    "image",
    "command",
    "args",
    "env",
    "env_from",
    "ports",
    "resources",
    "volume_mounts",
    "readiness_probe",
    "liveness_probe",
    "startup_probe",
    "working_dir",
)


@dataclass(frozen=True)
class Drift:
    """One difference between the reference cluster and another."""

    cluster: str
    path: str
    expected: Any
    got: Any

    def line(self, reference: str) -> str:
        return (
            f"{self.cluster}: {self.path}: expected {self.expected!r} (as in {reference}), got {self.got!r}"
        )


def read_workload(access: FleetAccess, app: App, cluster: str) -> Any | None:
    """The app's workload object in the cluster, None when it does not exist."""
    kind, name = app.workload.split("/", 1)
    reader = getattr(client.AppsV1Api(access.api_client(cluster)), f"read_namespaced_{KINDS[kind]}")
    try:
        return reader(name, app.namespace, _request_timeout=10)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _plain(value: Any) -> Any:
    return client.ApiClient().sanitize_for_serialization(value)


def _template(workload: Any) -> dict[str, Any]:
    """What runs: containers by name with their material fields, and the volumes' sources."""
    spec = workload.spec.template.spec
    containers = {c.name: {f: _plain(getattr(c, f)) for f in CONTAINER_FIELDS} for c in spec.containers}
    volumes = {v.name: {k: val for k, val in _plain(v).items() if k != "name"} for v in spec.volumes or []}
    return {"containers": containers, "volumes": volumes, "service_account": spec.service_account_name}


def _diff(expected: Any, got: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            yield from _diff(expected.get(key), got.get(key), f"{path}.{key}" if path else str(key))
    elif expected != got:
        yield path, expected, got


def referenced(workload: Any) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod template mounts or reads from."""
    spec = _plain(workload.spec.template.spec)
    config_maps, secrets = set(), set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("configMap", "configMapRef", "configMapKeyRef") and isinstance(value, dict):
                    config_maps.add(value.get("name"))
                elif key in ("secret", "secretRef", "secretKeyRef") and isinstance(value, dict):
                    secrets.add(value.get("secretName") or value.get("name"))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return config_maps - {None}, secrets - {None}


def _keys(access: FleetAccess, cluster: str, namespace: str, kind: str, name: str) -> set[str] | None:
    core = client.CoreV1Api(access.api_client(cluster))
    try:
        found = getattr(core, f"read_namespaced_{kind}")(name, namespace, _request_timeout=10)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return set(found.data or {}) | set(getattr(found, "binary_data", None) or {})


def compare(
    access: FleetAccess, app: App, reference: str, other: str, replicas: int | None = None
) -> list[Drift]:
    """Every difference between the app in `reference` and in `other` (replicas: what `other` should run)."""
    expected, got = read_workload(access, app, reference), read_workload(access, app, other)
    if expected is None:
        return [Drift(reference, app.workload, "present", "missing")]
    if got is None:
        return [Drift(other, app.workload, "present", "missing")]
    drifts = [
        Drift(other, f"{app.workload}.{path}", want, have)
        for path, want, have in _diff(_template(expected), _template(got), "")
    ]
    wanted = expected.spec.replicas if replicas is None else replicas
    if getattr(got.spec, "replicas", None) != wanted:
        drifts.append(Drift(other, f"{app.workload}.replicas", wanted, got.spec.replicas))
    config_maps, secrets = referenced(expected)
    for kind, names in (("config_map", config_maps), ("secret", secrets)):
        for name in sorted(names):
            want_keys = _keys(access, reference, app.namespace, kind, name)
            have_keys = _keys(access, other, app.namespace, kind, name)
            label = f"{kind.replace('_', '')}/{name}"
            if have_keys is None and want_keys is not None:
                drifts.append(Drift(other, label, "present", "missing"))
            elif want_keys is not None and have_keys != want_keys:
                drifts.append(Drift(other, f"{label} keys", sorted(want_keys), sorted(have_keys or ())))
    return drifts
