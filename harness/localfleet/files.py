"""The fleet folder: its layout, the kubeconfig users drive it with, and the fleet file the harness reads."""

import shutil
from pathlib import Path

import yaml

from harness.localfleet import apps, controlplane, dnsserver, pki, prometheus_install
from harness.localfleet import burst as burst_tier
from harness.localfleet.dnsserver import DnsPlan
from harness.localfleet.state import FleetState

OWNED = (
    "clusters",
    "pki",
    "logs",
    "kubeconfig",
    "fleet.yaml",
    "fleet-postgresql.yaml",
    "backup-store",
    "dns",
    "prometheus-global",
)


def reset(folder: Path) -> None:
    """Remove what an earlier fleet left in folder (only the entries a fleet writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def cluster_files(folder: Path, cluster: str) -> controlplane.ClusterFiles:
    return controlplane.ClusterFiles(folder / "clusters" / cluster, folder / "pki" / "ca.crt")


def write_kubeconfig(state: FleetState) -> Path:
    """One admin context per cluster, named after it, and a read-only `<name>-readonly` context each. Its
    credentials are the fleet's own files, by path (as minikube's kubeconfig): a kubeconfig with the keys
    inline makes the kubernetes client copy them into temporary files, which a process that is killed (the
    fleet's ingresses, GSLB and provisioners, at `down` or a cluster loss) leaves in /tmp.
    `kubectl config view --flatten --minify` makes a self-contained copy of a context."""
    config: dict = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for cluster in state.clusters:
        files = cluster_files(state.folder, cluster.name)
        server = f"https://{state.plan.cluster(cluster.index).control_plane}:{controlplane.APISERVER_PORT}"
        config["clusters"].append(
            {"name": cluster.name, "cluster": {"server": server, "certificate-authority": str(files.ca_cert)}}
        )
        for stem, context in (("admin", cluster.name), ("viewer", f"{cluster.name}-readonly")):
            user = f"{cluster.name}-{stem}"
            config["users"].append(
                {
                    "name": user,
                    "user": {"client-certificate": str(files.cert(stem)), "client-key": str(files.key(stem))},
                }
            )
            config["contexts"].append({"name": context, "context": {"cluster": cluster.name, "user": user}})
    config["current-context"] = state.clusters[0].name
    path = state.folder / "kubeconfig"
    pki.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


def _dns(dns: DnsPlan) -> dict:
    """The sample app's DNS failover as the harness sees it: its global name, the servers to ask, and the
    GSLB's health checks (the bound interval x failure threshold + TTL)."""
    return {
        "name": apps.global_name(),
        "authoritative": f"{dns.authoritative}:{dnsserver.PORT}",
        "resolver": f"{dns.resolver}:{dnsserver.PORT}",
        "health_interval": f"{apps.HEALTH_INTERVAL_S:g}s",
        "failure_threshold": apps.HEALTH_FALL,
    }


def _sample_app(state: FleetState, dns: DnsPlan | None, promql: bool) -> dict:
    """The sample app as the harness sees it: its endpoints and the objectives drills judge it by (with
    promql, its PromQL objectives too)."""
    endpoints = {
        c.name: f"http://{state.plan.cluster(c.index).ingress}:{apps.HTTP_PORT}" for c in state.clusters
    }
    return {
        "name": apps.APP,
        "namespace": apps.APP,
        "workload": f"deployment/{apps.APP}",
        "service": apps.APP,
        "global_endpoint": f"{apps.global_url(state.plan)}/",
        "endpoints": endpoints,
        "sentinels": {  # the sample app keeps sentinels as orders, in streams
            "adapter": "http",
            "write": {"path": "/orders"},
            "read": {"path": "/orders", "items": "orders"},
        },
        "health_path": "/readyz",
        "accepted_statuses": ["2xx"],
        "served_by": {"header": "X-Served-By"},  # every answer of the sample app names its cluster/pod
        "objectives": {"rto": "20s", "rpo": "5s", "availability": 0.8, "latency": "1s"}
        | ({"promql": prometheus_install.OBJECTIVES} if promql else {}),
        "failover": {  # promotion at an epoch above every cluster's fences a returning old primary
            "promote": {"path": "/promote", "body": {"epoch": "$epoch"}, "epoch_path": "/status"},
        },
    } | ({"dns": _dns(dns)} if dns else {})


def write_fleet_file(
    state: FleetState,
    timings: controlplane.LocalTimings,
    velero: dict | None = None,
    dns: DnsPlan | None = None,
    prometheus: dict[str, str] | None = None,
    global_prometheus: str | None = None,
    burst: bool = False,
) -> Path:
    """The fleet file the harness reads for this local fleet (with its `velero` section when Velero runs,
    the app's `dns` when the fleet runs DNS, and each cluster's `prometheus` URL when Prometheus runs; with
    a global Prometheus, its URL and the app's PromQL objectives; with burst, the web tier as an app)."""
    fleet = {
        "name": f"local-{state.index}",
        "kubeconfig": "kubeconfig",
        "clusters": [
            {
                "name": c.name,
                "context": c.name,
                "readonly_context": f"{c.name}-readonly",
                "region": c.region,
                "role": c.role,
                **({"prometheus": {"url": prometheus[c.name]}} if prometheus else {}),
            }
            | ({"environment": c.environment} if c.environment else {})
            for c in state.clusters
        ],
        **({"prometheus": {"url": global_prometheus}} if global_prometheus else {}),
        "apps": [_sample_app(state, dns, global_prometheus is not None)]
        + ([burst_tier.app_entry(state)] if burst else []),
        "infrastructure": {"provider": "localfleet", "settings": {"dir": str(state.folder)}},
        "safety": {"allowlist": [c.name for c in state.clusters]},
        # Every node of the fleet, its load balancer and the runner share this machine's cores while each
        # node declares them all allocatable: 0.3 of the primary's free CPU starved everything (p99 1.2 s
        # on a quiet 2-core runner); 0.1 burns a node's share of the machine and then some.
        "stress": {"cpu": 0.1, "memory": 0.6},
        "local": {"dir": str(state.folder), **timings.as_local_section()},
    }
    absent = [role for role in ("passive", "standby") if role not in {c.role for c in state.clusters}]
    if absent:  # a fleet of fewer clusters lacks these roles by design: the gates say so, not error
        fleet["absent_roles"] = absent
    if velero:
        fleet["velero"] = velero
    path = state.folder / "fleet.yaml"
    header = "# Written by `fleetdrill fleet up`: the fleet file of this local fleet.\n"
    path.write_text(header + yaml.safe_dump(fleet, sort_keys=False))
    return path
