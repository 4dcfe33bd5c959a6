"""One cluster's real control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

This module decides credentials, flags and environment; the supervisor starts the processes in the
cluster's control-plane namespace. Drill timings (how fast nodes are declared lost and their pods
evicted) come from the fleet's LocalTimings, which fleet.yaml's `local` section documents.
"""

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from harness.localfleet import pki
from harness.localfleet.addresses import ClusterPlan

APISERVER_PORT = 6443
SCHEDULER_PORT = 10259
CONTROLLER_MANAGER_PORT = 10257
ISSUER = "https://kubernetes.default.svc.cluster.local"
VIEWER = "fleetdrill-viewer"
FRONT_PROXY_CLIENT = "front-proxy-client"
"""The aggregator's identity towards extension API servers (metrics-server), as kubeadm names it."""


@dataclass(frozen=True)
class LocalTimings:
    """Node-lifecycle and autoscaler timings set deliberately for drills (upstream defaults in comments)."""

    node_monitor_period_s: int = 2  # 5 s: how often the node controller checks heartbeats
    node_monitor_grace_period_s: int = 20  # 50 s: silence before a node goes Ready=Unknown
    node_startup_grace_period_s: int = 30  # 60 s: the same for a node that never reported
    not_ready_toleration_s: int = 30  # 300 s: pods stay on a NotReady node this long
    unreachable_toleration_s: int = 30  # 300 s: pods stay on an unreachable node this long
    node_eviction_rate: float = 1.0  # 0.1 nodes/s tainted NoExecute in a healthy zone
    secondary_node_eviction_rate: float = 0.1  # 0.01 in a partially disrupted zone
    hpa_sync_period_s: int = 5  # 15 s: how often autoscalers recompute replicas from the metrics API

    def as_local_section(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Component:
    """A process to run in the cluster's control-plane namespace."""

    name: str
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class ClusterFiles:
    """Where one cluster's credentials, data and kubeconfigs live in the fleet folder."""

    root: Path
    ca_cert: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    def cert(self, stem: str) -> Path:
        return self.pki / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.pki / f"{stem}.key"

    def kubeconfig(self, stem: str) -> Path:
        return self.root / f"{stem}.kubeconfig"


def write_credentials(files: ClusterFiles, ca: pki.KeyPair, plan: ClusterPlan) -> None:
    """Serving certificate, component and user identities, service-account keys, component kubeconfigs."""
    serving = pki.issue(
        ca,
        "kube-apiserver",
        ips=(plan.control_plane, plan.kubernetes_service_ip, IPv4Address("127.0.0.1")),
        dns=(
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ),
        server=True,
    )
    serving.write(files.pki, "apiserver")
    for component in ("controller-manager", "scheduler"):
        pki.issue(ca, f"kube-{component}", ips=(plan.control_plane,), server=True).write(
            files.pki, f"{component}-serving"
        )
    identities = {
        "admin": ("fleetdrill-admin", ("system:masters",)),
        "viewer": (VIEWER, ()),
        "controller-manager": ("system:kube-controller-manager", ()),
        "scheduler": ("system:kube-scheduler", ()),
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
        "front-proxy-client": (FRONT_PROXY_CLIENT, ()),
    }
    for stem, (user, groups) in identities.items():
        pki.issue(ca, user, organizations=groups, client=True).write(files.pki, stem)
    for component in ("controller-manager", "scheduler"):
        files.kubeconfig(component).write_text(
            yaml.safe_dump(component_kubeconfig(files, component, f"https://127.0.0.1:{APISERVER_PORT}"))
        )
    private, public = pki.service_account_keys()
    pki.write_private(files.key("service-account"), private)
    (files.pki / "service-account.pub").write_bytes(public)


def component_kubeconfig(files: ClusterFiles, stem: str, server: str) -> dict:
    """A kubeconfig that points a control-plane component at its API server with its own identity."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(files.ca_cert)}}
        ],
        "users": [
            {
                "name": stem,
                "user": {"client-certificate": str(files.cert(stem)), "client-key": str(files.key(stem))},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": stem}}],
        "current-context": "local",
    }


def components(
    files: ClusterFiles, plan: ClusterPlan, binaries: dict[str, Path], timings: LocalTimings
) -> list[Component]:
    """The four processes of a control plane, with their flags."""
    go_env = {"GOGC": "50"}
    cp = str(plan.control_plane)
    etcd = Component(
        "etcd",
        [
            str(binaries["etcd"]),
            "--name=etcd",
            f"--data-dir={files.etcd_data}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=etcd=http://127.0.0.1:2380",
            "--log-level=warn",
            "--snapshot-count=5000",
            "--quota-backend-bytes=1073741824",
            "--unsafe-no-fsync",
        ],
        {"GOGC": "50"},
    )
    apiserver = Component(
        "kube-apiserver",
        [
            str(binaries["kube-apiserver"]),
            "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0",
            f"--secure-port={APISERVER_PORT}",
            f"--advertise-address={cp}",
            f"--tls-cert-file={files.cert('apiserver')}",
            f"--tls-private-key-file={files.key('apiserver')}",
            f"--client-ca-file={files.ca_cert}",
            f"--kubelet-client-certificate={files.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={files.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={files.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, for APIServices such as metrics-server's metrics.k8s.io: the API server
            # proxies to an endpoint of the APIService's Service (the control plane reaches pod addresses,
            # not cluster IPs) as front-proxy-client, asserting the user in the request headers.
            f"--requestheader-client-ca-file={files.ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={files.cert('front-proxy-client')}",
            f"--proxy-client-key-file={files.key('front-proxy-client')}",
            "--enable-aggregator-routing=true",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={files.pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={files.key('service-account')}",
            f"--service-cluster-ip-range={plan.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--default-not-ready-toleration-seconds={timings.not_ready_toleration_s}",
            f"--default-unreachable-toleration-seconds={timings.unreachable_toleration_s}",
            "--profiling=false",
            "--enable-priority-and-fairness=false",
            "--runtime-config=api/beta=false,api/alpha=false",
            "--event-ttl=1h",
            "--v=1",
        ],
        go_env,
    )
    controller_manager = Component(
        "kube-controller-manager",
        [
            str(binaries["kube-controller-manager"]),
            f"--kubeconfig={files.kubeconfig('controller-manager')}",
            f"--bind-address={cp}",
            f"--secure-port={CONTROLLER_MANAGER_PORT}",
            "--leader-elect=false",
            f"--tls-cert-file={files.cert('controller-manager-serving')}",
            f"--tls-private-key-file={files.key('controller-manager-serving')}",
            "--use-service-account-credentials=true",
            f"--root-ca-file={files.ca_cert}",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            f"--service-account-private-key-file={files.key('service-account')}",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={plan.pod_cidr}",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={plan.service_cidr}",
            f"--node-monitor-period={timings.node_monitor_period_s}s",
            f"--node-monitor-grace-period={timings.node_monitor_grace_period_s}s",
            f"--node-startup-grace-period={timings.node_startup_grace_period_s}s",
            f"--node-eviction-rate={timings.node_eviction_rate}",
            f"--secondary-node-eviction-rate={timings.secondary_node_eviction_rate}",
            f"--horizontal-pod-autoscaler-sync-period={timings.hpa_sync_period_s}s",
            "--profiling=false",
            "--v=1",
        ],
        go_env,
    )
    scheduler = Component(
        "kube-scheduler",
        [
            str(binaries["kube-scheduler"]),
            f"--kubeconfig={files.kubeconfig('scheduler')}",
            f"--bind-address={cp}",
            f"--secure-port={SCHEDULER_PORT}",
            "--leader-elect=false",
            f"--tls-cert-file={files.cert('scheduler-serving')}",
            f"--tls-private-key-file={files.key('scheduler-serving')}",
            "--profiling=false",
            "--v=1",
        ],
        go_env,
    )
    return [etcd, apiserver, controller_manager, scheduler]


class ApiProbe:
    """HTTPS checks of one control plane from the host, as its admin."""

    def __init__(self, files: ClusterFiles, plan: ClusterPlan) -> None:
        self.base = f"https://{plan.control_plane}:{APISERVER_PORT}"
        self.scheduler = f"https://{plan.control_plane}:{SCHEDULER_PORT}/healthz"
        self.controller_manager = f"https://{plan.control_plane}:{CONTROLLER_MANAGER_PORT}/healthz"
        self.context = ssl.create_default_context(cafile=str(files.ca_cert))
        self.context.load_cert_chain(str(files.cert("admin")), str(files.key("admin")))

    def status(self, url: str, method: str = "GET", body: dict | None = None) -> int:
        """HTTP status of a request, 0 when the server cannot be reached."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, OSError):
            return 0

    def api_ready(self) -> bool:
        return self.status(f"{self.base}/readyz") == 200

    def controllers_working(self) -> bool:
        """The root-CA publisher wrote its ConfigMap; the scheduler and controller manager are healthy."""
        return (
            self.status(f"{self.base}/api/v1/namespaces/default/configmaps/kube-root-ca.crt") == 200
            and self.status(self.scheduler) == 200
            and self.status(self.controller_manager) == 200
        )

    def get(self, path: str) -> dict | None:
        """A JSON document from the API, None when it cannot be had."""
        request = urllib.request.Request(f"{self.base}{path}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def ready_nodes(self) -> list[tuple[str, str]]:
        """(pod CIDR, InternalIP) of every Ready node that has both."""
        found = []
        for node in (self.get("/api/v1/nodes") or {}).get("items", []):
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
            )
            addresses = [
                a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"
            ]
            if ready and node["spec"].get("podCIDR") and addresses:
                found.append((node["spec"]["podCIDR"], addresses[0]))
        return found

    def bind_viewer(self) -> bool:
        """Bind the read-only identity to the `view` ClusterRole (idempotent)."""
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": VIEWER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": VIEWER}],
        }
        url = f"{self.base}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
        return self.status(url, "POST", binding) in (201, 409)
