"""Every fault of harness.faults against the local fleet: injected, seen through the API, reverted.

These faults revert cleanly, so they share the session's fleet. The deny-all NetworkPolicy is checked
through the API only: the local fleet's network plugin does not enforce NetworkPolicy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from harness.config import STRESS_IMAGE, load_fleet
from harness.errors import FleetDrillError
from harness.faults import FaultStack, Ledger
from harness.faults.kube import CORDONED_BY, FAULT_LABEL, pod_ready
from harness.faults.network import DenyAllPolicy
from harness.faults.nodes import NodeDrain, NodeLoss
from harness.faults.pods import PodKill
from harness.faults.resources import NodeStress, QuotaSqueeze
from harness.faults.workload import REPLICAS_BEFORE, SoftClusterLoss
from harness.fleet import FleetAccess
from harness.lease import DrillLease, lease_name
from harness.timeline import Timeline
from tests.conftest import run_cli, wait_for

ROOT = Path(__file__).resolve().parents[2]
NS, APP = "orders", "app=orders"
CLUSTER = "eu-west"  # the passive cluster: faulting it leaves the global endpoint served
HOLDER = "us-east"  # one of the clusters that hold eu-west's drill lease while a drill faults eu-west


@pytest.fixture(scope="module")
def access(fleet_dir: Path) -> Iterator[FleetAccess]:
    fleet_access = FleetAccess(load_fleet(fleet_dir / "fleet.yaml"))
    yield fleet_access
    fleet_access.close()


@pytest.fixture
def core(access: FleetAccess) -> client.CoreV1Api:
    return client.CoreV1Api(access.api_client(CLUSTER))


@pytest.fixture
def stack(access: FleetAccess, tmp_path: Path) -> Iterator[FaultStack]:
    with FaultStack(access, Ledger(tmp_path / "ledger.json"), Timeline(), "test-faults") as faults:
        yield faults
    assert not Ledger(tmp_path / "ledger.json").entries(), "every fault reverted and out of the ledger"


def app_pods(core: client.CoreV1Api) -> list[client.V1Pod]:
    return [
        p
        for p in core.list_namespaced_pod(NS, label_selector=APP).items
        if p.metadata.deletion_timestamp is None
    ]


def ready_app_pods(core: client.CoreV1Api) -> list[str]:
    return [p.metadata.uid for p in app_pods(core) if pod_ready(p)]


def wait_app_ready(core: client.CoreV1Api, count: int = 1) -> list[str]:
    return wait_for(lambda: len(ready_app_pods(core)) >= count and ready_app_pods(core), 120, "orders ready")


def node_ready(core: client.CoreV1Api, node: str) -> str:
    conditions = core.read_node(node).status.conditions or []
    return next((c.status for c in conditions if c.type == "Ready"), "missing")


def test_pod_kill_deletes_the_chosen_pods_and_revert_waits_for_the_workload(
    core: client.CoreV1Api, stack: FaultStack
) -> None:
    before = set(wait_app_ready(core))
    fault = PodKill(targets=(CLUSTER,), namespace=NS, selector=APP, mode="all", grace_period_s=1)
    with stack.applied(fault):
        wait_for(lambda: not before & {p.metadata.uid for p in app_pods(core)}, 30, "the pods to be deleted")
    after = set(ready_app_pods(core))
    assert after and not after & before, "revert returned once the Deployment's new pods were ready"


def test_pod_kill_with_nothing_to_kill_fails_and_names_it(core: client.CoreV1Api, stack: FaultStack) -> None:
    fault = PodKill(targets=(CLUSTER,), namespace=NS, selector="app=nothing-here")
    with pytest.raises(
        FleetDrillError, match="pod-kill in cluster eu-west: no running pod in namespace orders "
    ):
        stack.push(fault)


def test_node_drain_honours_a_disruption_budget_then_evicts(
    core: client.CoreV1Api, stack: FaultStack
) -> None:
    wait_app_ready(core)
    node = app_pods(core)[0].spec.node_name
    policy = client.PolicyV1Api(core.api_client)
    budget = {
        "metadata": {"name": "orders-test-budget"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "orders"}}},
    }
    policy.create_namespaced_pod_disruption_budget(NS, budget)
    try:
        wait_for(
            lambda: (
                policy.read_namespaced_pod_disruption_budget(
                    "orders-test-budget", NS
                ).status.observed_generation
            ),
            30,
            "the budget to be observed",
        )
        blocked = NodeDrain(targets=(CLUSTER,), nodes=(node,), timeout_s=5)
        with pytest.raises(
            FleetDrillError, match=f"node {node} still runs orders/.* PodDisruptionBudget allows no"
        ):
            stack.push(blocked)
        assert not core.read_node(node).spec.unschedulable, "the failed drain was reverted: uncordoned"
    finally:
        policy.delete_namespaced_pod_disruption_budget("orders-test-budget", NS)
    with stack.applied(NodeDrain(targets=(CLUSTER,), nodes=(node,), timeout_s=60)):
        found = core.read_node(node)
        assert found.spec.unschedulable and found.metadata.annotations[CORDONED_BY].startswith("node-drain-")
        assert all(p.spec.node_name != node for p in app_pods(core)), "the app's pod was evicted"
    found = core.read_node(node)
    assert not found.spec.unschedulable and CORDONED_BY not in (found.metadata.annotations or {})
    wait_app_ready(core)  # back on its node: its local volume is there


def test_node_drain_leaves_a_node_someone_else_cordoned(core: client.CoreV1Api, stack: FaultStack) -> None:
    node = next(
        n.metadata.name for n in core.list_node().items if n.metadata.name != app_pods(core)[0].spec.node_name
    )
    core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        with stack.applied(NodeDrain(targets=(CLUSTER,), nodes=(node,))):
            pass
        assert core.read_node(node).spec.unschedulable, "not ours to uncordon"
    finally:
        core.patch_node(node, {"spec": {"unschedulable": None}})


def test_node_loss_makes_the_node_not_ready_until_reverted(core: client.CoreV1Api, stack: FaultStack) -> None:
    busy = {p.spec.node_name for p in app_pods(core)}
    node = next(n.metadata.name for n in core.list_node().items if n.metadata.name not in busy)
    with stack.applied(NodeLoss(targets=(CLUSTER,), nodes=(node,))):
        wait_for(
            lambda: node_ready(core, node) == "Unknown", 90, f"{node} to go NotReady (lease not renewed)"
        )
    wait_for(lambda: node_ready(core, node) == "True", 90, f"{node} to be Ready again")


def test_soft_cluster_loss_stops_the_app_and_revert_restores_it(
    core: client.CoreV1Api, stack: FaultStack
) -> None:
    apps = client.AppsV1Api(core.api_client)
    replicas = apps.read_namespaced_deployment("orders", NS).spec.replicas
    wait_app_ready(core, replicas)
    with stack.applied(SoftClusterLoss(targets=(CLUSTER,), namespace=NS, workload="deployment/orders")):
        found = apps.read_namespaced_deployment("orders", NS)
        assert found.spec.replicas == 0 and found.metadata.annotations[REPLICAS_BEFORE] == str(replicas)
        assert all(node.spec.unschedulable for node in core.list_node().items)
        wait_for(lambda: not app_pods(core), 60, "the app's pods to end")
    found = apps.read_namespaced_deployment("orders", NS)
    assert found.spec.replicas == replicas and REPLICAS_BEFORE not in (found.metadata.annotations or {})
    assert not any(node.spec.unschedulable for node in core.list_node().items)
    wait_app_ready(core, replicas)


def test_node_stress_fills_what_the_node_has_left(core: client.CoreV1Api, stack: FaultStack) -> None:
    node = core.list_node().items[0].metadata.name
    fault = NodeStress(targets=(CLUSTER,), nodes=(node,), cpu_fraction=0.05, memory_fraction=0.5)
    with stack.applied(fault):
        (pod,) = core.list_namespaced_pod("default", label_selector=f"{FAULT_LABEL}={fault.key}").items
        assert pod.spec.node_name == node and pod.status.phase == "Running"
        assert pod.spec.containers[0].image == STRESS_IMAGE and not pod.spec.containers[0].command
        assert pod.spec.containers[0].resources.requests == pod.spec.containers[0].resources.limits
        probe = {
            "metadata": {"name": "stress-probe"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "containers": [
                    {
                        "name": "idle",
                        "image": "idle",
                        "resources": {"requests": {"memory": pod_memory(pod, 1.1)}},
                    }
                ],
            },
        }
        core.create_namespaced_pod("default", probe)
        try:
            wait_for(
                lambda: unschedulable_because(core, "stress-probe", "Insufficient memory"), 60, "no room left"
            )
        finally:
            core.delete_namespaced_pod("stress-probe", "default", grace_period_seconds=0)
    assert not core.list_namespaced_pod("default", label_selector=f"{FAULT_LABEL}={fault.key}").items


def pod_memory(pod: client.V1Pod, share: float) -> str:
    return str(int(float(parse_quantity(pod.spec.containers[0].resources.requests["memory"])) * share))


def unschedulable_because(core: client.CoreV1Api, name: str, reason: str) -> bool:
    conditions = core.read_namespaced_pod(name, "default").status.conditions or []
    return any(
        c.type == "PodScheduled" and c.status == "False" and reason in (c.message or "") for c in conditions
    )


def test_quota_squeeze_stops_replacements_until_reverted(core: client.CoreV1Api, stack: FaultStack) -> None:
    wait_app_ready(core)
    fault = QuotaSqueeze(targets=(CLUSTER,), namespace=NS, hard={"pods": "0"})
    apps = client.AppsV1Api(core.api_client)
    with stack.applied(fault):
        quota = core.read_namespaced_resource_quota(fault.key, NS)
        assert quota.spec.hard == {"pods": "0"}
        wait_for(
            lambda: core.read_namespaced_resource_quota(fault.key, NS).status.hard,
            30,
            "the quota to be counted",
        )
        core.delete_collection_namespaced_pod(NS, label_selector=APP, grace_period_seconds=1)

        def refused() -> bool:
            conditions = apps.read_namespaced_deployment("orders", NS).status.conditions or []
            return any(
                c.type == "ReplicaFailure" and "exceeded quota" in (c.message or "") for c in conditions
            )

        wait_for(refused, 60, "the Deployment to report it cannot create its pod")
        assert not app_pods(core)
    with pytest.raises(ApiException, match="404"):
        core.read_namespaced_resource_quota(fault.key, NS)
    wait_app_ready(core)


def test_deny_all_policy_is_created_and_deleted(access: FleetAccess, stack: FaultStack) -> None:
    """Through the API only: the local fleet's network plugin does not enforce NetworkPolicy."""
    networking = client.NetworkingV1Api(access.api_client(CLUSTER))
    fault = DenyAllPolicy(targets=(CLUSTER,), namespace=NS, pod_labels={"app": "orders"})
    with stack.applied(fault):
        policy = networking.read_namespaced_network_policy(fault.key, NS)
        assert policy.spec.pod_selector.match_labels == {"app": "orders"}
        assert (
            policy.spec.policy_types == ["Ingress", "Egress"]
            and not policy.spec.ingress
            and not policy.spec.egress
        )
    assert not networking.list_namespaced_network_policy(NS).items


def test_three_faults_at_once_and_a_failing_third_reverts_the_first_two(
    access: FleetAccess, tmp_path: Path
) -> None:
    networking = client.NetworkingV1Api(access.api_client(CLUSTER))
    core = client.CoreV1Api(access.api_client(CLUSTER))
    ledger = Ledger(tmp_path / "ledger.json")
    policy = DenyAllPolicy(targets=(CLUSTER,), namespace=NS)
    quota = QuotaSqueeze(targets=(CLUSTER,), namespace=NS)
    drain = NodeDrain(targets=(CLUSTER,), nodes=("no-such-node",))
    with pytest.raises(FleetDrillError, match="node-drain in cluster eu-west: no node no-such-node"):  # noqa: SIM117
        with FaultStack(access, ledger, Timeline(), "test-three") as stack:
            stack.push(policy)
            stack.push(quota)
            assert networking.read_namespaced_network_policy(policy.key, NS)
            assert core.read_namespaced_resource_quota(quota.key, NS)
            stack.push(drain)
    assert not networking.list_namespaced_network_policy(NS).items
    assert not core.list_namespaced_resource_quota(NS).items
    assert not ledger.entries()


def test_soft_cluster_loss_of_a_missing_workload_fails_and_uncordons(
    access: FleetAccess, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    fault = SoftClusterLoss(targets=(CLUSTER,), namespace="no-such-namespace", workload="deployment/orders")
    with (
        pytest.raises(ApiException, match="404"),
        FaultStack(access, ledger, Timeline(), "test-revert") as stack,
    ):
        stack.push(fault)
    assert not ledger.entries(), "a workload that does not exist: nothing to revert, and the nodes uncordoned"
    core = client.CoreV1Api(access.api_client(CLUSTER))
    assert not any(node.spec.unschedulable for node in core.list_node().items)


# --- the drill lease, through the plugin ------------------------------------------------------------

DRILL = """
import os
import time
from pathlib import Path

from kubernetes import client

from harness.faults.network import DenyAllPolicy


def test_holds_the_lease(drill, request):
    # the fault stack alone (no evidence wait): the local fleet does not enforce NetworkPolicy
    drill.stack.push(DenyAllPolicy(targets=("eu-west",), namespace="orders"))
    # held outside the faulted cluster: in us-east (and ap-south)
    lease = client.CoordinationV1Api(drill.access.api_client("us-east")).read_namespaced_lease(
        "fleetdrill-drill-eu-west", "fleetdrill"
    )
    print("HOLDER", lease.spec.holder_identity, lease.spec.lease_duration_seconds)
    held = [] if lease.spec.holder_identity else ["no holder"]
    assert not drill.judge_drift("drill lease", "held while faulting", held).status == "fail"
    if os.environ.get("HANG_FILE"):  # stand still mid-fault, to be killed
        Path(os.environ["HANG_FILE"]).write_text(lease.spec.holder_identity)
        time.sleep(300)
"""


def run_drill(fleet_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "test_lease_drill.py").write_text(textwrap.dedent(DRILL))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(tmp_path / "test_lease_drill.py"),
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
    ]
    argv += ["--fleet", str(fleet_dir / "fleet.yaml"), "--ledger", str(tmp_path / "ledger.json")]
    argv += ["--report-dir", str(tmp_path / "reports"), "--rootdir", str(tmp_path)]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=180)


def lease_holder(access: FleetAccess) -> str | None:
    """Who holds the drill lease of CLUSTER, as its copy in HOLDER (a cluster the drill does not fault)
    says."""
    api = client.CoordinationV1Api(access.api_client(HOLDER))
    return api.read_namespaced_lease(lease_name(CLUSTER), "fleetdrill").spec.holder_identity


def test_a_drill_holds_the_lease_of_the_cluster_it_faults_and_releases_it(
    fleet_dir: Path, tmp_path: Path, access: FleetAccess
) -> None:
    done = run_drill(fleet_dir, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "HOLDER " in done.stdout and " 300\n" in done.stdout, "held for safety.lease_duration (300 s)"
    assert lease_holder(access) is None, "released after the drill"
    assert not Ledger(tmp_path / "ledger.json").entries()


def test_recover_after_a_killed_drill_reverts_its_fault_and_frees_its_lease(
    fleet_dir: Path, tmp_path: Path, access: FleetAccess
) -> None:
    (tmp_path / "test_lease_drill.py").write_text(textwrap.dedent(DRILL))
    hang, ledger = tmp_path / "holder", tmp_path / "ledger.json"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(tmp_path / "test_lease_drill.py"),
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    argv += ["--fleet", str(fleet_dir / "fleet.yaml"), "--ledger", str(ledger), "--rootdir", str(tmp_path)]
    argv += ["--report-dir", str(tmp_path / "reports")]
    env = {**os.environ, "HANG_FILE": str(hang)}
    runner = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: hang.exists() or runner.poll() is not None, 120, "the drill to hold its fault")
    finally:
        runner.kill()
        runner.wait(timeout=30)
    assert lease_holder(access) == hang.read_text(), "the killed run still holds the lease"
    networking = client.NetworkingV1Api(access.api_client(CLUSTER))
    assert networking.list_namespaced_network_policy(NS).items, "and its fault is in force"
    recovered = run_cli("recover", "--fleet", fleet_dir / "fleet.yaml", "--ledger", ledger)
    assert "reverted: deny-all-policy on eu-west" in recovered.stdout
    assert not networking.list_namespaced_network_policy(NS).items and not Ledger(ledger).entries()
    assert lease_holder(access) is None, "recover freed the lease of the run it recovered"


def test_a_second_drill_on_a_held_cluster_is_refused_in_one_line(
    fleet_dir: Path, tmp_path: Path, access: FleetAccess
) -> None:
    other = DrillLease.for_client(CLUSTER, access.api_client(HOLDER), "other-run-42", 120, held_in=HOLDER)
    other.acquire()
    try:
        done = run_drill(fleet_dir, tmp_path)
    finally:
        other.release()
    assert done.returncode == 1, done.stdout[-3000:]
    refusal = [line for line in done.stdout.splitlines() if "refused: the drill lease of eu-west" in line]
    assert refusal and "is held by run 'other-run-42' until" in refusal[0], done.stdout[-3000:]
    assert "Traceback" not in done.stdout and "lease.py" not in done.stdout, "one line, no traceback"
    assert not Ledger(tmp_path / "ledger.json").entries(), "refused before the fault was in the ledger"
    networking = client.NetworkingV1Api(access.api_client(CLUSTER))
    assert not networking.list_namespaced_network_policy(NS).items, "nothing was injected"
