"""A container's environment, built as the kubelet builds it (pkg/kubelet/kubelet_pods.go).

The image's environment first, then Service variables (the `kubernetes` Service always; every
Service of the pod's namespace when enableServiceLinks), then envFrom, then env: `$(VAR)` references
expanded, valueFrom resolved from pod fields, container resources, ConfigMap and
Secret keys. Everything is read through the API.
"""

import base64
import math
import os
import re
from decimal import Decimal

from kubernetes import client
from kubernetes.utils import parse_quantity

MASTER_SERVICE = ("default", "kubernetes")
REFERENCE = re.compile(r"\$(?:\$|\(([^)]*)\))")
SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")
DOWNWARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


class EnvError(Exception):
    """A variable's source is missing (the container waits, as with CreateContainerConfigError)."""


def _variable_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def service_variables(services: list[client.V1Service]) -> dict[str, str]:
    """The docker-link style variables of every Service with a ClusterIP (pkg/kubelet/envvars)."""
    env: dict[str, str] = {}
    for service in services:
        ip, ports = service.spec.cluster_ip, service.spec.ports or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = _variable_name(service.metadata.name)
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0].port)
        for port in ports:
            if port.name:
                env[f"{prefix}_SERVICE_PORT_{_variable_name(port.name)}"] = str(port.port)
        for index, port in enumerate(ports):
            protocol = (port.protocol or "TCP").lower()
            url = f"{protocol}://{_host_port(ip, port.port)}"
            if index == 0:
                env[f"{prefix}_PORT"] = url
            key = f"{prefix}_PORT_{port.port}_{protocol.upper()}"
            env |= {key: url, f"{key}_PROTO": protocol, f"{key}_PORT": str(port.port), f"{key}_ADDR": ip}
    return env


def expand(value: str, *sources: dict[str, str]) -> str:
    """Expand `$(NAME)` from the first source that defines it; `$$` is a literal `$`; unknown names stay."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return next((source[name] for source in sources if name in source), match.group(0))

    return REFERENCE.sub(replace, value)


def expand_all(parts: list[str], env: dict[str, str]) -> list[str]:
    """A container's command or args with `$(NAME)` expanded from its environment, as the kubelet does
    before it starts the container (kubecontainer.ExpandContainerCommandAndArgs)."""
    return [expand(part, env) for part in parts]


class _Sources:
    """The ConfigMaps and Secrets of one namespace, each read at most once per container start."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.read: dict[tuple[str, str], dict[str, str] | None] = {}

    def _fetch(self, kind: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "configmap":
                return self.core.read_namespaced_config_map(name, self.namespace).data or {}
            data = self.core.read_namespaced_secret(name, self.namespace).data or {}
            return {key: os.fsdecode(base64.b64decode(value)) for key, value in data.items()}
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def data(self, kind: str, name: str, optional: bool | None) -> dict[str, str] | None:
        """The object's keys; None when it is missing and optional, EnvError when missing and required."""
        if (kind, name) not in self.read:
            self.read[kind, name] = self._fetch(kind, name)
        found = self.read[kind, name]
        if found is None and not optional:
            raise EnvError(f'{kind} "{name}" not found')
        return found

    def key(self, kind: str, ref: client.V1ConfigMapKeySelector | client.V1SecretKeySelector) -> str | None:
        """One key's value; None when it (or its object) is missing and optional."""
        found = self.data(kind, ref.name, ref.optional)
        if found is not None and ref.key in found:
            return found[ref.key]
        if found is None or ref.optional:
            return None
        raise EnvError(f"couldn't find key {ref.key} in {kind} {self.namespace}/{ref.name}")


class EnvBuilder:
    """Builds the environment of each container the node starts; called as (pod, container, pod IP)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    def __call__(
        self,
        pod: client.V1Pod,
        spec: client.V1Container,
        pod_ip: str,
        image_env: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """The container's environment: the image's (`image_env`, its PATH replacing the machine's), then
        the Services', then the pod's own."""
        services = service_variables(self._services(pod))
        sources = _Sources(self.core, pod.metadata.namespace)
        own: dict[str, str] = {}
        for source in spec.env_from or []:
            kind = "configmap" if source.config_map_ref else "secret"
            ref = source.config_map_ref or source.secret_ref
            if ref is not None:
                data = sources.data(kind, ref.name, ref.optional) or {}
                own |= {f"{source.prefix or ''}{key}": value for key, value in data.items()}
        for var in spec.env or []:
            if var.value or var.value_from is None:
                own[var.name] = expand(var.value or "", own, services)
                continue
            value = self._value_from(pod, spec, var.value_from, pod_ip, sources)
            if value is not None:
                own[var.name] = value
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod.metadata.name}
        return base | (image_env or {}) | services | own

    def _services(self, pod: client.V1Pod) -> list[client.V1Service]:
        """The `kubernetes` Service, then (with service links, the default) the pod's namespace's Services."""
        found = {MASTER_SERVICE[1]: self.core.read_namespaced_service(MASTER_SERVICE[1], MASTER_SERVICE[0])}
        if pod.spec.enable_service_links is not False:
            for service in self.core.list_namespaced_service(pod.metadata.namespace).items:
                found[service.metadata.name] = service
        return list(found.values())

    def _value_from(
        self,
        pod: client.V1Pod,
        spec: client.V1Container,
        source: client.V1EnvVarSource,
        pod_ip: str,
        sources: _Sources,
    ) -> str | None:
        if source.field_ref:
            return self._field(pod, source.field_ref.field_path, pod_ip)
        if source.resource_field_ref:
            return self._resource(pod, spec, source.resource_field_ref)
        if source.config_map_key_ref:
            return sources.key("configmap", source.config_map_key_ref)
        if source.secret_key_ref:
            return sources.key("secret", source.secret_key_ref)
        raise EnvError("this node supports fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef")

    def _field(self, pod: client.V1Pod, path: str, pod_ip: str) -> str:
        """A downward-API field of the pod (podFieldSelectorRuntimeValue)."""
        subscript = SUBSCRIPT.fullmatch(path)
        if subscript:
            values = getattr(pod.metadata, subscript.group(1)) or {}
            return values.get(subscript.group(2), "")
        if path in ("status.hostIP", "status.hostIPs"):
            return pod.status.host_ip or self._internal_ip(pod)
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name or "",
            "spec.serviceAccountName": pod.spec.service_account_name or "",
            "status.podIP": pod_ip,
            "status.podIPs": pod_ip,
        }
        if path not in fields:
            raise EnvError(f"unsupported fieldRef {path!r}")
        return fields[path]

    def _resource(
        self, pod: client.V1Pod, spec: client.V1Container, ref: client.V1ResourceFieldSelector
    ) -> str:
        """A container's request or limit in units of the divisor, rounded up; a missing limit is the
        node's allocatable, as the kubelet defaults it."""
        kind, _, name = ref.resource.partition(".")
        if kind not in ("limits", "requests") or name not in DOWNWARD_RESOURCES:
            raise EnvError(f"unsupported container resource : {ref.resource}")
        resources = spec.resources or client.V1ResourceRequirements()
        values = (resources.limits if kind == "limits" else resources.requests) or {}
        if kind == "limits" and name not in values:
            values = self._node(pod).status.allocatable or {}
        quantity = parse_quantity(values.get(name, "0"))
        divisor = parse_quantity(ref.divisor or "1") or Decimal(1)
        if name == "cpu":
            return str(math.ceil(Decimal(math.ceil(quantity * 1000)) / math.ceil(divisor * 1000)))
        return str(math.ceil(Decimal(math.ceil(quantity)) / math.ceil(divisor)))

    def _node(self, pod: client.V1Pod) -> client.V1Node:
        return self.core.read_node(pod.spec.node_name)

    def _internal_ip(self, pod: client.V1Pod) -> str:
        """The node's address, for a pod whose status does not carry hostIP yet."""
        addresses = self._node(pod).status.addresses or []
        return next((a.address for a in addresses if a.type == "InternalIP"), "")
