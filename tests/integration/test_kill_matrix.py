"""The kill -9 matrix: every fault kind x every point a runner can die at -> `fleetdrill recover` -> the fleet
is back in its steady state and the ledger is empty; recovering twice is harmless.

The runner is this module run as a program (`python -m tests.integration.test_kill_matrix`): it applies one
fault through a FaultStack and a ledger, and at its kill point writes a `reached` file and waits to be killed
with SIGKILL. Kill points:
  ledger-written  the fault is in the ledger ("intended"), its inject has not acted yet
  injected        inject has acted; the run dies before the ledger says "applied"
  applied         the fault is in force and marked applied (a drill killed mid-fault)
  reverting       the revert has acted; the run dies before the ledger forgets the fault
One fleet serves every case; each case ends with the fleet checked back to its steady state. The test
command runs one kill point per fault kind (each point taken by a few kinds); FLEETDRILL_FULL_MATRIX=1
runs every kind at every point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness.config import load_fleet
from harness.faults import Fault, FaultStack, Ledger, fault_from_record, new_run_id
from harness.faults.cluster import ClusterLoss
from harness.faults.handover import Handover
from harness.faults.kube import FAULT_LABEL, pod_ready
from harness.faults.network import DenyAllPolicy
from harness.faults.nodes import NodeDrain, NodeLoss
from harness.faults.partition import WanPartition
from harness.faults.pods import PodKill
from harness.faults.resources import NodeStress, QuotaSqueeze
from harness.faults.scratch import ScratchNamespace
from harness.faults.workload import SCALED_BY, SoftClusterLoss
from harness.fleet import FleetAccess
from harness.localfleet import freeze, network, supervisor
from harness.localfleet.state import FleetState
from harness.timeline import Timeline
from tests.conftest import run_cli, started_fleet, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLUSTER, NS = "eu-west", "orders"
POINTS = ("ledger-written", "injected", "applied", "reverting")
STEADY_DEADLINE_S = 240


def app_node(core: client.CoreV1Api) -> str:
    """The node the app's pod runs on (its local volume keeps it there)."""
    pods = core.list_namespaced_pod(NS, label_selector="app=orders").items
    return next(p.spec.node_name for p in pods if p.spec.node_name)


def other_node(core: client.CoreV1Api) -> str:
    busy = app_node(core)
    return next(n.metadata.name for n in core.list_node().items if n.metadata.name != busy)


BUILDERS: dict[str, Callable[[client.CoreV1Api], Fault]] = {
    "pod-kill": lambda core: PodKill(targets=(CLUSTER,), namespace=NS, selector="app=orders", mode="all"),
    "node-drain": lambda core: NodeDrain(targets=(CLUSTER,), nodes=(app_node(core),), timeout_s=60),
    "node-loss": lambda core: NodeLoss(targets=(CLUSTER,), nodes=(other_node(core),)),
    "soft-cluster-loss": lambda core: SoftClusterLoss(
        targets=(CLUSTER,), namespace=NS, workload="deployment/orders"
    ),
    "node-stress": lambda core: NodeStress(
        targets=(CLUSTER,), nodes=(other_node(core),), cpu_fraction=0.05, memory_fraction=0.25
    ),
    "quota-squeeze": lambda core: QuotaSqueeze(targets=(CLUSTER,), namespace=NS, hard={"pods": "0"}),
    "deny-all-policy": lambda core: DenyAllPolicy(targets=(CLUSTER,), namespace=NS),
    "cluster-loss": lambda core: ClusterLoss(targets=(CLUSTER,)),
    "wan-partition": lambda core: WanPartition(targets=(CLUSTER,)),
    "scratch-namespace": lambda core: ScratchNamespace(
        targets=(CLUSTER,), namespaces=("fleetdrill-scratch",)
    ),
}
PASSED: list[str] = []


def cases() -> Iterator[object]:
    """Every kind at every point; outside the diagonal (kind i at point i mod 4) marked full_matrix."""
    for i, kind in enumerate(BUILDERS):
        for j, point in enumerate(POINTS):
            marks = () if j == i % len(POINTS) else (pytest.mark.full_matrix,)
            yield pytest.param(kind, point, marks=marks, id=f"{kind}-{point}")


@pytest.fixture(scope="module")
def matrix_fleet(
    tmp_path_factory: pytest.TempPathFactory, require_root: None, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """A fleet of this module's own (it loses clusters); the count of cases is printed at the end."""
    with started_fleet(tmp_path_factory, "kill-matrix") as folder:
        yield folder
    total = sum(item.module is request.module for item in request.session.items)
    line = f"kill -9 matrix: {len(PASSED)} of {total} cases recovered "
    line += f"(of {len(BUILDERS)} fault kinds x {len(POINTS)} kill points)"
    plugins = request.config.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(line)


@pytest.fixture(scope="module")
def access(matrix_fleet: Path) -> Iterator[FleetAccess]:
    fleet_access = FleetAccess(load_fleet(matrix_fleet / "fleet.yaml"))
    yield fleet_access
    fleet_access.close()


def steady(folder: Path, access: FleetAccess) -> str:
    """What is not yet back in the steady state ("" when everything is)."""
    state = FleetState.load(folder)
    if not supervisor.cluster_running(folder, CLUSTER):
        return f"cluster {CLUSTER} is not running"
    if freeze.frozen(folder):
        return f"frozen nodes: {freeze.frozen(folder)}"
    if network.partitions(state.plan):
        return f"partitions in force: {network.partitions(state.plan)}"
    core = client.CoreV1Api(access.api_client(CLUSTER))
    for node in core.list_node(_request_timeout=10).items:
        ready = next((c.status for c in node.status.conditions or [] if c.type == "Ready"), None)
        if node.spec.unschedulable or ready != "True":
            return f"node {node.metadata.name}: unschedulable={node.spec.unschedulable}, Ready={ready}"
    if core.list_pod_for_all_namespaces(label_selector=FAULT_LABEL, _request_timeout=10).items:
        return "stress pods left"
    if core.list_namespace(label_selector=FAULT_LABEL, _request_timeout=10).items:
        return "a scratch namespace left"
    if core.list_namespaced_resource_quota(NS, _request_timeout=10).items:
        return "a ResourceQuota left"
    if client.NetworkingV1Api(core.api_client).list_namespaced_network_policy(NS, _request_timeout=10).items:
        return "a NetworkPolicy left"
    deployment = client.AppsV1Api(core.api_client).read_namespaced_deployment(
        "orders", NS, _request_timeout=10
    )
    if deployment.spec.replicas != 1 or SCALED_BY in (deployment.metadata.annotations or {}):
        return (
            f"orders has {deployment.spec.replicas} replicas, annotations {deployment.metadata.annotations}"
        )
    pods = core.list_namespaced_pod(NS, label_selector="app=orders", _request_timeout=10).items
    if sum(pod_ready(p) for p in pods) != 1:
        return "orders is not ready"
    return ""


@pytest.mark.parametrize(("kind", "point"), list(cases()))
def test_a_runner_killed_at_any_point_is_recovered(
    matrix_fleet: Path, access: FleetAccess, tmp_path: Path, kind: str, point: str
) -> None:
    wait_for(lambda: not steady(matrix_fleet, access), STEADY_DEADLINE_S, "the steady state before the case")
    fault = BUILDERS[kind](client.CoreV1Api(access.api_client(CLUSTER)))
    ledger, reached = tmp_path / "ledger.json", tmp_path / "reached"
    argv = [sys.executable, "-m", "tests.integration.test_kill_matrix", str(matrix_fleet / "fleet.yaml")]
    argv += [str(ledger), json.dumps(fault.to_record()), point, str(reached)]
    runner = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: reached.exists() or runner.poll() is not None, 180, f"the runner to reach {point}")
        assert reached.exists(), f"the runner ended before {point}: {runner.stderr.read()[-2000:]}"
    finally:
        runner.kill()
        runner.wait(timeout=30)
    assert [entry.fault["kind"] for entry in Ledger(ledger).open_entries()] == [kind], "in the ledger"

    recovered = run_cli("recover", "--fleet", matrix_fleet / "fleet.yaml", "--ledger", ledger)
    assert f"reverted: {kind} on {CLUSTER}" in recovered.stdout, recovered.stdout
    assert not Ledger(ledger).entries(), "the ledger is empty after recover"
    wait_for(
        lambda: not steady(matrix_fleet, access),
        STEADY_DEADLINE_S,
        f"the steady state after {kind} at {point}",
    )
    again = run_cli("recover", "--fleet", matrix_fleet / "fleet.yaml", "--ledger", ledger)
    assert "nothing to recover" in again.stdout and not Ledger(ledger).entries(), "recover twice is harmless"
    wait_for(
        lambda: not steady(matrix_fleet, access), STEADY_DEADLINE_S, "the steady state after recovering twice"
    )
    PASSED.append(f"{kind}@{point}")


def run_to_kill_point(fleet_file: str, ledger: str, record: str, point: str, reached: str) -> None:
    """The runner: apply the fault, and at `point` announce it and wait to be killed."""
    fault = fault_from_record(json.loads(record))
    kind = type(fault)
    inject, revert = kind.inject_handing, kind.revert_handed  # the FaultStack's ways in and out

    def stop_here(at: str) -> None:
        if at == point:
            Path(reached).write_text(point)
            time.sleep(600)  # killed long before

    def hooked_inject(self: Fault, ctx: object, handover: Handover) -> None:
        stop_here("ledger-written")
        inject(self, ctx, handover)
        stop_here("injected")

    def hooked_revert(self: Fault, ctx: object, handover: Handover) -> None:
        revert(self, ctx, handover)
        stop_here("reverting")

    kind.inject_handing, kind.revert_handed = hooked_inject, hooked_revert  # type: ignore[method-assign]
    access = FleetAccess(load_fleet(fleet_file))
    with FaultStack(access, Ledger(ledger), Timeline(), new_run_id()) as stack:
        stack.push(fault)
        stop_here("applied")


if __name__ == "__main__":
    run_to_kill_point(*sys.argv[1:])
