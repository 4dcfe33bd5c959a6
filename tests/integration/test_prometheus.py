"""Prometheus in the local fleet (`fleet up --prometheus`), as users run it: one per cluster, a pod of the
prom/prometheus image deployed with a ServiceAccount and a ClusterRole, scraping through Kubernetes
service discovery; fleet.yaml names each cluster's Prometheus, reached at the cluster's ingress address."""

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import Fleet, load_fleet
from tests.conftest import started_fleet, wait_for

JOBS = {  # job -> how many targets each cluster has (3 nodes)
    "kubernetes-apiservers": 1,
    "kubernetes-nodes": 3,
    "kubernetes-nodes-resource": 3,
    "kube-proxy": 3,
    "kubernetes-service-endpoints": 1,  # the ingress
    "kubernetes-pods": 1,  # the sample app
}
SCRAPES_S = 60  # the API server is scraped every 15 s, the rest every 5 s; the first scrape of each waits


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Fleet]:
    with started_fleet(tmp_path_factory, "prometheus", clusters=2, prometheus=True) as folder:
        yield load_fleet(Path(folder) / "fleet.yaml")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _query(base: str, promql: str) -> list[dict]:
    answer = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _targets_up(base: str) -> dict[str, list[str]] | None:
    """Up targets by job, once every job has all its targets up (None before)."""
    up: dict[str, list[str]] = {}
    for target in _get(f"{base}/api/v1/targets?state=active")["data"]["activeTargets"]:
        if target["health"] == "up":
            up.setdefault(target["labels"]["job"], []).append(target["scrapeUrl"])
    return up if all(len(up.get(job, [])) == count for job, count in JOBS.items()) else None


def test_every_cluster_scrapes_its_api_server_nodes_ingress_and_app_through_discovery(fleet: Fleet) -> None:
    assert all(c.prometheus for c in fleet.clusters), "fleet.yaml names each cluster's Prometheus"
    for cluster in fleet.clusters:
        up = wait_for(lambda c=cluster: _targets_up(c.prometheus.url), SCRAPES_S, f"{cluster.name}'s targets")
        assert all("/proxy/metrics/resource" in url for url in up["kubernetes-nodes-resource"])
        assert up["kubernetes-pods"][0].endswith(":8080/metrics")
        assert up["kubernetes-service-endpoints"][0].endswith(":10254/metrics")


def test_the_sample_apps_request_count_rises_after_requests(fleet: Fleet) -> None:
    cluster = fleet.clusters[0]
    app = fleet.apps[0]
    count = 'sum(http_requests_total{namespace="orders",status="404"}) or vector(0)'
    before = float(_query(cluster.prometheus.url, count)[0]["value"][1])
    for seq in range(5):  # 404s: no probe, poll or health check asks for a missing order
        request = urllib.request.Request(f"{app.endpoints[cluster.name]}/orders/{10**9 + seq}")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(request, timeout=10)
    wait_for(
        lambda: float(_query(cluster.prometheus.url, count)[0]["value"][1]) >= before + 5,
        SCRAPES_S,
        "Prometheus to see the 5 requests",
    )


def test_the_sample_apps_pod_cpu_and_memory_come_from_the_node_agents(fleet: Fleet) -> None:
    for cluster in fleet.clusters:
        cpu = wait_for(
            lambda c=cluster: _query(c.prometheus.url, 'pod_cpu_usage_seconds_total{namespace="orders"}'),
            SCRAPES_S,
            f"the sample app's pod CPU in {cluster.name}",
        )
        assert cpu[0]["metric"]["pod"].startswith("orders-") and float(cpu[0]["value"][1]) > 0
        memory = _query(cluster.prometheus.url, 'container_memory_working_set_bytes{container="orders"}')
        assert memory and float(memory[0]["value"][1]) > 0


def test_the_global_prometheus_federates_every_clusters_app_and_ingress(fleet: Fleet) -> None:
    """fleet.yaml names the global Prometheus and the app's PromQL objectives, asked of it; `fleet up`
    returned once they had data. Its series keep each cluster's name, and it takes only what it asks for."""
    assert fleet.prometheus is not None, "fleet.yaml names the fleet-wide Prometheus"
    objectives = fleet.app("orders").objectives.promql
    assert {o.name for o in objectives} == {"read-5xx", "app-p99"} and all(
        o.scope == "fleet" for o in objectives
    )
    for objective in objectives:
        assert _query(fleet.prometheus.url, objective.query), f"{objective.query} has data"
    names = {c.name for c in fleet.clusters}
    for metric in ("ingress_requests_total", "http_requests_total", "http_request_duration_seconds_bucket"):
        found = {
            s["metric"]["cluster"] for s in _query(fleet.prometheus.url, f"count by (cluster) ({metric})")
        }
        assert found == names, f"{metric} from every cluster"
    assert not _query(fleet.prometheus.url, "apiserver_request_total"), "the control plane's series stay home"
