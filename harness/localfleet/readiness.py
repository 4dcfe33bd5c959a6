"""Waiting for a fleet's clusters to be ready, stage by stage, restarting what gives up on the way."""

import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import controlplane, files, network, processes
from harness.localfleet.state import ClusterRecord, FleetState, restart_process

MAX_START_RESTARTS = 5


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
        restart_process(state, key)
        state.save()
