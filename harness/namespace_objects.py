"""The objects of an app's namespace that a failed-over app depends on, each reduced to what matters for
failover (configuration parity compares these between clusters).

What is compared, per kind (everything else is the cluster's own, or filled in by its API server):
- Service: type, selector, whether it is headless, externalName, sessionAffinity,
  publishNotReadyAddresses, and its ports by name (port, targetPort, protocol, appProtocol). Left out:
  clusterIP(s) (allocated per cluster), nodePorts (allocated unless set), ipFamilies, traffic policies.
- Ingress: per path of its rules, the pathType and backend (of every host's rule with that path); the
  default backend; the TLS secrets' names.
  Left out: hosts (each cluster may answer to a name of its own besides the global one), the ingress
  class and annotations (they follow the controller each cluster runs), status.
- HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy: the whole spec.
- ServiceAccount: automountServiceAccountToken and the imagePullSecrets' names (its token secrets are
  the cluster's own).
- Role: the rules. RoleBinding: roleRef and subjects.
- PersistentVolumeClaim: accessModes, requested resources, volumeMode. Left out: volumeName (bound per
  cluster) and storageClassName (class names are the cluster's: a restore may map them).
- Custom resources of every namespaced CRD: everything but apiVersion, kind, metadata and status. Their
  values are never shown (a spec may hold credentials), only the path that differs.
Objects a controller owns (ownerReferences) are left out: their owner is compared, and recreates them.
Metadata (uid, resourceVersion, creationTimestamp, managedFields, labels, annotations) is never compared.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from harness.permissions import APP, CUSTOM, Permission

TIMEOUT_S = 10
Material = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Kind:
    """A namespaced kind: how differences name it (label), where it is listed, and what of it matters."""

    label: str
    path: str
    plural: str
    material: Material
    shown: bool = True
    crd: str | None = None

    @property
    def group(self) -> str:
        """Its API group ("" the core group)."""
        return "" if self.path.startswith("/api/") else self.path.split("/")[2]


def _pick(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: item.get(key) for key in keys}


def _spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


def service(obj: dict[str, Any]) -> dict[str, Any]:
    spec = _spec(obj)
    fields = ("port", "targetPort", "protocol", "appProtocol")
    ports = {
        str(port.get("name") or port.get("port")): _pick(port, *fields) for port in spec.get("ports") or []
    }
    kept = _pick(spec, "type", "selector", "externalName", "sessionAffinity", "publishNotReadyAddresses")
    return {**kept, "headless": spec.get("clusterIP") == "None", "ports": ports}


def _backend(backend: dict[str, Any] | None) -> str | None:
    """An Ingress backend in a few words: service NAME:PORT or resource KIND/NAME."""
    if not backend:
        return None
    if service := backend.get("service"):
        port = service.get("port") or {}
        return f"service {service.get('name')}:{port.get('name') or port.get('number')}"
    resource = backend.get("resource") or {}
    return f"resource {resource.get('kind')}/{resource.get('name')}"


def ingress(obj: dict[str, Any]) -> dict[str, Any]:
    spec, paths = _spec(obj), {}
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            route = f"{path.get('pathType')} to {_backend(path.get('backend'))}"
            paths.setdefault(path.get("path") or "/", set()).add(route)
    tls = sorted(t["secretName"] for t in spec.get("tls") or [] if t.get("secretName"))
    routes = {path: ", ".join(sorted(found)) for path, found in paths.items()}
    return {"paths": routes, "defaultBackend": _backend(spec.get("defaultBackend")), "tls secrets": tls}


def service_account(obj: dict[str, Any]) -> dict[str, Any]:
    pull = sorted(s.get("name") for s in obj.get("imagePullSecrets") or [])
    return {"automountServiceAccountToken": obj.get("automountServiceAccountToken"), "imagePullSecrets": pull}


def claim(obj: dict[str, Any]) -> dict[str, Any]:
    spec = _spec(obj)
    requests = (spec.get("resources") or {}).get("requests")
    return {**_pick(spec, "accessModes", "volumeMode"), "requests": requests}


def custom(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


RBAC = "/apis/rbac.authorization.k8s.io/v1"
AUTOSCALERS = Kind("horizontalpodautoscaler", "/apis/autoscaling/v2", "horizontalpodautoscalers", _spec)
BUILT_IN = (
    Kind("service", "/api/v1", "services", service),
    Kind("serviceaccount", "/api/v1", "serviceaccounts", service_account),
    Kind("persistentvolumeclaim", "/api/v1", "persistentvolumeclaims", claim),
    Kind("ingress", "/apis/networking.k8s.io/v1", "ingresses", ingress),
    Kind("networkpolicy", "/apis/networking.k8s.io/v1", "networkpolicies", _spec),
    AUTOSCALERS,
    Kind("poddisruptionbudget", "/apis/policy/v1", "poddisruptionbudgets", _spec),
    Kind("role", RBAC, "roles", lambda o: _pick(o, "rules")),
    Kind("rolebinding", RBAC, "rolebindings", lambda o: _pick(o, "roleRef", "subjects")),
)

READ_PERMISSIONS = (
    *(Permission("list", kind.plural, kind.group, APP) for kind in BUILT_IN),
    Permission("list", CUSTOM, namespace=APP),
)
"""What `read` lists in the app's namespace: every built-in kind, and the custom kinds."""


def custom_kinds(api: client.ApiClient) -> list[Kind]:
    """A Kind per namespaced CRD of the cluster, at its storage version (else its first served one)."""
    kinds, extensions = [], client.ApiextensionsV1Api(api)
    for crd in extensions.list_custom_resource_definition(_request_timeout=TIMEOUT_S).items:
        served = [v for v in crd.spec.versions if v.served]
        version = next((v.name for v in served if v.storage), served[0].name if served else None)
        if crd.spec.scope != "Namespaced" or version is None:
            continue
        group, names = crd.spec.group, crd.spec.names
        label, path = f"{names.kind.lower()}.{group}", f"/apis/{group}/{version}"
        kinds.append(Kind(label, path, names.plural, custom, shown=False, crd=crd.metadata.name))
    return kinds


def read(api: client.ApiClient, kind: Kind, namespace: str) -> dict[str, Any] | None:
    """What matters of each object of `kind` in `namespace`, by name (objects a controller owns left out);
    None when the cluster does not serve a custom kind (its CRD is missing)."""
    try:
        listing = api.call_api(
            f"{kind.path}/namespaces/{namespace}/{kind.plural}",
            "GET",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            response_types_map={200: "object"},
            _return_http_data_only=True,
            _request_timeout=TIMEOUT_S,
        )
    except client.ApiException as error:
        if error.status == 404 and kind.crd is not None:
            return None
        raise
    return {
        item["metadata"]["name"]: kind.material(item)
        for item in listing.get("items") or []
        if not item["metadata"].get("ownerReferences")
    }
