"""The fleet's services above the clusters: the sample app in every cluster, an ingress per cluster and
the global load balancer, all deployed or configured through the Kubernetes API."""

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client, config, utils

from harness.localfleet import kwatch
from harness.localfleet.addresses import FleetPlan

MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "apps" / "orders.yaml"
APP = "orders"
HTTP_PORT = 80
INGRESS_METRICS_PORT = 10254
"""Where an ingress serves its Prometheus metrics, with `fleet up --prometheus` (ingress-nginx's port)."""
REPLICATION_LAG_S = 0.5
HEALTH_INTERVAL_S = 1.0
HEALTH_FALL = 2
HEALTH_TIMEOUT_S = 1.0
"""How long the GSLB's health check of a cluster may take: the whole interval, as a cloud load balancer's
checks get seconds. At 0.5 s, a cluster alive but slow on a busy runner failed two checks in a row and the
GSLB failed over before any fault (seen in CI: the DNS drill's answer moved 8.8 s before t0)."""
DNS_TTL_S = 5
"""The TTL the sample app's Gslb asks for its global name (k8gb's spec.strategy.dnsTtlSeconds)."""


def settings(cluster: str, role: str, peers: dict[str, str]) -> dict:
    """The per-cluster ConfigMap of the sample app."""
    return {
        "metadata": {"name": f"{APP}-settings", "namespace": APP},
        "data": {
            "ORDERS_CLUSTER": cluster,
            "ORDERS_ROLE": "primary" if role == "active" else "replica",
            "ORDERS_PEERS": ",".join(f"{name}={url}" for name, url in peers.items() if name != cluster),
            "ORDERS_REPLICATION_LAG": str(REPLICATION_LAG_S),
        },
    }


def gslb(primary: str) -> dict:
    """The k8gb-style Gslb object: fail over away from the primary cluster."""
    rule = {
        "host": global_name(),
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": APP, "port": {"name": "http"}}},
                }
            ]
        },
    }
    return {
        "apiVersion": f"{kwatch.GROUP}/{kwatch.VERSION}",
        "kind": "Gslb",
        "metadata": {"name": APP, "namespace": APP},
        "spec": {
            "ingress": {"rules": [rule]},
            "strategy": {"type": "failover", "primaryGeoTag": primary, "dnsTtlSeconds": DNS_TTL_S},
        },
    }


def deploy(
    kubeconfig: Path,
    context: str,
    role: str,
    peers: dict[str, str],
    primary: str,
    database: tuple[dict, dict] | None = None,
) -> None:
    """Apply the sample app's manifest and settings and its Gslb (whose CRD services.install_crds made) in one
    cluster; with a database (the ConfigMap and Secret orders-database), those before its pod starts."""
    api = config.new_client_from_config(str(kubeconfig), context=context)
    try:
        timeout = kwatch.REQUEST_TIMEOUT
        core = client.CoreV1Api(api)
        namespace, *documents = yaml.safe_load_all(MANIFEST.read_text())
        utils.create_from_dict(api, namespace, _request_timeout=timeout)
        if database:
            core.create_namespaced_config_map(APP, database[0], _request_timeout=timeout)
            core.create_namespaced_secret(APP, database[1], _request_timeout=timeout)
        for document in documents:
            utils.create_from_dict(api, document, _request_timeout=timeout)
        core.create_namespaced_config_map(APP, settings(context, role, peers), _request_timeout=timeout)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            kwatch.GROUP, kwatch.VERSION, APP, kwatch.PLURAL, gslb(primary), _request_timeout=timeout
        )
    finally:
        api.close()


def global_url(plan: FleetPlan) -> str:
    """The fleet's global endpoint."""
    return f"http://{plan.global_segment.host(2)}:{HTTP_PORT}"


def ingress_argv(
    kubeconfig: Path,
    context: str,
    address: str,
    metrics: bool = False,
    port: int = HTTP_PORT,
    service: tuple[str, str] = (APP, APP),
) -> list[str]:
    """An ingress on `address`:`port` for `service` (namespace, name), serving its metrics when asked."""
    return [
        sys.executable,
        "-m",
        "harness.localfleet.ingress",
        f"--kubeconfig={kubeconfig}",
        f"--context={context}",
        f"--listen={address}:{port}",
        f"--namespace={service[0]}",
        f"--service={service[1]}",
        *([f"--metrics-listen={address}:{INGRESS_METRICS_PORT}"] if metrics else []),
    ]


def global_name() -> str:
    """The sample app's global name (its Gslb's host), which a fleet with DNS publishes."""
    return f"{APP}.fleet.local"


def gslb_argv(
    kubeconfig: Path,
    backends: dict[str, str],
    address: str,
    ground_truth: Path,
    dns: tuple[Path, str] | None = None,
    app: str = APP,
    port: int = HTTP_PORT,
) -> list[str]:
    """The command line of the GSLB of `app` (its Gslb and Service share its name and namespace) on
    `port`; with dns (zone file, authoritative server's address) it publishes DNS."""
    published = [f"--dns-zone-file={dns[0]}", f"--dns-server={dns[1]}"] if dns else []
    return [
        sys.executable,
        "-m",
        "harness.localfleet.gslb",
        f"--kubeconfig={kubeconfig}",
        f"--contexts={','.join(backends)}",
        f"--listen={address}:{port}",
        f"--namespace={app}",
        f"--name={app}",
        f"--backends={','.join(f'{c}={u}' for c, u in backends.items())}",
        f"--interval={HEALTH_INTERVAL_S}",
        f"--fall={HEALTH_FALL}",
        f"--timeout={HEALTH_TIMEOUT_S}",
        f"--ground-truth={ground_truth}",
        *published,
    ]


def serves(url: str, by: str | None = None) -> bool:
    """The URL answers 200 (the app is ready behind it), from cluster `by` when given (X-Served-By)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            served_by = response.headers.get("X-Served-By") or ""
            return response.status == 200 and (by is None or served_by.startswith(f"{by}/"))
    except (urllib.error.URLError, OSError):
        return False


def takes_writes(url: str) -> bool:
    """The sample app's /status at the URL says it is a primary that is not fenced: at start a primary
    refuses writes until a peer has answered its status poll, which can come after /readyz answers."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            status = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("role") == "primary" and status.get("fenced") is False
