"""The burst tier (`fleet up --burst`): a stateless web tier of the sample app's image in every cluster,
scaled out by the real HPA controller on CPU (metrics-server), behind an ingress per cluster and a global
endpoint of its own: a GSLB whose Gslb has the overflow strategy (the primary serves until full, then the
excess spills to the next healthy cluster). Each pod requests so much CPU that the HPA's maximum is more
than a cluster's three nodes hold, so under enough load pods go Pending and the cluster is full."""

import functools
from collections.abc import Callable
from pathlib import Path

from kubernetes import client, config, utils

from harness.errors import FleetDrillError
from harness.localfleet import apps, each, kwatch, network, processes
from harness.localfleet.addresses import FleetPlan
from harness.localfleet.state import FleetState, start_process

APP = "web"
PORT = 81
"""The web tier's port on each cluster's ingress address and on the global address."""
CPU_REQUEST_M = 900
"""Each pod's CPU request in millicores: a node of two cores holds two at most."""
TARGET_UTILIZATION = 2
"""The HPA's CPU target, percent of the request (18m): low enough that the load a busy 2-core runner can
drive wants more pods than fit (at 5%, 6 pods at some 45m each filled a loaded runner's cluster in 143 s,
or never)."""
MAX_REPLICAS = 12
"""More than a cluster's three nodes hold: the HPA keeps adding pods that stay Pending."""
CAPACITY_PER_ENDPOINT = 2
"""The Gslb's spec.strategy.capacityPerEndpoint: requests in flight one ready web pod takes."""
GROUND_TRUTH = "ground-truth-web.jsonl"
"""The web GSLB's own ground truth (the sample app's drills read the other)."""


def manifests(cluster: str, primary: str) -> list[dict]:
    """The web tier in one cluster: namespace, Deployment, Service, HPA and its Gslb (overflow)."""
    labels = {"app": APP}
    env = [{"name": "ORDERS_CLUSTER", "value": cluster}, {"name": "ORDERS_DATA_DIR", "value": "/var/lib/web"}]
    container = {
        "name": APP,
        "image": "fleetdrill.io/orders:1",
        "env": env,
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": f"{CPU_REQUEST_M}m", "memory": "32Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/web"}],
    }
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [container], "volumes": [{"name": "data", "emptyDir": {}}]},
    }
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0}, "scaleDown": {"stabilizationWindowSeconds": 0}}
    target = {"type": "Utilization", "averageUtilization": TARGET_UTILIZATION}
    meta = {"name": APP, "namespace": APP}
    gslb = apps.gslb(primary) | {"metadata": meta}
    gslb["spec"]["ingress"]["rules"][0]["host"] = f"{APP}.fleet.local"
    gslb["spec"]["ingress"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = APP
    gslb["spec"]["strategy"] |= {"type": "overflow", "capacityPerEndpoint": CAPACITY_PER_ENDPOINT}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                "minReplicas": 1,
                "maxReplicas": MAX_REPLICAS,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
                "behavior": behavior,
            },
        },
        gslb,
    ]


def _deploy(kubeconfig: Path, context: str, primary: str) -> None:
    api = config.new_client_from_config(str(kubeconfig), context=context)
    try:
        *objects, gslb = manifests(context, primary)
        for document in objects:
            utils.create_from_dict(api, document)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            kwatch.GROUP, kwatch.VERSION, APP, kwatch.PLURAL, gslb
        )
    finally:
        api.close()


def global_url(plan: FleetPlan) -> str:
    """The web tier's global endpoint."""
    return f"http://{plan.global_segment.host(2)}:{PORT}"


def endpoints(state: FleetState) -> dict[str, str]:
    """Each cluster's ingress for the web tier."""
    return {c.name: f"http://{state.plan.cluster(c.index).ingress}:{PORT}" for c in state.clusters}


def start(state: FleetState) -> None:
    """The web tier in every cluster (after services.start: the Gslb CRD and the ingress namespaces are
    there), an ingress for it per cluster and its overflow GSLB on the global address."""
    kubeconfig = state.folder / "kubeconfig"
    primary = next(c.name for c in state.clusters if c.role == "active")
    each.at_once(lambda cluster: _deploy(kubeconfig, cluster.name, primary), state.clusters)
    for cluster in state.clusters:
        address = str(state.plan.cluster(cluster.index).ingress)
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/{APP}-ingress",
                f"{cluster.netns_prefix(state.plan)}ing",
                apps.ingress_argv(kubeconfig, cluster.name, address, port=PORT, service=(APP, APP)),
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / f"{APP}-ingress.log"),
                address,
            ),
        )
    address = str(state.plan.global_segment.host(2))
    argv = apps.gslb_argv(
        kubeconfig, endpoints(state), address, state.folder / GROUND_TRUTH, app=APP, port=PORT
    )
    start_process(
        state,
        processes.ProcessSpec(
            f"global/{APP}-gslb",
            f"{network.prefix(state.plan)}global",
            argv,
            {"PYTHONUNBUFFERED": "1"},
            str(state.folder / "logs" / "global" / f"{APP}-gslb.log"),
            address,
        ),
    )


def wait_serving(state: FleetState, deadline_s: float) -> None:
    """Poll until every cluster's web ingress and the global endpoint (from the primary) serve /readyz."""
    primary = next(c.name for c in state.clusters if c.role == "active")
    checks: dict[str, Callable[[], bool]] = {
        f"{url}/readyz": functools.partial(apps.serves, f"{url}/readyz") for url in endpoints(state).values()
    }
    url = f"{global_url(state.plan)}/readyz"
    checks[f"{url} (from {primary})"] = functools.partial(apps.serves, url, primary)
    unmet = each.unmet_after(checks, deadline_s)
    if unmet:
        raise FleetDrillError(
            f"the web tier does not serve at {', '.join(unmet)} after {deadline_s:.0f} s; "
            f"logs in {state.folder / 'logs'}"
        )


def app_entry(state: FleetState) -> dict:
    """The web tier as the harness sees it: an app of its own, with its endpoints, global endpoint and the
    burst drill's objectives."""
    return {
        "name": APP,
        "namespace": APP,
        "workload": f"deployment/{APP}",
        "service": APP,
        "global_endpoint": f"{global_url(state.plan)}/",
        "endpoints": endpoints(state),
        "health_path": "/readyz",
        "accepted_statuses": ["2xx"],
        "served_by": {"header": "X-Served-By"},
        "objectives": {"availability": 0.95, "latency": "2s", "spill": "5s", "spill_return": "10s"},
    }
