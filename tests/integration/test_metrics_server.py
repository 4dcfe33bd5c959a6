"""metrics-server in the local fleet (`fleet up --metrics-server`): the real server, built from its Go
module, registered with the API server's aggregation layer as v1beta1.metrics.k8s.io and scraping each
node agent's /metrics/resource, so `kubectl top` and the HPA controller read real usage."""

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from harness.config import load_fleet
from harness.localfleet import build
from tests.conftest import started_fleet, wait_for

Kubectl = Callable[..., subprocess.CompletedProcess]
NODES = 3
BUSY_MILLICORES = 300  # a stress-ng worker spinning on one CPU shows far more than this


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "metrics", clusters=2, metrics_server=True) as folder:
        yield folder


@pytest.fixture(scope="module")
def contexts(fleet_dir: Path) -> list[str]:
    return [cluster.name for cluster in load_fleet(fleet_dir / "fleet.yaml").clusters]


@pytest.fixture(scope="module")
def kubectl(fleet_dir: Path) -> Kubectl:
    binary = build.ensure_binaries()["kubectl"]

    def run(
        context: str, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        argv = [str(binary), "--kubeconfig", str(fleet_dir / "kubeconfig"), "--context", context, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    return run


def _millicores(quantity: str) -> float:
    """A CPU quantity as metrics-server writes it (nanocores `123n`, micro `u`, milli `m` or cores)."""
    scale = {"n": 1e-6, "u": 1e-3, "m": 1.0}
    return float(quantity[:-1]) * scale[quantity[-1]] if quantity[-1] in scale else float(quantity) * 1000


def test_kubectl_top_nodes_shows_every_node_of_every_cluster(kubectl: Kubectl, contexts: list[str]) -> None:
    for context in contexts:
        service = json.loads(
            kubectl(context, "get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json").stdout
        )
        available = [c for c in service["status"]["conditions"] if c["type"] == "Available"]
        assert available and available[0]["status"] == "True", available
        rows = kubectl(context, "top", "nodes", "--no-headers").stdout.splitlines()
        assert len(rows) == NODES, rows
        assert all(row.split()[1].endswith("m") and row.split()[3].endswith("Mi") for row in rows), rows


def test_the_metrics_api_sees_a_busy_pods_cpu(kubectl: Kubectl, contexts: list[str]) -> None:
    context = contexts[0]
    busy = {"name": "busy", "image": "fleetdrill.io/stress", "args": ["--cpu", "1", "--timeout", "180s"]}
    busy["resources"] = {"requests": {"cpu": "100m"}}
    overrides = json.dumps({"spec": {"containers": [busy]}})
    kubectl(
        context, "run", "busy", "--image=fleetdrill.io/stress", "--restart=Never", "--overrides", overrides
    )
    try:

        def usage() -> float:
            done = kubectl(
                context,
                "get",
                "--raw",
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy",
                check=False,
            )
            if done.returncode != 0:
                return 0.0
            containers = json.loads(done.stdout)["containers"]
            return sum(_millicores(c["usage"]["cpu"]) for c in containers)

        busy = wait_for(lambda: usage() > BUSY_MILLICORES, 90, "the busy pod's CPU in the metrics API", 1.0)
        assert busy
        rows = kubectl(context, "top", "pods", "--no-headers").stdout.splitlines()
        assert any(row.split()[0] == "busy" for row in rows), rows
    finally:
        kubectl(context, "delete", "pod", "busy", "--wait=false", check=False)


LOAD = """
import threading, urllib.request
def hit():
    while True:
        try:
            urllib.request.urlopen("http://%s/healthz", timeout=2).read()
        except OSError:
            pass
for _ in range(4):
    threading.Thread(target=hit).start()
"""
"""A load generator as the HPA walkthrough's busybox loop: requests to the Service's cluster IP, as fast
as they come back (a pod running this machine's Python: the catalogue runs a command it finds here)."""


def _web(replicas_max: int) -> list[dict]:
    """A stateless web tier of the sample app's image (a replica with no peers serving reads), its Service
    and an HPA on CPU (50 % of a 50m request; scale-down without stabilization, for the return)."""
    labels = {"app": "web"}
    env = [
        {"name": "ORDERS_CLUSTER", "value": "web"},
        {"name": "ORDERS_DATA_DIR", "value": "/var/lib/orders"},
    ]
    container = {
        "name": "web",
        "image": "fleetdrill.io/orders:1",
        "env": env,
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/orders"}],
    }
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [container], "volumes": [{"name": "data", "emptyDir": {}}]},
    }
    behavior = {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {"stabilizationWindowSeconds": 0},
    }
    target = {"type": "Utilization", "averageUtilization": 50}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hpa"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "hpa"},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "hpa"},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": replicas_max,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
                "behavior": behavior,
            },
        },
    ]


def test_the_hpa_controller_scales_a_deployment_out_on_cpu_under_load_and_back(
    kubectl: Kubectl, contexts: list[str]
) -> None:
    context = contexts[-1]
    kubectl(context, "apply", "-f", "-", stdin=yaml.safe_dump_all(_web(replicas_max=3)))
    try:
        kubectl(context, "rollout", "status", "deployment/web", "-n", "hpa", "--timeout=90s")

        def hpa() -> dict:
            return json.loads(kubectl(context, "get", "hpa", "web", "-n", "hpa", "-o", "json").stdout)

        def measured() -> bool:
            metrics = hpa()["status"].get("currentMetrics") or []
            return any(
                m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
                for m in metrics
            )

        wait_for(measured, 90, "the HPA reading the web tier's CPU from the metrics API", 1.0)
        address = kubectl(
            context, "get", "service", "web", "-n", "hpa", "-o", "jsonpath={.spec.clusterIP}"
        ).stdout
        load = {"name": "load", "image": "debian", "command": [sys.executable, "-c", LOAD % address]}
        overrides = json.dumps({"spec": {"containers": [load]}})
        kubectl(
            context, "run", "load", "-n", "hpa", "--image=debian", "--restart=Never", "--overrides", overrides
        )

        def ready_replicas() -> int:
            found = kubectl(
                context, "get", "deployment", "web", "-n", "hpa", "-o", "jsonpath={.status.readyReplicas}"
            )
            return int(found.stdout or 0)

        wait_for(lambda: ready_replicas() > 1, 150, "the HPA scaling the web tier out under load", 1.0)
        assert hpa()["status"]["desiredReplicas"] > 1
        kubectl(context, "delete", "pod", "load", "-n", "hpa", "--wait=false")
        wait_for(
            lambda: hpa()["status"]["desiredReplicas"] == 1,
            150,
            "the HPA scaling back in once load stops",
            1.0,
        )
    finally:
        kubectl(context, "delete", "namespace", "hpa", "--wait=false", check=False)
