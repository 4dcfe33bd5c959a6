"""Prometheus in every cluster (`fleet up --prometheus`), deployed as users deploy it: a Deployment of the
prom/prometheus image (the node agent's catalogue runs the Prometheus built from its Go module) with a
ServiceAccount, a ClusterRole and its binding for discovery, the config and its alerting rules in a
ConfigMap and a Service.

It scrapes through Kubernetes service discovery with its in-cluster config (the service account's token
and CA, KUBERNETES_SERVICE_HOST/PORT): the API server (the `kubernetes` Service's EndpointSlice), every
node's kubelet /metrics and /metrics/resource (through the API server's nodes/proxy, as the API server's
client, in system:masters: the node agents admit it without asking the API server), every node's
kube-proxy (its metrics port on the node's InternalIP), the ingress (a Service without selector whose
EndpointSlice names the ingress's metrics address: it runs outside the pods) and every pod annotated
prometheus.io/scrape (the sample app). The fleet has no cluster DNS, so the config names the API server
by the `kubernetes` Service's cluster IP where users write kubernetes.default.svc.

From the machine, each Prometheus is reached as the sample app is: through the cluster's ingress
address, on port 9090 (a second ingress process there proxies to the Service).

Beside them, a global Prometheus federates the clusters, as users give a fleet one view (federation, or
Thanos' querier): the same built server the node agent's catalogue runs for prom/prometheus, outside every
cluster (its own namespace on the global segment, as the load balancer), scraping each cluster's
/federate through its ingress. A drill that loses or cuts off a cluster loses that cluster's Prometheus
with it; the global one keeps the others' series (the lost cluster's go stale), so a fleet-wide objective
still has data where the fleet still serves.
"""

import functools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client, config, utils

from harness.errors import FleetDrillError
from harness.localfleet import apps, each, kwatch, netns, network, processes
from harness.localfleet.nodes import PROXY_METRICS_PORT
from harness.localfleet.state import FleetState, start_process

NAMESPACE, NAME = "monitoring", "prometheus"
IMAGE = "prom/prometheus:v3.16.0"
"""The release gobuild/prometheus pins (module version v0.316.0)."""
PORT = 9090
GLOBAL_HOST = 6
"""The global Prometheus' host on the global segment (the load balancer is 2, CoreDNS 4 and 5)."""
FEDERATED = '{__name__=~"ingress_.*|http_request.*|orders_.*"}'
"""What the global Prometheus takes from each cluster's: the app's and the ingress's series, not the
control plane's (federating everything is what the Prometheus docs warn against)."""
SCRAPE_INTERVAL_S = 5
"""Short, so a drill's window holds enough samples; the API server's large /metrics every 15 s."""
FEDERATE_INTERVAL_S = 1
"""How often the global Prometheus federates: a drill's PromQL objectives wait for one federation after
the clusters' Prometheuses hold the window's data (harness.promsettle), so up to this long; the series it
takes are few."""
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
INGRESS_SERVICE = "ingress-metrics"
CONFIG_DIR = "/etc/prometheus"
RULES = {
    "groups": [
        {
            "name": "ingress",
            "rules": [
                {
                    "alert": "IngressNoReadyEndpoints",
                    "expr": "ingress_ready_endpoints == 0",
                    "labels": {"severity": "critical"},
                    "annotations": {
                        "summary": "The ingress has no ready endpoint for {{ $labels.upstream }}"
                    },
                }
            ],
        }
    ]
}
"""Alerting rules (rules.yml beside prometheus.yml), for drills to abort on (safety.abort.alerts)."""


RATE = "15s"
"""Three scrapes: two samples at the end of a drill's window, which the global Prometheus sees up to two
scrapes late. No longer: a rate() carries errors for its range, and with 30 s the 503s a cluster back from
a loss answered the load balancer's health checks, before its app was ready, were in the next drill's
window (0.076 before its fault)."""
READS = f'upstream="{apps.APP}/{apps.APP}",method="GET"'
OBJECTIVES = [
    {
        "name": "read-5xx",
        "query": f'max(sum by (cluster) (rate(ingress_requests_total{{{READS},status=~"5.."}}[{RATE}]))'
        f" / sum by (cluster) (rate(ingress_requests_total{{{READS}}}[{RATE}])))",
        "comparison": "<",
        "bound": 0.05,
        "slo_target": "99%",
    },
    {
        "name": "app-p99",
        "query": "max(histogram_quantile(0.99, sum by (cluster, le) "
        f'(rate(http_request_duration_seconds_bucket{{namespace="{apps.APP}"}}[{RATE}]))))',
        "comparison": "<",
        "bound": 1.0,
    },
]
"""The sample app's PromQL objectives in the fleet file, asked of the global Prometheus (scope: fleet):
the worst 5xx ratio of reads any cluster's ingress answered (the app's errors and the ingress's own 503s
when no pod is ready; writes a cluster refuses while it is not the primary are the sentinels' to count,
and RPO's to judge) and the worst cluster's p99 as the app measures it. A cluster the drill loses or cuts
off drops out of the max (its series go stale): it serves nothing to judge; every cluster gone is no
data, an error."""


class PrometheusInstallError(FleetDrillError):
    """Prometheus could not be installed or did not become ready."""


def _in_cluster(job: str, **rest: object) -> dict:
    """A scrape job over HTTPS with the service account's token and the cluster's CA."""
    return {
        "job_name": job,
        "scheme": "https",
        "tls_config": {"ca_file": f"{SERVICE_ACCOUNT_DIR}/ca.crt"},
        "authorization": {"credentials_file": f"{SERVICE_ACCOUNT_DIR}/token"},
        **rest,
    }


def _node_proxy(job: str, api_server: str, path: str) -> dict:
    """The kubelet's `path` on every node, through the API server's nodes/proxy."""
    return _in_cluster(
        job,
        kubernetes_sd_configs=[{"role": "node"}],
        relabel_configs=[
            {"action": "labelmap", "regex": "__meta_kubernetes_node_label_(.+)"},
            {"target_label": "__address__", "replacement": api_server},
            {
                "source_labels": ["__meta_kubernetes_node_name"],
                "regex": "(.+)",
                "target_label": "__metrics_path__",
                "replacement": f"/api/v1/nodes/${{1}}/proxy{path}",
            },
        ],
    )


def scrape_config(cluster: str, api_server: str) -> dict:
    """prometheus.yml for one cluster; `api_server` is the `kubernetes` Service's HOST:PORT."""
    annotated = [
        {
            "source_labels": ["__meta_kubernetes_service_annotation_prometheus_io_scrape"],
            "action": "keep",
            "regex": "true",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
    ]
    pods = [
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "action": "keep",
            "regex": "true",
        },
        {
            "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_label_app"], "target_label": "app"},
    ]
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            "external_labels": {"cluster": cluster},
        },
        "rule_files": [f"{CONFIG_DIR}/rules.yml"],
        "scrape_configs": [
            _in_cluster(
                "kubernetes-apiservers",
                scrape_interval="15s",
                kubernetes_sd_configs=[{"role": "endpointslice", "namespaces": {"names": ["default"]}}],
                relabel_configs=[
                    {
                        "source_labels": [
                            "__meta_kubernetes_service_name",
                            "__meta_kubernetes_endpointslice_port_name",
                        ],
                        "action": "keep",
                        "regex": "kubernetes;https",
                    }
                ],
            ),
            _node_proxy("kubernetes-nodes", api_server, "/metrics"),
            _node_proxy("kubernetes-nodes-resource", api_server, "/metrics/resource"),
            {
                "job_name": "kube-proxy",
                "kubernetes_sd_configs": [{"role": "node"}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_node_address_InternalIP"],
                        "target_label": "__address__",
                        "replacement": f"${{1}}:{PROXY_METRICS_PORT}",
                    },
                    {"source_labels": ["__meta_kubernetes_node_name"], "target_label": "node"},
                ],
            },
            {
                "job_name": "kubernetes-service-endpoints",
                "kubernetes_sd_configs": [{"role": "endpointslice"}],
                "relabel_configs": annotated,
            },
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": pods,
            },
        ],
    }


def manifests(cluster: str, api_server: str, ingress_address: str) -> list[dict]:
    """Prometheus' objects in one cluster, and the ingress's metrics Service with its EndpointSlice."""
    labels = {"app": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    container = {
        "name": NAME,
        "image": IMAGE,
        "args": [
            f"--config.file={CONFIG_DIR}/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=1d",
        ],
        "ports": [{"name": "web", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR},
            {"name": "storage", "mountPath": "/prometheus"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": NAME}},
                        {"name": "storage", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    rules = [
        {
            "apiGroups": [""],
            "resources": ["nodes", "nodes/proxy", "nodes/metrics", "services", "endpoints", "pods"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {"nonResourceURLs": ["/metrics", "/metrics/*"], "verbs": ["get"]},
    ]
    ingress_meta = {
        "name": INGRESS_SERVICE,
        "namespace": NAMESPACE,
        "annotations": {"prometheus.io/scrape": "true"},
    }
    ingress_port = {"name": "metrics", "port": apps.INGRESS_METRICS_PORT, "protocol": "TCP"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": {
                "prometheus.yml": yaml.safe_dump(scrape_config(cluster, api_server), sort_keys=False),
                "rules.yml": yaml.safe_dump(RULES, sort_keys=False),
            },
        },
        deployment,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": "web", "port": PORT, "targetPort": "web"}]},
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": ingress_meta, "spec": {"ports": [ingress_port]}},
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": INGRESS_SERVICE,
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": INGRESS_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "localfleet.fleetdrill.io",
                },
            },
            "addressType": "IPv4",
            "ports": [ingress_port],
            "endpoints": [{"addresses": [ingress_address], "conditions": {"ready": True}}],
        },
    ]


def install(kubeconfig: Path, context: str, ingress_address: str) -> None:
    """Apply Prometheus' objects in one cluster."""
    api = config.new_client_from_config(str(kubeconfig), context=context)
    try:
        kubernetes = client.CoreV1Api(api).read_namespaced_service(
            "kubernetes", "default", _request_timeout=kwatch.REQUEST_TIMEOUT
        )
        api_server = f"{kubernetes.spec.cluster_ip}:{kubernetes.spec.ports[0].port}"
        for document in manifests(context, api_server, ingress_address):
            utils.create_from_dict(api, document, _request_timeout=kwatch.REQUEST_TIMEOUT)
    finally:
        api.close()


def url(state: FleetState, cluster_index: int) -> str:
    """Where the machine reaches a cluster's Prometheus: its ingress address, port 9090."""
    return f"http://{state.plan.cluster(cluster_index).ingress}:{PORT}"


def start(state: FleetState, deadline_s: float) -> dict[str, str]:
    """Prometheus in every cluster, its port on every ingress address; once each answers ready, the URL
    of each cluster's Prometheus."""
    kubeconfig = state.folder / "kubeconfig"
    each.at_once(
        lambda c: install(kubeconfig, c.name, str(state.plan.cluster(c.index).ingress)), state.clusters
    )
    for cluster in state.clusters:
        address = str(state.plan.cluster(cluster.index).ingress)
        argv = apps.ingress_argv(kubeconfig, cluster.name, address, port=PORT, service=(NAMESPACE, NAME))
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/prometheus-ingress",
                f"{cluster.netns_prefix(state.plan)}ing",
                argv,
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / "prometheus-ingress.log"),
                address,
            ),
        )
    urls = {c.name: url(state, c.index) for c in state.clusters}
    unmet = each.unmet_after(
        {base: functools.partial(_ready, base) for base in urls.values()}, deadline_s, 0.2
    )
    if unmet:
        raise PrometheusInstallError(
            f"Prometheus is not ready at {', '.join(unmet)} after {deadline_s:.0f} s; "
            f"logs in {state.folder / 'logs'}"
        )
    return urls


def federation_config(clusters: dict[str, str]) -> dict:
    """prometheus.yml of the global Prometheus: each cluster's /federate (HOST:PORT by cluster name); the
    clusters' series keep their `cluster` label (each cluster's external label)."""
    return {
        "global": {
            "scrape_interval": f"{FEDERATE_INTERVAL_S}s",
            "evaluation_interval": f"{FEDERATE_INTERVAL_S}s",
        },
        "scrape_configs": [
            {
                "job_name": "federate",
                "honor_labels": True,
                "metrics_path": "/federate",
                "params": {"match[]": [FEDERATED]},
                "static_configs": [{"targets": [target]} for target in clusters.values()],
            }
        ],
    }


def global_url(state: FleetState) -> str:
    return f"http://{state.plan.global_segment.host(GLOBAL_HOST)}:{PORT}"


def start_global(state: FleetState, server: Path, deadline_s: float) -> str:
    """The global Prometheus federating every cluster's; once it answers ready, its URL."""
    folder = state.folder / "prometheus-global"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    targets = {c.name: f"{state.plan.cluster(c.index).ingress}:{PORT}" for c in state.clusters}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(federation_config(targets), sort_keys=False))
    namespace = f"{network.prefix(state.plan)}prom"
    netns.create(namespace)
    address = str(network.attach(state.plan, state.plan.global_segment, namespace, GLOBAL_HOST))
    argv = [
        str(server),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={address}:{PORT}",
    ]
    log = str(state.folder / "logs" / "global" / "prometheus.log")
    start_process(
        state, processes.ProcessSpec("global/prometheus", namespace, argv, {"GOGC": "50"}, log, address)
    )
    base = global_url(state)
    deadline = time.monotonic() + deadline_s
    while not _ready(base):
        if time.monotonic() > deadline:
            raise PrometheusInstallError(
                f"the global Prometheus is not ready at {base} after {deadline_s:.0f} s"
            )
        time.sleep(0.2)
    return base


def wait_data(base: str, queries: list[str], deadline_s: float) -> None:
    """Poll until every query has a series at `base` (a drill's window must not start before its objectives
    have data: that is an error)."""
    waiting, deadline = list(queries), time.monotonic() + deadline_s
    while waiting:
        waiting = [query for query in waiting if not _has_data(base, query)]
        if waiting and time.monotonic() > deadline:
            raise PrometheusInstallError(f"{base} has no data for {waiting[0]} after {deadline_s:.0f} s")
        if waiting:
            time.sleep(0.5)


def _has_data(base: str, query: str) -> bool:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(json.load(response)["data"]["result"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
