"""Typed access to every cluster of a fleet: one kubernetes ApiClient per context, and the provider.

A context that cannot be loaded (KubeconfigError) or an API server that does not answer (UnreachableError)
is one line naming the kubeconfig, the context and what to check; never urllib3's retry text.
"""

import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import urllib3
from kubernetes import client

from harness import kubeconfig
from harness.auth import ClusterAuth, RequestAuth
from harness.config import Cluster, Fleet
from harness.errors import FleetDrillError
from harness.infra import Provider
from harness.infra.providers import provider_for
from harness.kubeconfig import KubeconfigError
from harness.permissions import EVERY, Permission

T = TypeVar("T")
RETRIES = 1  # urllib3's default is 3: against a lost cluster, each call would hide four timeouts
REACH_TIMEOUT_S = 5.0
MID_DRILL_TIMEOUT = (1.0, REACH_TIMEOUT_S)
"""(connect, read) seconds of a call a drill makes while a cluster may be lost: a lost API server drops the
connection's first packet and never answers it, while one that runs accepts within a round trip (busy or
not); so the lost one costs (1 + RETRIES) s, not (1 + RETRIES) x 5 s."""
REACH = "that the API server runs and this machine reaches it (after a crashed run: fleetdrill recover)"
NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)
REJECTED = (
    "that the credential is this cluster's and still valid (a client certificate issued by the cluster's "
    "CA, a token neither expired nor revoked)"
)
SERVICE_PROXY_PERMISSIONS = (Permission("get", "services/proxy", namespace=EVERY),)
"""What probes through service_proxy need: its namespace (a restore's) may be made during the drill."""


class ClusterError(FleetDrillError):
    """A call to one cluster failed; the message names the cluster."""


class UnreachableError(ClusterError):
    """A cluster's API server does not answer, or refuses the kubeconfig's credentials."""


def served_group_versions(
    api: client.ApiClient, resource: str, group_versions: tuple[str, ...]
) -> tuple[str, ...]:
    """Which of `group_versions` ("group/version") serve `resource`, by API discovery: the group versions the
    API server lists (/apis), then the resources of each listed one; ApiException or a network error when
    the API cannot be asked."""
    listed = client.ApisApi(api).get_api_versions(_request_timeout=MID_DRILL_TIMEOUT)
    offered = {version.group_version for group in listed.groups or () for version in group.versions or ()}
    found = []
    for group_version in group_versions:
        if group_version in offered:
            group, version = group_version.split("/")
            answer = client.CustomObjectsApi(api).get_api_resources(
                group, version, _request_timeout=MID_DRILL_TIMEOUT
            )
            if any(r.name == resource for r in answer.resources or ()):
                found.append(group_version)
    return tuple(found)


def context_ref(fleet: Fleet, cluster: Cluster) -> kubeconfig.ContextRef:
    """The cluster's kubeconfig context, with the fleet file's fields that name it."""
    index = fleet.clusters.index(cluster)
    own = f"clusters[{index}].kubeconfig"
    return kubeconfig.ContextRef(
        fleet.kubeconfig_for(cluster),
        fleet.context_for(cluster),
        f"cluster {cluster.name}",
        path_field=f"{own} in the fleet file"
        if cluster.kubeconfig
        else f"kubeconfig (or {own}) in the fleet file",
        context_field=f"clusters[{index}].context in the fleet file",
    )


def cause(error: BaseException) -> tuple[str, str]:
    """A failed API call as (short cause, what to check): no retry dump, no credential."""
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    if isinstance(error, client.ApiException):
        said = f"HTTP {error.status} {error.reason or ''}".strip()
        if error.status == 401:
            return f"the API server rejected the credentials ({said})", REJECTED
        if error.status == 403:
            return said, "the context's credentials and RBAC (a request without any is system:anonymous)"
        return said, "the API server's health (its log, its etcd, any load balancer in front of it)"
    tls = next((e for e in (error, *error.args) if isinstance(e, ssl.SSLError)), None)
    if tls is not None or isinstance(error, urllib3.exceptions.SSLError):
        detail = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or "TLS error"
        return f"TLS handshake failed ({detail})", "the kubeconfig's certificate-authority and server URL"
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        return "its host name does not resolve", "the server URL in the kubeconfig, and DNS"
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        reason = error.__cause__ if isinstance(error.__cause__, OSError) else None
        return (getattr(reason, "strerror", None) or "no connection").lower(), REACH
    if isinstance(error, urllib3.exceptions.TimeoutError | TimeoutError):
        return "no answer in time", REACH
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return "the connection broke", REACH
    return type(error).__name__, REACH


def _server(url: str) -> str:
    """The server URL without any user:password part."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class FleetAccess:
    """The fleet as drills and faults reach it (a harness.faults.FaultContext)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._auth: dict[str, ClusterAuth] = {}
        self._clients: dict[str, client.ApiClient] = {}
        self._lock = threading.Lock()
        self._infra: Provider | None = provider_for(fleet)
        self._served: dict[tuple[str, str, tuple[str, ...]], tuple[str, ...]] = {}

    @property
    def infra(self) -> Provider | None:
        return self._infra

    @property
    def infra_effect_timeout_s(self) -> float | None:
        return self.fleet.infrastructure.effect_timeout

    def auth(self, cluster: str) -> ClusterAuth:
        """The cluster's kubeconfig context and its credentials, kept fresh (harness.auth); KubeconfigError
        when its kubeconfig or context cannot be used."""
        with self._lock:
            if cluster not in self._auth:
                self._auth[cluster] = ClusterAuth(context_ref(self.fleet, self.fleet.cluster(cluster)))
                self._auth[cluster].configuration.retries = RETRIES
            return self._auth[cluster]

    def api_client(self, cluster: str) -> client.ApiClient:
        """The cluster's ApiClient (its own configuration: several clusters are driven at once), renewing
        its credentials before each call; KubeconfigError when its kubeconfig or context cannot be used."""
        auth = self.auth(cluster)
        with self._lock:
            if cluster not in self._clients:
                self._clients[cluster] = auth.api_client()
            return self._clients[cluster]

    def served(self, cluster: str, resource: str, group_versions: tuple[str, ...]) -> tuple[str, ...]:
        """Which of `group_versions` ("group/version") serve `resource` in the cluster, in their order, by API
        discovery; asked once per cluster and resource for the life of this FleetAccess (a drill run).
        ApiException or a network error when the cluster cannot be asked (not remembered)."""
        key = (cluster, resource, group_versions)
        with self._lock:
            known = self._served.get(key)
        if known is None:
            known = served_group_versions(self.api_client(cluster), resource, group_versions)
            with self._lock:
                self._served[key] = known
        return known

    def check_reachable(self, cluster: str) -> None:
        """The cluster's API server answers GET /api with the kubeconfig's credentials, else one line:
        KubeconfigError or UnreachableError. Check before drills only: a drill may lose a cluster."""
        api, rejected = self.api_client(cluster), False
        try:
            client.CoreApi(api).get_api_versions(_request_timeout=REACH_TIMEOUT_S)
        except client.ApiException as error:
            if error.status not in (401, 403) and (error.status or 0) < 500:
                return  # it answered
            problem, rejected = cause(error), error.status == 401
        except NETWORK_ERRORS as error:
            problem = cause(error)
        except ValueError:  # a 2xx whose body is not an APIVersions: still an answer
            return
        else:
            return
        context, server = self.fleet.context_for(cluster), _server(api.configuration.host)
        where = f"context {context} of {self.fleet.kubeconfig_for(cluster)}, server {server}"
        if rejected:  # the cause is the credential: name which one
            said = f"the API server rejected {self.auth(cluster).credential()} (HTTP 401 Unauthorized)"
            raise UnreachableError(f"cluster {cluster} ({where}): {said}; check {REJECTED}")
        raise UnreachableError(
            f"cluster {cluster} ({where}): API server unreachable: {problem[0]}; check {problem[1]}"
        )

    def unreachable(self, clusters: list[str] | None = None) -> dict[str, KubeconfigError | UnreachableError]:
        """Every (or each named) cluster that check_reachable finds a problem with (checked at once), and
        the problem."""

        def problem(name: str) -> KubeconfigError | UnreachableError | None:
            try:
                self.check_reachable(name)
            except (KubeconfigError, UnreachableError) as error:
                return error
            return None

        names = clusters or [c.name for c in self.fleet.clusters]
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            found = dict(zip(names, pool.map(problem, names), strict=True))
        return {name: error for name, error in found.items() if error is not None}

    def each(
        self, call: Callable[[str], T], clusters: list[str] | None = None
    ) -> dict[str, T | ClusterError]:
        """Run call(cluster) on every (or the named) cluster at once; failures come back as ClusterError."""
        names = clusters or [c.name for c in self.fleet.clusters]

        def guarded(name: str) -> Any:
            try:
                return call(name)
            except ClusterError as error:
                return error
            except KubeconfigError as error:  # it names the cluster
                return ClusterError(str(error))
            except NETWORK_ERRORS as error:
                return ClusterError(f"cluster {name}: {cause(error)[0]}")
            except Exception as error:  # reported per cluster to the caller
                return ClusterError(f"cluster {name}: {error}")

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(zip(names, pool.map(guarded, names), strict=True))

    def close(self) -> None:
        for api in self._clients.values():
            api.close()
        for auth in self._auth.values():
            auth.close()
        self._clients.clear()
        self._auth.clear()


@dataclass(frozen=True)
class ServiceProxy:
    """A Service reached through its cluster's API server (`.../services/NAME/proxy/PATH`), authenticated
    as the kubeconfig says: how a drill reaches an app no endpoint of the fleet file routes to, such as one
    restored beside the original. `auth` gives the credential per request (it is renewed meanwhile)."""

    url: str
    auth: RequestAuth = field(repr=False)
    namespace: str
    """The namespace of the Service."""


def service_port(api: client.ApiClient, namespace: str, service: str) -> str:
    """The first port of a Service, by name when it has one (the API server's proxy needs the name)."""
    found = client.CoreV1Api(api).read_namespaced_service(service, namespace, _request_timeout=10)
    port = found.spec.ports[0]
    return port.name or str(port.port)


def service_proxy(auth: ClusterAuth, namespace: str, service: str, port: str) -> ServiceProxy:
    """The API server's proxy to `port` (name or number) of `service` in `namespace`, with the context's
    TLS and credentials as of each request."""
    host = auth.configuration.host.rstrip("/")
    return ServiceProxy(
        f"{host}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy", auth, namespace
    )
