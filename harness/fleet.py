"""Typed access to every cluster of a fleet: one kubernetes ApiClient per context, and the provider."""

import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes import client, config

from harness.config import Fleet
from harness.errors import FleetDrillError
from harness.infra import Provider, provider_for

T = TypeVar("T")
RETRIES = 1  # urllib3's default is 3: against a lost cluster, each call would hide four timeouts


class ClusterError(FleetDrillError):
    """A call to one cluster failed; the message names the cluster."""


class FleetAccess:
    """The fleet as drills and faults reach it (a harness.faults.FaultContext)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._clients: dict[str, client.ApiClient] = {}
        self._lock = threading.Lock()
        self._infra: Provider | None = provider_for(fleet)

    @property
    def infra(self) -> Provider | None:
        return self._infra

    def api_client(self, cluster: str) -> client.ApiClient:
        """The cluster's ApiClient (its own configuration: several clusters are driven at once)."""
        with self._lock:
            if cluster not in self._clients:
                found = self.fleet.cluster(cluster)
                settings = client.Configuration()
                config.load_kube_config(
                    str(self.fleet.kubeconfig_for(found)),
                    context=self.fleet.context_for(found),
                    client_configuration=settings,
                )
                settings.retries = RETRIES
                self._clients[cluster] = client.ApiClient(settings)
            return self._clients[cluster]

    def each(
        self, call: Callable[[str], T], clusters: list[str] | None = None
    ) -> dict[str, T | ClusterError]:
        """Run call(cluster) on every (or the named) cluster at once; failures come back as ClusterError."""
        names = clusters or [c.name for c in self.fleet.clusters]

        def guarded(name: str) -> Any:
            try:
                return call(name)
            except Exception as error:  # reported per cluster to the caller
                return ClusterError(f"cluster {name}: {error}")

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(zip(names, pool.map(guarded, names), strict=True))

    def close(self) -> None:
        for api in self._clients.values():
            api.close()
        self._clients.clear()


@dataclass(frozen=True)
class ServiceProxy:
    """A Service reached through its cluster's API server (`.../services/NAME/proxy/PATH`), authenticated
    as the kubeconfig says: how a drill reaches an app no endpoint of the fleet file routes to, such as one
    restored beside the original. The headers carry the credentials: never log them."""

    url: str
    ssl_context: ssl.SSLContext | None = field(repr=False)
    headers: dict[str, str] = field(repr=False)


def service_port(api: client.ApiClient, namespace: str, service: str) -> str:
    """The first port of a Service, by name when it has one (the API server's proxy needs the name)."""
    found = client.CoreV1Api(api).read_namespaced_service(service, namespace, _request_timeout=10)
    port = found.spec.ports[0]
    return port.name or str(port.port)


def service_proxy(api: client.ApiClient, namespace: str, service: str, port: str) -> ServiceProxy:
    """The API server's proxy to `port` (name or number) of `service` in `namespace`, with the client's
    TLS and credentials."""
    settings = api.configuration
    context = None
    if settings.host.startswith("https"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_cert)
        if not settings.verify_ssl:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    token = settings.get_api_key_with_prefix("authorization")
    url = f"{settings.host.rstrip('/')}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"
    return ServiceProxy(url, context, {"Authorization": token} if token else {})
