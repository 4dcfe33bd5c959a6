"""The supervisor of a local fleet: bring it up, report on it, lose and return clusters, take it down.

Everything a fleet starts runs inside the fleet's own network namespaces, so `down` finds every
process through them, even after the fleet folder's state was lost or `up` was killed half-way.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import (
    apps,
    build,
    controlplane,
    dnsserver,
    files,
    freeze,
    groundtruth,
    metrics_server_install,
    netns,
    network,
    nodes,
    objectstore,
    pki,
    processes,
    prometheus_install,
    readiness,
    registry,
    services,
    velero_install,
)
from harness.localfleet import burst as burst_tier
from harness.localfleet.addresses import FIRST_NODE_HOST, FleetPlan, plan
from harness.localfleet.build import Progress, ensure_binaries
from harness.localfleet.nodeagent import cgroups, images, tmpdirs
from harness.localfleet.state import (
    STATE,
    ClusterRecord,
    FleetState,
    cluster_records,
    restart_process,
    start_process,
)

READY_DEADLINE_S = 120.0
Say = Callable[[str], None]


def check_privileges() -> None:
    if os.geteuid() != 0:
        raise FleetDrillError("the local fleet makes network namespaces: run as root (or with CAP_NET_ADMIN)")
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            raise FleetDrillError(f"`{tool}` is missing: install Debian's iproute2 and util-linux")


def check_programs() -> None:
    """Debian's stress and stress-ng, which the node agents run for stress images and StressChaos."""
    if missing := images.missing_programs():
        raise FleetDrillError(
            f"{' and '.join(missing)} missing: the local fleet's stress images and StressChaos run them;"
            f" install Debian's packages (apt-get install {' '.join(missing)}, as .ci/bootstrap does)"
        )


def up(
    folder: Path,
    clusters: int = 3,
    nodes: int = 3,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
    say: Say = print,
    timings: controlplane.LocalTimings | None = None,
    backups: bool = False,
    dns: bool = False,
    prometheus: bool = False,
    metrics_server: bool = False,
    burst: bool = False,
    environments: tuple[str, ...] = (),
    with_postgres: bool = False,
) -> FleetState:
    """Start a fleet in folder and return once every API server is ready and its controllers work (and,
    with backups, once Velero in every cluster reaches the fleet's backup store; with dns, once CoreDNS
    answers for the apps' global names; with prometheus, once every cluster's Prometheus is ready and the
    global one federating them has data for the app's PromQL objectives; with metrics_server, once every
    cluster's metrics API has every node's usage; with burst (which needs metrics_server), once the web
    tier serves through its overflow GSLB;
    with_postgres, once every replica streams from the primary). With environments, cluster N is in the
    Nth (its fleet file's clusters[].environment) and the sample app replicates only within an
    environment."""
    check_privileges()
    check_programs()
    folder = folder.resolve()
    if (folder / STATE).exists():
        raise FleetDrillError(
            f"a local fleet already runs in {folder}: `fleetdrill fleet down --dir {folder}` first"
        )
    extra = (build.PROMETHEUS,) * prometheus + (build.METRICS_SERVER,) * metrics_server
    binaries = ensure_binaries(bin_dir, progress, extra)
    down_orphans()
    timings = timings or controlplane.LocalTimings()
    records = cluster_records(clusters, nodes, environments)
    files.reset(folder)
    state = FleetState(folder, registry.claim(folder), records, {})
    velero_steps = ThreadPoolExecutor(max_workers=1)  # Velero's steps, in order, beside the others
    up_ended = threading.Event()
    try:
        state.save()
        say(f"starting {clusters} clusters in {folder} (fleet #{state.index}, {state.plan.infra})")
        ca = pki.new_ca(f"fleetdrill fleet {state.index}")
        ca.write(folder / "pki", "ca")
        network.build_router(state.plan)
        for cluster in state.clusters:
            _start_control_plane(state, cluster, ca, binaries, timings)
        state.save()
        readiness.wait_ready(state, READY_DEADLINE_S, with_nodes=False)
        files.write_kubeconfig(state)
        services.install_crds(state)
        if backups:  # Velero installs while nodes start and the app deploys: only its first backup needs more
            say("starting the backup store and installing Velero in every cluster")
            store = objectstore.start(state, binaries["minio"], READY_DEADLINE_S)
            state.save()
            installs = velero_install.installs_for(state, binaries, store)
            installed = velero_steps.submit(velero_install.install_all, installs, READY_DEADLINE_S, up_ended)
        for cluster in state.clusters:  # a kubelet can do nothing before its API server works
            _start_nodes(state, cluster, ca, binaries)
        state.save()
        readiness.wait_ready(state, READY_DEADLINE_S)
        published = dnsserver.prepare(state) if dns else None
        databases, passwords, data_namespaces = None, {}, ()
        if with_postgres:  # the sample app on PostgreSQL, its database backed up with it
            from harness.localfleet import postgres  # psycopg loads only for a fleet with it

            passwords = postgres.new_secret()
            databases = postgres.app_databases(state, passwords)
            data_namespaces = (postgres.NAMESPACE,)
        say("deploying the sample app, the ingresses and the global load balancer")
        services.start(state, published, metrics=prometheus, databases=databases)
        state.save()
        if with_postgres:
            say("deploying PostgreSQL: the primary in the active cluster, a streaming replica in the others")
            postgres.start(state, passwords)
            state.save()
        if published:
            say("starting CoreDNS: the global names' authoritative server and the runner's resolver")
            dnsserver.start(state, binaries["coredns"], published)
            state.save()
        services.wait_serving(state, READY_DEADLINE_S)
        if published:
            active = next(c for c in state.clusters if c.role == "active")
            home = str(state.plan.cluster(active.index).ingress)
            dnsserver.wait_answering(published, apps.global_name(), home, READY_DEADLINE_S)
        if with_postgres:
            postgres.wait_streaming(state, READY_DEADLINE_S)
        if backups:  # in Velero's thread, after the install, unless it failed

            def back_up() -> None:
                installed.result()
                velero_install.back_up(installs, READY_DEADLINE_S, data_namespaces)

            backed_up = velero_steps.submit(back_up)
        monitors, federating = None, None
        if prometheus:
            say("deploying Prometheus in every cluster, and a global one federating them")
            monitors = prometheus_install.start(state, READY_DEADLINE_S)
            federating = prometheus_install.start_global(state, binaries["prometheus"], READY_DEADLINE_S)
            state.save()
            queries = [objective["query"] for objective in prometheus_install.OBJECTIVES]
            prometheus_install.wait_data(federating, queries, READY_DEADLINE_S)
        velero = None
        if backups:
            installed.result()
            backed_up.result()
            velero = velero_install.fleet_section(binaries, store)
        if metrics_server:
            say("deploying metrics-server in every cluster")
            metrics_server_install.start(state, READY_DEADLINE_S)
        if burst:
            say("deploying the web tier (HPA on CPU) and its overflow global endpoint")
            burst_tier.start(state)
            state.save()
            burst_tier.wait_serving(state, READY_DEADLINE_S)
        files.write_fleet_file(state, timings, velero, published, monitors, federating, burst)
        if with_postgres:
            postgres.write_fleet_file(state)
        return state
    except BaseException:
        down(folder)
        raise
    finally:  # interrupted, `down` did not wait for Velero's steps: they end now
        up_ended.set()
        velero_steps.shutdown(wait=False, cancel_futures=True)


def _start_control_plane(
    state: FleetState,
    cluster: ClusterRecord,
    ca: pki.KeyPair,
    binaries: dict[str, Path],
    timings: controlplane.LocalTimings,
) -> None:
    """The cluster's control plane in its namespace."""
    cluster_plan, cluster_files = (
        state.plan.cluster(cluster.index),
        files.cluster_files(state.folder, cluster.name),
    )
    logs = state.folder / "logs" / cluster.name
    controlplane.write_credentials(cluster_files, ca, cluster_plan)
    network.add_segment(state.plan, cluster_plan.segment)
    control_ns = cluster.control_plane_ns(state.plan)
    netns.create(control_ns)
    address = str(network.attach(state.plan, cluster_plan.segment, control_ns, 2))
    for component in controlplane.components(cluster_files, cluster_plan, binaries, timings):
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/{component.name}",
                control_ns,
                component.argv,
                component.env,
                str(logs / f"{component.name}.log"),
                address,
            ),
        )


def _start_nodes(
    state: FleetState, cluster: ClusterRecord, ca: pki.KeyPair, binaries: dict[str, Path]
) -> None:
    """The cluster's nodes, each a node agent and a kube-proxy in a namespace of its own."""
    cluster_plan, cluster_files = (
        state.plan.cluster(cluster.index),
        files.cluster_files(state.folder, cluster.name),
    )
    logs = state.folder / "logs" / cluster.name
    version = build.KUBE.pin("k8s.io/kubernetes")
    for node in nodes.node_specs(
        cluster.name, cluster.region, cluster.nodes, cluster.netns_prefix(state.plan)
    ):
        nodes.write_identity(cluster_files, ca, node, cluster_plan)
        nodes.write_proxy_identity(cluster_files, ca, node, cluster_plan)
        netns.create(node.netns)
        address = str(
            network.attach(state.plan, cluster_plan.segment, node.netns, FIRST_NODE_HOST + node.number)
        )
        argv = nodes.agent_argv(
            cluster_files, node, cluster.region, cluster_plan, binaries["bridge"].parent, version
        )
        env = {"PYTHONUNBUFFERED": "1"}
        if "velero" in binaries:  # the image catalogue runs Velero's images from these programs
            env[images.VELERO_BIN_ENV] = str(binaries["velero"].parent)
        if "prometheus" in binaries:  # ... and Prometheus' image from the built server
            env[images.PROMETHEUS_BIN_ENV] = str(binaries["prometheus"].parent)
        if "metrics-server" in binaries:  # ... and metrics-server's image from the built server
            env[images.METRICS_SERVER_BIN_ENV] = str(binaries["metrics-server"].parent)
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/{node.name}", node.netns, argv, env, str(logs / f"{node.name}.log"), address
            ),
        )
        proxy = nodes.proxy_argv(cluster_files, node, cluster_plan, binaries["kube-proxy"])
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/{node.name}-proxy",
                node.netns,
                proxy,
                {"GOGC": "50"},
                str(logs / f"{node.name}-proxy.log"),
                address,
            ),
        )


def down(folder: Path) -> list[int]:
    """Stop every process of the fleet in folder, remove its namespaces and its claim; return pids stopped.

    Works on a fleet whose `up` was killed half-way too: the registry knows which numbers it claimed.
    """
    folder = folder.resolve()
    indexes = {index for index, claim in registry.claims().items() if claim.folder == folder}
    if (folder / STATE).exists():
        indexes.add(FleetState.load(folder).index)
    if not indexes:
        raise FleetDrillError(f"no local fleet in {folder}: nothing to take down")
    freeze.thaw_all(folder)  # a frozen process cannot die
    stopped = [pid for index in sorted(indexes) for pid in _remove(plan(index))]
    if not registry.claims():  # the last fleet down: no pod of another fleet mounts there any more
        _remove_mountpoints()
    (folder / STATE).unlink(missing_ok=True)
    return stopped


def _remove_mountpoints() -> None:
    """Remove the empty mount-path folders and files node agents had to create on this machine, unless
    something still mounts there: removing a mount point detaches its mount in every mount namespace (a
    pod's service-account token gone from under its processes). Paths are compared resolved, as
    mountinfo shows them (/var/run is a link to /run)."""
    in_use = _mount_points_anywhere()

    def remove(path: Path) -> bool:
        real = str(path.resolve())
        if any(point == real or point.startswith(f"{real}/") for point in in_use):
            return False
        try:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        except FileNotFoundError:
            return True
        except OSError:  # not empty: something wrote there, and it is not ours to delete
            return False
        return True

    registry.sweep_mountpoints(remove)


def _mount_points_anywhere() -> set[str]:
    """Mount points of every mount namespace on this machine (read once per namespace)."""
    points: set[str] = set()
    seen: set[str] = set()
    for process in Path("/proc").glob("[0-9]*"):
        try:
            namespace = str((process / "ns" / "mnt").readlink())
            if namespace in seen:
                continue
            seen.add(namespace)
            points.update(line.split()[4] for line in (process / "mountinfo").read_text().splitlines())
        except OSError:  # the process ended meanwhile
            continue
    return points


def down_orphans() -> list[int]:
    """Remove fleets whose `up` died before finishing (no state, claimer gone); return pids stopped."""
    stopped = []
    for index, claim in registry.claims().items():
        if not (claim.folder / STATE).exists() and processes.start_ticks(claim.pid) is None:
            stopped += _remove(plan(index))
    return stopped


def _remove(fleet: FleetPlan) -> list[int]:
    stopped = cgroups.remove_fleet(network.prefix(fleet))  # thaws, kills and removes the nodes' cgroups
    stopped += _stop_namespaces(netns.names(network.prefix(fleet)))
    tmpdirs.remove_fleet(network.prefix(fleet))
    network.teardown(fleet)
    registry.release(fleet.index)
    return stopped


def _stop_namespaces(names: list[str]) -> list[int]:
    pids = netns.kill_all(names, signal.SIGKILL)
    left = processes.wait_gone(pids)
    if left:
        raise FleetDrillError(f"processes {left} did not exit after SIGKILL")
    return pids


def stop_cluster(folder: Path, name: str) -> list[int]:
    """Hard loss: SIGKILL everything in the cluster's namespaces; etcd's data stays on disk. The ground
    truth records the loss as it begins (its effect, the GSLB's health checks failing, may come before the
    kills end on a busy machine)."""
    state = FleetState.load(folder.resolve())
    cluster = state.cluster(name)
    groundtruth.record(state.folder / groundtruth.FILE, "fault", fault="cluster-lost", cluster=name)
    names = {n.name for n in nodes.node_specs(cluster.name, cluster.region, cluster.nodes, "")}
    for node in set(freeze.frozen(state.folder)) & names:  # frozen processes cannot die
        freeze.thaw(state, node)
    stopped = _stop_namespaces(netns.names(cluster.netns_prefix(state.plan)))
    network.set_segment_links(state.plan, state.plan.cluster(cluster.index).segment, up=False)
    return stopped


def partition(folder: Path, clusters: list[str], name: str) -> None:
    """Cut the named clusters off from the rest of the fleet (other clusters, the global endpoint, the
    backup store); the host, where the harness runs, still reaches both sides."""
    state = FleetState.load(folder.resolve())
    inside = [state.cluster(c) for c in clusters]

    def ranges(cluster: ClusterRecord) -> list[IPv4Network]:
        return [state.plan.cluster(cluster.index).segment.network, state.plan.cluster(cluster.index).pod_cidr]

    outside = [r for c in state.clusters if c not in inside for r in ranges(c)]
    outside += [state.plan.global_segment.network, state.plan.backup_segment.network]
    network.partition(state.plan, name, [r for c in inside for r in ranges(c)], outside)
    groundtruth.record(
        state.folder / groundtruth.FILE, "fault", fault="partition", name=name, clusters=clusters
    )


def traffic_crosses(folder: Path, clusters: list[str], timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection from the global endpoint's namespace (outside every cluster, on the far
    side of a partition of them) still reaches any of the clusters' API servers."""
    state = FleetState.load(folder.resolve())
    global_ns = f"{network.prefix(state.plan)}global"
    for cluster in clusters:
        address = state.plan.cluster(state.cluster(cluster).index).control_plane
        target = (str(address), controlplane.APISERVER_PORT)
        probe = f"import socket; socket.create_connection({target!r}, {timeout_s})"
        argv = netns.enter_argv(global_ns, [sys.executable, "-c", probe])
        if subprocess.run(argv, capture_output=True, timeout=timeout_s + 10).returncode == 0:
            return True
    return False


def cut_off_store(folder: Path, clusters: list[str], name: str, refuse: bool = False) -> None:
    """Cut the named clusters off from the backup store only: their backups and restores cannot reach it,
    everything else still flows; their packets dropped, or with refuse rejected (network.partition).
    `heal(folder, name)` ends it."""
    state = FleetState.load(folder.resolve())
    inside = [state.plan.cluster(state.cluster(c).index) for c in clusters]
    side = [r for c in inside for r in (c.segment.network, c.pod_cidr)]
    network.partition(state.plan, name, side, [state.plan.backup_segment.network], refuse)
    groundtruth.record(
        state.folder / groundtruth.FILE,
        "fault",
        fault="store-partition",
        name=name,
        clusters=clusters,
        refused=refuse,
    )


def heal(folder: Path, name: str) -> None:
    state = FleetState.load(folder.resolve())
    network.heal(state.plan, name)
    groundtruth.record(state.folder / groundtruth.FILE, "fault", fault="partition-healed", name=name)


def cluster_running(folder: Path, name: str) -> bool:
    """Every process of the cluster is alive."""
    state = FleetState.load(folder.resolve())
    records = [r for key, r in state.processes.items() if key.startswith(f"{state.cluster(name).name}/")]
    return all(processes.alive(processes.Started(r["pid"], r["start_ticks"])) for r in records)


def start_cluster(folder: Path, name: str, deadline_s: float = READY_DEADLINE_S) -> None:
    """Return of a lost cluster: restart its processes on the same data and wait until it is ready."""
    state = FleetState.load(folder.resolve())
    cluster = state.cluster(name)
    network.set_segment_links(state.plan, state.plan.cluster(cluster.index).segment, up=True)
    for key, record in list(state.processes.items()):
        if key.startswith(f"{cluster.name}/") and not processes.alive(
            processes.Started(record["pid"], record["start_ticks"])
        ):
            restart_process(state, key)
    state.save()
    readiness.wait_ready(state, deadline_s, only=name)
    groundtruth.record(state.folder / groundtruth.FILE, "fault", fault="cluster-returned", cluster=name)


@dataclass(frozen=True)
class ComponentStatus:
    cluster: str
    component: str
    up: bool
    address: str
    pid: int
    rss_bytes: int


def status(folder: Path) -> list[ComponentStatus]:
    """One row per process the fleet started."""
    state = FleetState.load(folder.resolve())
    rows = []
    for key, record in state.processes.items():
        cluster_name, component = key.split("/", 1)
        is_up = processes.alive(processes.Started(record["pid"], record["start_ticks"]))
        rows.append(
            ComponentStatus(
                cluster_name,
                component,
                is_up,
                record.get("address", ""),
                record["pid"],
                processes.rss_bytes(record["pid"]) if is_up else 0,
            )
        )
    return rows
