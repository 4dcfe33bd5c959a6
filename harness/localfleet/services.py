"""The fleet's services above the clusters, started by the supervisor: the CRDs of the Gslb and of Chaos
Mesh, then a volume provisioner, the sample app with its Gslb, Chaos Mesh's controller, and an ingress in
every cluster, and the global load balancer."""

import functools
from collections.abc import Callable

from kubernetes import config

from harness.errors import FleetDrillError
from harness.localfleet import apps, each, files, groundtruth, kwatch, netns, network, processes, provisioner
from harness.localfleet.chaos import install as chaos_mesh
from harness.localfleet.dnsserver import DnsPlan
from harness.localfleet.state import ClusterRecord, FleetState, start_process

GLOBAL_KEY = "global/gslb"


def install_crds(state: FleetState) -> None:
    """The fleet's own CRDs (k8gb's Gslb, Chaos Mesh's) in every cluster, Established, before Velero starts:
    its server reads the API's discovery once as it starts, and a CRD made meanwhile can be listed there
    without being in its REST mapper; every backup then ends PartiallyFailed ("no matches for
    chaos-mesh.org/, Resource=podchaos")."""
    kubeconfig = state.folder / "kubeconfig"

    def install(cluster: ClusterRecord) -> None:
        api = config.new_client_from_config(str(kubeconfig), context=cluster.name)
        try:
            kwatch.install_crd(api)
            chaos_mesh.install_crds(api)
        finally:
            api.close()

    each.at_once(install, state.clusters)


def start(
    state: FleetState,
    dns: DnsPlan | None = None,
    metrics: bool = False,
    databases: dict[str, tuple[dict, dict]] | None = None,
) -> None:
    """A volume provisioner, the sample app and its Gslb in every cluster (on the database `databases`
    gives a cluster: its ConfigMap and Secret), an ingress per cluster (serving its Prometheus metrics,
    with metrics), and the global endpoint (publishing the serving clusters in the fleet's DNS, with
    dns)."""
    kubeconfig = state.folder / "kubeconfig"
    backends = {
        c.name: f"http://{state.plan.cluster(c.index).ingress}:{apps.HTTP_PORT}" for c in state.clusters
    }
    primary = next(c.name for c in state.clusters if c.role == "active")
    for cluster in state.clusters:
        nodes_root = files.cluster_files(state.folder, cluster.name).root / "nodes"
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/provisioner",
                cluster.control_plane_ns(state.plan),
                provisioner.argv(kubeconfig, cluster.name, nodes_root),
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / "provisioner.log"),
            ),
        )

    def deploy(cluster: ClusterRecord) -> None:
        provisioner.install_class(kubeconfig, cluster.name)  # the app's claim finds its default class
        peers = {  # a fleet of environments keeps each one's data in it: no replication across them
            c.name: backends[c.name] for c in state.clusters if c.environment == cluster.environment
        }
        database = (databases or {}).get(cluster.name)
        apps.deploy(kubeconfig, cluster.name, cluster.role, peers, primary, database)
        chaos_mesh.install(kubeconfig, cluster.name)  # our controller for Chaos Mesh's CRDs

    each.at_once(deploy, state.clusters)
    for cluster in state.clusters:
        cluster_plan, ingress_ns = state.plan.cluster(cluster.index), f"{cluster.netns_prefix(state.plan)}ing"
        netns.create(ingress_ns)
        address = str(network.attach(state.plan, cluster_plan.segment, ingress_ns, 3))
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/ingress",
                ingress_ns,
                apps.ingress_argv(kubeconfig, cluster.name, address, metrics),
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / "ingress.log"),
                address,
            ),
        )
    segment, global_ns = state.plan.global_segment, f"{network.prefix(state.plan)}global"
    network.add_segment(state.plan, segment)
    netns.create(global_ns)
    address = str(network.attach(state.plan, segment, global_ns, 2))
    published = (dns.zone_file, dns.authoritative) if dns else None
    argv = apps.gslb_argv(kubeconfig, backends, address, state.folder / groundtruth.FILE, published)
    start_process(
        state,
        processes.ProcessSpec(
            GLOBAL_KEY,
            global_ns,
            argv,
            {"PYTHONUNBUFFERED": "1"},
            str(state.folder / "logs" / "global" / "gslb.log"),
            address,
        ),
    )


def wait_serving(state: FleetState, deadline_s: float) -> None:
    """Poll until every cluster's ingress serves the sample app as ready, the active cluster's app takes
    writes (its primary confirmed by a peer), and the global endpoint serves it from the active cluster
    (a passive one answering first, while the load balancer's health checks still settle, would take the
    first writes and refuse them)."""
    primary = next(c for c in state.clusters if c.role == "active")
    ingress = {
        c.name: f"http://{state.plan.cluster(c.index).ingress}:{apps.HTTP_PORT}" for c in state.clusters
    }
    checks: dict[str, Callable[[], bool]] = {
        f"{url}/readyz": functools.partial(apps.serves, f"{url}/readyz") for url in ingress.values()
    }
    checks[f"{ingress[primary.name]}/status (a writable primary)"] = functools.partial(
        apps.takes_writes, f"{ingress[primary.name]}/status"
    )
    checks[f"{apps.global_url(state.plan)}/readyz (from {primary.name})"] = functools.partial(
        apps.serves, f"{apps.global_url(state.plan)}/readyz", primary.name
    )
    unmet = each.unmet_after(checks, deadline_s)
    if unmet:
        raise FleetDrillError(
            f"the sample app does not serve at {', '.join(unmet)} after {deadline_s:.0f} s; "
            f"logs in {state.folder / 'logs'}"
        )
