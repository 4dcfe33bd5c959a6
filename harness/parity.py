"""Configuration parity: does a passive or standby cluster hold what the active one runs and needs?

In the app's namespace, against the reference (active) cluster, it compares:
- the workload: its pod template (containers' material fields, volumes, service account) and replicas
  (unless a HorizontalPodAutoscaler sets them: then its bounds are compared instead);
- the ConfigMaps and Secrets the pod template references (present, same keys: values may differ per
  cluster by design, and a Secret's are never read out);
- every object of the kinds a failed-over app depends on (harness.namespace_objects: Services,
  Ingresses, HorizontalPodAutoscalers, PodDisruptionBudgets, ServiceAccounts, Roles, RoleBindings,
  NetworkPolicies, PersistentVolumeClaims, and the custom resources of every namespaced CRD), each
  reduced to what matters for failover; what that is, and what is left out as the cluster's own, is
  documented there. An object on one side only is a difference: missing, or extra (an extra
  NetworkPolicy can cut the app off as surely as a missing Service).
Every difference is one line naming the cluster, kind/name and the path that changed. An API that does
not answer is a ParityError (the drill's verdict is then an error), never "no difference".
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client

from harness import namespace_objects
from harness.config import App
from harness.errors import FleetDrillError
from harness.fleet import FleetAccess
from harness.permissions import APP, Permission

T = TypeVar("T")
KINDS = {"deployment": "deployment", "statefulset": "stateful_set", "daemonset": "daemon_set"}
TIMEOUT_S = 10
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


class ParityError(FleetDrillError):
    """A cluster did not answer what parity reads; the message names the cluster and the request."""


@dataclass(frozen=True)
class Drift:
    """One difference between the reference cluster and another (shown: whether the values may be shown)."""

    cluster: str
    path: str
    expected: Any
    got: Any
    shown: bool = True

    def line(self, reference: str) -> str:
        if not self.shown:
            return f"{self.cluster}: {self.path}: differs from {reference} (a custom resource's: not shown)"
        return (
            f"{self.cluster}: {self.path}: expected {self.expected!r} (as in {reference}), got {self.got!r}"
        )


def workload_permission(app: App) -> Permission:
    """What read_workload calls: get on the app's workload kind in its namespace."""
    return Permission("get", f"{app.workload.split('/', 1)[0]}s", "apps", APP)


def permissions(app: App, role: str) -> tuple[Permission, ...]:
    """What `compare` reads in a cluster of `role`: the workload, the ConfigMaps and Secrets it references,
    every object of namespace_objects' kinds; in the reference (active) cluster the CRDs too."""
    crds = (Permission("list", "customresourcedefinitions", "apiextensions.k8s.io"),)
    return (
        workload_permission(app),
        Permission("get", "configmaps", namespace=APP),  # _keys
        Permission("get", "secrets", namespace=APP),
        *namespace_objects.READ_PERMISSIONS,
        *(crds if role == "active" else ()),  # namespace_objects.custom_kinds
    )


def read_workload(access: FleetAccess, app: App, cluster: str) -> Any | None:
    """The app's workload object in the cluster, None when it does not exist."""
    kind, name = app.workload.split("/", 1)
    reader = getattr(client.AppsV1Api(access.api_client(cluster)), f"read_namespaced_{KINDS[kind]}")
    try:
        return reader(name, app.namespace, _request_timeout=TIMEOUT_S)
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


def referenced(workload: Any, required_only: bool = False) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod template mounts, reads from or pulls images with; with
    required_only, those without `optional: true` (a pod starts without an optional one: it is needed
    where the app has it, which parity compares)."""
    spec = _plain(workload.spec.template.spec)
    config_maps, secrets = set(), {s.get("name") for s in spec.get("imagePullSecrets") or []}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                counted = isinstance(value, dict) and not (required_only and value.get("optional") is True)
                if key in ("configMap", "configMapRef", "configMapKeyRef") and counted:
                    config_maps.add(value.get("name"))
                elif key in ("secret", "secretRef", "secretKeyRef") and counted:
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
        found = getattr(core, f"read_namespaced_{kind}")(name, namespace, _request_timeout=TIMEOUT_S)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return set(found.data or {}) | set(getattr(found, "binary_data", None) or {})


def _answered(cluster: str, what: str, call: Callable[..., T], *args: Any) -> T:
    """call(*args), or a ParityError naming the cluster and what was being read when its API did not
    answer."""
    try:
        return call(*args)
    except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as error:
        reason = f"HTTP {error.status} {error.reason}" if isinstance(error, client.ApiException) else error
        raise ParityError(f"{cluster}: reading {what}: {reason}") from None


def _autoscaled(access: FleetAccess, app: App, cluster: str) -> bool:
    """A HorizontalPodAutoscaler sets the workload's replicas in `cluster`: then they are its business (its
    bounds are compared with the namespace's objects), not a difference."""
    kind, name = app.workload.split("/", 1)
    scalers = namespace_objects.AUTOSCALERS
    what = f"{scalers.label} objects in namespace {app.namespace}"
    found = _answered(
        cluster, what, namespace_objects.read, access.api_client(cluster), scalers, app.namespace
    )
    targets = [spec.get("scaleTargetRef") or {} for spec in (found or {}).values()]
    return any(t.get("kind", "").lower() == kind and t.get("name") == name for t in targets)


def _workload_drifts(
    access: FleetAccess, app: App, reference: str, other: str, replicas: int | None
) -> list[Drift]:
    """The workload's template and replicas, and the keys of the ConfigMaps and Secrets it references."""
    expected = _answered(reference, app.workload, read_workload, access, app, reference)
    got = _answered(other, app.workload, read_workload, access, app, other)
    if expected is None:
        return [Drift(reference, app.workload, "present", "missing")]
    if got is None:
        return [Drift(other, app.workload, "present", "missing")]
    drifts = [
        Drift(other, f"{app.workload}.{path}", want, have)
        for path, want, have in _diff(_template(expected), _template(got), "")
    ]
    wanted = expected.spec.replicas if replicas is None else replicas
    judged = replicas is not None or not _autoscaled(access, app, reference)
    if judged and getattr(got.spec, "replicas", None) != wanted:
        drifts.append(Drift(other, f"{app.workload}.replicas", wanted, got.spec.replicas))
    config_maps, secrets = referenced(expected)
    for kind, names in (("config_map", config_maps), ("secret", secrets)):
        for name in sorted(names):
            label = f"{kind.replace('_', '')}/{name}"
            want_keys = _answered(reference, label, _keys, access, reference, app.namespace, kind, name)
            have_keys = _answered(other, label, _keys, access, other, app.namespace, kind, name)
            if have_keys is None and want_keys is not None:
                drifts.append(Drift(other, label, "present", "missing"))
            elif want_keys is not None and have_keys != want_keys:
                drifts.append(Drift(other, f"{label} keys", sorted(want_keys), sorted(have_keys or ())))
    return drifts


def _object_drifts(
    kind: namespace_objects.Kind, expected: dict[str, Any], got: dict[str, Any], other: str
) -> list[Drift]:
    """Objects of one kind, by name: missing, extra, or each path whose material value differs."""
    drifts = []
    for name in sorted(set(expected) | set(got)):
        label = f"{kind.label}/{name}"
        if name not in got:
            drifts.append(Drift(other, label, "present", "missing"))
        elif name not in expected:
            drifts.append(Drift(other, label, "absent", "present"))
        else:
            drifts += [
                Drift(other, f"{label}.{path}", want, have, kind.shown)
                for path, want, have in _diff(expected[name], got[name], "")
            ]
    return drifts


def _namespace_drifts(access: FleetAccess, app: App, reference: str, other: str) -> list[Drift]:
    """Every object of the kinds a failed-over app depends on, and the custom resources of the
    reference's namespaced CRDs (a CRD the other cluster does not serve is one difference)."""
    source, target, namespace = access.api_client(reference), access.api_client(other), app.namespace
    kinds = [
        *namespace_objects.BUILT_IN,
        *_answered(reference, "custom resource definitions", namespace_objects.custom_kinds, source),
    ]
    drifts = []
    for kind in kinds:
        what = f"{kind.label} objects in namespace {namespace}"
        expected = _answered(reference, what, namespace_objects.read, source, kind, namespace)
        got = _answered(other, what, namespace_objects.read, target, kind, namespace)
        if got is None:  # only a custom resource's list can be absent: its CRD is not served there
            if expected:
                served = f"served ({kind.path.removeprefix('/apis/')})"
                drifts.append(Drift(other, f"crd/{kind.crd}", served, "not served"))
            continue
        drifts += _object_drifts(kind, expected or {}, got, other)
    return drifts


def compare(
    access: FleetAccess, app: App, reference: str, other: str, replicas: int | None = None
) -> list[Drift]:
    """Every difference between the app in `reference` and in `other` (replicas: what `other` should run);
    ParityError when a cluster's API does not answer."""
    return [
        *_workload_drifts(access, app, reference, other, replicas),
        *_namespace_drifts(access, app, reference, other),
    ]
