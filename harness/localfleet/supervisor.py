"""The supervisor of a local fleet: bring it up, report on it, lose and return clusters, take it down.

Everything a fleet starts runs inside the fleet's own network namespaces, so `down` finds every
process through them, even after the fleet folder's state was lost or `up` was killed half-way.
"""

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import (
    apps,
    build,
    controlplane,
    files,
    freeze,
    netns,
    network,
    nodes,
    pki,
    processes,
    provisioner,
    registry,
)
from harness.localfleet.addresses import FIRST_NODE_HOST, FleetPlan, plan
from harness.localfleet.build import Progress, ensure_binaries
from harness.localfleet.nodeagent import cgroups
from harness.localfleet.nodeagent.volumes import MOUNTPOINTS

REGIONS = ("us-east", "eu-west", "ap-south")
STATE = "state.json"
READY_DEADLINE_S = 120.0
GROUND_TRUTH = "ground-truth.jsonl"
GLOBAL_KEY = "global/gslb"
MAX_START_RESTARTS = 5
Say = Callable[[str], None]


@dataclass(frozen=True)
class ClusterRecord:
    """A cluster of the fleet: its name, region, number in the address plan, and role."""

    name: str
    region: str
    index: int
    role: str
    nodes: int = 0

    def netns_prefix(self, fleet: FleetPlan) -> str:
        return f"{network.prefix(fleet)}c{self.index}-"

    def control_plane_ns(self, fleet: FleetPlan) -> str:
        return f"{self.netns_prefix(fleet)}cp"


@dataclass
class FleetState:
    """What the supervisor keeps in the fleet folder: enough to restart or remove anything it started."""

    folder: Path
    index: int
    clusters: list[ClusterRecord]
    processes: dict[str, dict]

    @property
    def plan(self) -> FleetPlan:
        return plan(self.index)

    def cluster(self, name: str) -> ClusterRecord:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters)
        raise FleetDrillError(f"no cluster {name!r} in the fleet at {self.folder} (clusters: {known})")

    def save(self) -> None:
        data = {
            "index": self.index,
            "clusters": [asdict(c) for c in self.clusters],
            "processes": self.processes,
        }
        tmp = self.folder / f".{STATE}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.folder / STATE)

    @classmethod
    def load(cls, folder: Path) -> "FleetState":
        path = folder / STATE
        if not path.exists():
            raise FleetDrillError(
                f"no local fleet in {folder} (no {STATE}): start one with `fleetdrill fleet up`"
            )
        data = json.loads(path.read_text())
        return cls(folder, data["index"], [ClusterRecord(**c) for c in data["clusters"]], data["processes"])


def cluster_records(count: int, nodes: int) -> list[ClusterRecord]:
    """Clusters spread over three regions; the first is active, the second passive, the rest standby."""
    records = []
    for i in range(count):
        region = REGIONS[i % len(REGIONS)]
        name = region if i < len(REGIONS) else f"{region}-{i // len(REGIONS) + 1}"
        role = ("active", "passive")[i] if i < 2 else "standby"
        records.append(ClusterRecord(name, region, i, role, nodes))
    return records


def check_privileges() -> None:
    if os.geteuid() != 0:
        raise FleetDrillError("the local fleet makes network namespaces: run as root (or with CAP_NET_ADMIN)")
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            raise FleetDrillError(f"`{tool}` is missing: install Debian's iproute2 and util-linux")


def up(
    folder: Path,
    clusters: int = 3,
    nodes: int = 3,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
    say: Say = print,
    timings: controlplane.LocalTimings | None = None,
) -> FleetState:
    """Start a fleet in folder and return once every API server is ready and its controllers work."""
    check_privileges()
    folder = folder.resolve()
    if (folder / STATE).exists():
        raise FleetDrillError(
            f"a local fleet already runs in {folder}: `fleetdrill fleet down --dir {folder}` first"
        )
    binaries = ensure_binaries(bin_dir, progress)
    down_orphans()
    timings = timings or controlplane.LocalTimings()
    files.reset(folder)
    state = FleetState(folder, registry.claim(folder), cluster_records(clusters, nodes), {})
    try:
        state.save()
        say(f"starting {clusters} clusters in {folder} (fleet #{state.index}, {state.plan.infra})")
        ca = pki.new_ca(f"fleetdrill fleet {state.index}")
        ca.write(folder / "pki", "ca")
        network.build_router(state.plan)
        for cluster in state.clusters:
            _start_control_plane(state, cluster, ca, binaries, timings)
        state.save()
        wait_ready(state, READY_DEADLINE_S, with_nodes=False)
        for cluster in state.clusters:  # a kubelet can do nothing before its API server works
            _start_nodes(state, cluster, ca, binaries)
        state.save()
        wait_ready(state, READY_DEADLINE_S)
        files.write_kubeconfig(state, ca)
        say("deploying the sample app, the ingresses and the global load balancer")
        _start_fleet_services(state)
        state.save()
        _wait_serving(state, READY_DEADLINE_S)
        files.write_fleet_file(state, timings)
        return state
    except BaseException:
        down(folder)
        raise


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
        _start(
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
        _start(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/{node.name}", node.netns, argv, env, str(logs / f"{node.name}.log"), address
            ),
        )
        proxy = nodes.proxy_argv(cluster_files, node, cluster_plan, binaries["kube-proxy"])
        _start(
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


def _start_fleet_services(state: FleetState) -> None:
    """A volume provisioner, the sample app and its Gslb in every cluster, an ingress per cluster, and the
    global endpoint."""
    kubeconfig = state.folder / "kubeconfig"
    backends = {
        c.name: f"http://{state.plan.cluster(c.index).ingress}:{apps.HTTP_PORT}" for c in state.clusters
    }
    primary = next(c.name for c in state.clusters if c.role == "active")
    for cluster in state.clusters:
        nodes_root = files.cluster_files(state.folder, cluster.name).root / "nodes"
        _start(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/provisioner",
                cluster.control_plane_ns(state.plan),
                provisioner.argv(kubeconfig, cluster.name, nodes_root),
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / "provisioner.log"),
            ),
        )
        provisioner.install_class(kubeconfig, cluster.name)  # the app's claim finds its default class
        apps.deploy(kubeconfig, cluster.name, cluster.role, backends, primary)
        cluster_plan, ingress_ns = state.plan.cluster(cluster.index), f"{cluster.netns_prefix(state.plan)}ing"
        netns.create(ingress_ns)
        address = str(network.attach(state.plan, cluster_plan.segment, ingress_ns, 3))
        _start(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/ingress",
                ingress_ns,
                apps.ingress_argv(kubeconfig, cluster.name, address),
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / "ingress.log"),
                address,
            ),
        )
    segment, global_ns = state.plan.global_segment, f"{network.prefix(state.plan)}global"
    network.add_segment(state.plan, segment)
    netns.create(global_ns)
    address = str(network.attach(state.plan, segment, global_ns, 2))
    argv = apps.gslb_argv(kubeconfig, backends, address, state.folder / GROUND_TRUTH)
    _start(
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


def global_url(state: FleetState) -> str:
    """The fleet's global endpoint."""
    return f"http://{state.plan.global_segment.host(2)}:{apps.HTTP_PORT}"


def _wait_serving(state: FleetState, deadline_s: float) -> None:
    """Poll until every cluster's ingress and the global endpoint serve the sample app as ready."""
    urls = [f"http://{state.plan.cluster(c.index).ingress}:{apps.HTTP_PORT}/readyz" for c in state.clusters]
    urls.append(f"{global_url(state)}/readyz")
    deadline = time.monotonic() + deadline_s
    while urls:
        urls = [url for url in urls if not apps.serves(url)]
        if urls and time.monotonic() > deadline:
            raise FleetDrillError(
                f"the sample app does not serve at {', '.join(urls)} after {deadline_s:.0f} s; "
                f"logs in {state.folder / 'logs'}"
            )
        if urls:
            time.sleep(0.05)


def _start(state: FleetState, spec: processes.ProcessSpec) -> None:
    started = processes.spawn(spec)
    state.processes[spec.key] = {**asdict(spec), **asdict(started)}


STAGES = ("api", "controllers", "nodes")


def wait_ready(
    state: FleetState, deadline_s: float, only: str | None = None, with_nodes: bool = True
) -> dict[str, list[float]]:
    """Poll every (or one) cluster until its API is ready, RBAC bound, its controllers work and (with_nodes)
    its nodes are Ready with their pod CIDRs routed.

    Returns, per cluster, the seconds until each stage was reached (api, controllers[, nodes]).
    """
    started = time.monotonic()
    deadline = started + deadline_s
    pending = {c.name: _probe(state, c) for c in state.clusters if only in (None, c.name)}
    reached: dict[str, list[float]] = {name: [] for name in pending}
    restarts: dict[str, int] = {}
    while pending:
        for name, probe in list(pending.items()):
            if not reached[name] and probe.api_ready() and probe.bind_viewer():
                reached[name].append(time.monotonic() - started)
            if len(reached[name]) == 1 and probe.controllers_working():
                reached[name].append(time.monotonic() - started)
            if len(reached[name]) == 2 and with_nodes and _nodes_routed(state, state.cluster(name), probe):
                reached[name].append(time.monotonic() - started)
            if len(reached[name]) == (3 if with_nodes else 2):
                del pending[name]
        _restart_exited(state, restarts, set(pending))
        if pending and time.monotonic() > deadline:
            waiting = ", ".join(f"{n} ({STAGES[len(reached[n])]})" for n in pending)
            raise FleetDrillError(
                f"not ready after {deadline_s:.0f} s: {waiting}; logs in {state.folder / 'logs'}"
            )
        if pending:
            time.sleep(0.05)
    return reached


def _nodes_routed(state: FleetState, cluster: ClusterRecord, probe: controlplane.ApiProbe) -> bool:
    """Every node of the cluster is Ready; route each node's pod CIDR to it in the fleet's router."""
    ready = probe.ready_nodes()
    if len(ready) < cluster.nodes:
        return False
    for pod_cidr, address in ready:
        network.route(state.plan, IPv4Network(pod_cidr), IPv4Address(address))
    return True


def _probe(state: FleetState, cluster: ClusterRecord) -> controlplane.ApiProbe:
    return controlplane.ApiProbe(
        files.cluster_files(state.folder, cluster.name), state.plan.cluster(cluster.index)
    )


def _restart_exited(state: FleetState, restarts: dict[str, int], clusters: set[str]) -> None:
    """Restart a component that exited while its cluster starts (a controller manager gives up when
    RBAC is not bootstrapped in time on a loaded machine), as a kubelet restarts static pods."""
    for key, record in state.processes.items():
        if key.split("/")[0] not in clusters or processes.alive(
            processes.Started(record["pid"], record["start_ticks"])
        ):
            continue
        restarts[key] = restarts.get(key, 0) + 1
        if restarts[key] > MAX_START_RESTARTS:
            tail = Path(record["log"]).read_text(errors="replace").strip().splitlines()[-1:] or [
                "(empty log)"
            ]
            raise FleetDrillError(
                f"{key} keeps exiting during start-up: {tail[0][:300]} (log: {record['log']})"
            )
        _start(
            state,
            processes.ProcessSpec(
                record["key"], record["netns"], record["argv"], record["env"], record["log"]
            ),
        )
        state.save()


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
    _remove_mountpoints(folder)
    (folder / STATE).unlink(missing_ok=True)
    return stopped


def _remove_mountpoints(folder: Path) -> None:
    """Remove the empty mount-path folders node agents had to create on this machine (deepest first)."""
    made = [
        Path(line)
        for record in folder.glob(f"clusters/*/nodes/*/{MOUNTPOINTS}")
        for line in record.read_text().split()
        if line
    ]
    for path in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()


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
    """Hard loss: SIGKILL everything in the cluster's namespaces; etcd's data stays on disk."""
    state = FleetState.load(folder.resolve())
    cluster = state.cluster(name)
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


def heal(folder: Path, name: str) -> None:
    network.heal(FleetState.load(folder.resolve()).plan, name)


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
            spec = processes.ProcessSpec(
                record["key"], record["netns"], record["argv"], record["env"], record["log"]
            )
            _start(state, spec)
    state.save()
    wait_ready(state, deadline_s, only=name)


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
