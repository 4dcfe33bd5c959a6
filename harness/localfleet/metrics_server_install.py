"""metrics-server in every cluster (`fleet up --metrics-server`), deployed as its release manifest deploys
it: a ServiceAccount, its ClusterRoles and bindings (nodes/metrics; the auth delegator and the
extension-apiserver-authentication reader, so it trusts the aggregator's front-proxy-client), a Deployment
of the registry.k8s.io/metrics-server/metrics-server image (the node agent's catalogue runs the
metrics-server built from its Go module), its Service and the APIService v1beta1.metrics.k8s.io that
registers it with the API server's aggregation layer. `kubectl top` and the HPA controller read it there.

Two departures from the release manifest, both towards a stricter setup: it serves a certificate issued by
the fleet CA for metrics-server.kube-system.svc (the APIService's caBundle; the manifest sets
insecureSkipTLSVerify), and it scrapes each kubelet's /metrics/resource with a client certificate of its
own (the node agents authorize it with a SubjectAccessReview for nodes/metrics) verified against the
fleet CA (the manifest's cloud clusters use the service account's token).
"""

import base64
import functools
from pathlib import Path

from kubernetes import client, config, utils

from harness.errors import FleetDrillError
from harness.localfleet import each, kwatch, pki
from harness.localfleet.state import FleetState

NAMESPACE, NAME = "kube-system", "metrics-server"
IMAGE = "registry.k8s.io/metrics-server/metrics-server:v0.9.0"
"""The release gobuild/metrics-server pins."""
PORT = 4443
RESOLUTION_S = 10
"""How often it scrapes the kubelets (--metric-resolution; its minimum): the HPA sees load this fast."""
KUBELET_CLIENT = "metrics-server-kubelet-client"
PKI_DIR = "/etc/metrics-server/pki"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
GROUP, VERSION = "metrics.k8s.io", "v1beta1"


class MetricsServerInstallError(FleetDrillError):
    """metrics-server could not be installed or its API did not answer."""


def certificates(ca: pki.KeyPair) -> dict[str, str]:
    """The Secret's files: the serving certificate the aggregator verifies, the kubelet client's."""
    serving = pki.issue(
        ca, NAME, dns=(f"{NAME}.{NAMESPACE}.svc", f"{NAME}.{NAMESPACE}.svc.cluster.local"), server=True
    )
    kubelet = pki.issue(ca, KUBELET_CLIENT, client=True)
    return {
        "tls.crt": serving.cert.decode(),
        "tls.key": serving.key.decode(),
        "kubelet-client.crt": kubelet.cert.decode(),
        "kubelet-client.key": kubelet.key.decode(),
    }


def _binding(name: str, role: tuple[str, str], subjects: list[dict], namespace: str = "") -> dict:
    """A ClusterRoleBinding, or a RoleBinding in namespace; role is (kind, name)."""
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    role_kind, role_name = role
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding" if namespace else "ClusterRoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def manifests(ca: pki.KeyPair) -> list[dict]:
    """metrics-server's objects in one cluster."""
    labels = {"k8s-app": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    account = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    kubelet_user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT}
    container = {
        "name": NAME,
        "image": IMAGE,
        "args": [
            f"--secure-port={PORT}",
            "--cert-dir=/tmp",
            f"--tls-cert-file={PKI_DIR}/tls.crt",
            f"--tls-private-key-file={PKI_DIR}/tls.key",
            f"--kubelet-client-certificate={PKI_DIR}/kubelet-client.crt",
            f"--kubelet-client-key={PKI_DIR}/kubelet-client.key",
            f"--kubelet-certificate-authority={SERVICE_ACCOUNT_DIR}/ca.crt",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            f"--metric-resolution={RESOLUTION_S}s",
            f"--kubelet-request-timeout={RESOLUTION_S // 2}s",  # must be under the resolution
        ],
        "ports": [{"name": "https", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}},
        "volumeMounts": [{"name": "pki", "mountPath": PKI_DIR, "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    "rbac.authorization.k8s.io/aggregate-to-view": "true",
                    "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                    "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                },
            },
            "rules": [
                {"apiGroups": [GROUP], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"system:{NAME}"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ],
        },
        _binding(
            f"{NAME}-auth-reader", ("Role", "extension-apiserver-authentication-reader"), [account], NAMESPACE
        ),
        _binding(f"{NAME}:system:auth-delegator", ("ClusterRole", "system:auth-delegator"), [account]),
        _binding(f"system:{NAME}", ("ClusterRole", f"system:{NAME}"), [account, kubelet_user]),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{NAME}-pki", "namespace": NAMESPACE},
            "stringData": certificates(ca),
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": labels,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "priorityClassName": "system-cluster-critical",
                        "containers": [container],
                        "volumes": [{"name": "pki", "secret": {"secretName": f"{NAME}-pki"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{VERSION}.{GROUP}", "labels": labels},
            "spec": {
                "service": {"name": NAME, "namespace": NAMESPACE, "port": 443},
                "group": GROUP,
                "version": VERSION,
                "caBundle": base64.b64encode(ca.cert).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def install(kubeconfig: Path, context: str, ca: pki.KeyPair) -> None:
    """Apply metrics-server's objects in one cluster."""
    api = config.new_client_from_config(str(kubeconfig), context=context)
    try:
        for document in manifests(ca):
            utils.create_from_dict(api, document, _request_timeout=kwatch.REQUEST_TIMEOUT)
    finally:
        api.close()


def serving_nodes(kubeconfig: Path, context: str) -> tuple[int, int]:
    """(nodes the metrics API has usage for, nodes in the cluster); (0, n) while the API cannot answer."""
    api = config.new_client_from_config(str(kubeconfig), context=context)
    try:
        nodes = len(client.CoreV1Api(api).list_node(_request_timeout=5).items)
        try:
            found = client.CustomObjectsApi(api).list_cluster_custom_object(
                GROUP, VERSION, "nodes", _request_timeout=5
            )
        except (client.ApiException, OSError):
            return 0, nodes
        return len(found.get("items", [])), nodes
    finally:
        api.close()


def _serving_all(kubeconfig: Path, context: str) -> bool:
    found, nodes = serving_nodes(kubeconfig, context)
    return found == nodes > 0


def start(state: FleetState, deadline_s: float) -> None:
    """metrics-server in every cluster; returns once each cluster's metrics API has every node's usage."""
    kubeconfig = state.folder / "kubeconfig"
    ca = pki.KeyPair(
        (state.folder / "pki" / "ca.crt").read_bytes(), (state.folder / "pki" / "ca.key").read_bytes()
    )
    each.at_once(lambda c: install(kubeconfig, c.name, ca), state.clusters)
    checks = {c.name: functools.partial(_serving_all, kubeconfig, c.name) for c in state.clusters}
    unmet = each.unmet_after(checks, deadline_s, interval_s=0.5)
    if unmet:
        raise MetricsServerInstallError(
            f"the metrics API ({VERSION}.{GROUP}) has no usage for every node of {', '.join(unmet)}"
            f" after {deadline_s:.0f} s; logs in {state.folder / 'logs'}"
        )
