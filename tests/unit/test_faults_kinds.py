"""The fault kinds as data: every one round-trips through the ledger's JSON, checks its parameters, and picks
its victims as Chaos Toolkit and Chaos Mesh users expect (their API effects are tested on the local fleet)."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from kubernetes.client.exceptions import ApiException

from harness.faults import KINDS, Fault, fault_from_record, kube
from harness.faults.cluster import ClusterLoss
from harness.faults.kube import label_selector_text, parse_selector, selector_matches
from harness.faults.network import DenyAllPolicy
from harness.faults.nodes import NodeDrain, NodeLoss, evictable
from harness.faults.partition import WanPartition
from harness.faults.pods import PodKill, choose
from harness.faults.resources import NodeStress, QuotaSqueeze, requested, stress_pod
from harness.faults.scratch import ScratchNamespace
from harness.faults.workload import SoftClusterLoss

EVERY_KIND: list[Fault] = [
    PodKill(
        targets=("east",), namespace="shop", selector="app=shop,tier in (web, api)", mode="fixed", value=2
    ),
    NodeDrain(targets=("east",), nodes=("east-node-0",), grace_period_s=5),
    NodeLoss(targets=("east",), nodes=("east-node-1", "east-node-2")),
    SoftClusterLoss(targets=("east", "west"), namespace="shop", workload="statefulset/db"),
    NodeStress(targets=("east",), selector="pool=spot", cpu_fraction=0.5, memory_fraction=0.25),
    QuotaSqueeze(targets=("east",), namespace="shop", hard={"pods": "3", "requests.cpu": "500m"}),
    DenyAllPolicy(targets=("west",), namespace="shop", pod_labels={"app": "shop"}, direction="egress"),
    ClusterLoss(targets=("east",)),
    WanPartition(targets=("east",)),
    ScratchNamespace(targets=("south",), namespaces=("shop-restore-1a2b", "shop-db-restore-1a2b")),
]


@pytest.mark.parametrize("fault", EVERY_KIND, ids=lambda fault: fault.kind)
def test_every_kind_round_trips_through_the_ledger_record(fault: Fault) -> None:
    record = json.loads(json.dumps(fault.to_record()))
    rebuilt = fault_from_record(record)
    assert rebuilt == fault and rebuilt.key == fault.key
    assert KINDS[fault.kind] is type(fault)


def test_the_key_names_the_fault_and_changes_with_any_parameter() -> None:
    fault = DenyAllPolicy(targets=("west",), namespace="shop")
    assert fault.key.startswith("deny-all-policy-") and len(fault.key) <= 63
    assert fault.key == DenyAllPolicy(targets=("west",), namespace="shop").key
    assert fault.key != DenyAllPolicy(targets=("west",), namespace="shop", direction="ingress").key
    assert fault.key != DenyAllPolicy(targets=("east",), namespace="shop").key


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PodKill(targets=("e",), namespace="s", mode="some"), "expected mode one of one, all, fixed"),
        (lambda: PodKill(targets=("e",), namespace="s", mode="fixed"), "mode fixed needs a value above zero"),
        (lambda: PodKill(targets=("e",), namespace="s", selector="app=(x"), "expected a label selector"),
        (lambda: NodeDrain(targets=("e",)), "expected nodes or a node selector, got neither"),
        (lambda: NodeLoss(targets=("e", "w"), nodes=("n",)), "expected the one cluster the nodes are in"),
        (lambda: NodeLoss(targets=("e",), nodes=()), "expected node names, got ()"),
        (
            lambda: SoftClusterLoss(targets=("e",), namespace="s", workload="daemonset/agent"),
            "expected workload deployment/NAME or statefulset/NAME, got 'daemonset/agent'",
        ),
        (lambda: NodeStress(targets=("e",), cpu_fraction=1.5), "expected cpu_fraction in [0, 1], got 1.5"),
        (lambda: DenyAllPolicy(targets=("e",), namespace="s", direction="up"), "expected direction one of"),
        (
            lambda: ScratchNamespace(targets=("e",), namespaces="shop-restore"),  # type: ignore[arg-type]
            "expected namespaces as a list of namespace names, got 'shop-restore'",
        ),
    ],
)
def test_bad_parameters_are_refused_naming_them(build: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        build()  # type: ignore[operator]
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("app=shop", {"app": "shop", "tier": "web"}, True),
        ("app==shop,tier!=web", {"app": "shop", "tier": "web"}, False),
        ("tier in (web, api)", {"tier": "api"}, True),
        ("tier notin (web,api)", {"tier": "db"}, True),
        ("tier notin (web,api)", {}, True),
        ("app,!canary", {"app": "x"}, True),
        ("app,!canary", {"app": "x", "canary": "1"}, False),
        ("app.kubernetes.io/name=shop", {"app.kubernetes.io/name": "shop"}, True),
    ],
)
def test_label_selectors_match_as_kubectl_reads_them(selector: str, labels: dict, matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


def test_a_label_selector_object_becomes_text_that_matches_the_same() -> None:
    expression = SimpleNamespace(key="tier", operator="In", values=["web", "api"])
    missing = SimpleNamespace(key="canary", operator="DoesNotExist", values=None)
    selector = SimpleNamespace(match_labels={"app": "shop"}, match_expressions=[expression, missing])
    text = label_selector_text(selector)
    assert text == "app=shop,tier in (web,api),!canary"
    assert [term[1] for term in parse_selector(text)] == ["=", "in", "!exists"]


@pytest.mark.parametrize(
    ("mode", "value", "count"),
    [
        ("one", None, 1),
        ("all", None, 10),
        ("fixed", 3, 3),
        ("fixed", 30, 10),
        ("fixed-percent", 25, 2),
        ("fixed-percent", 1, 1),
    ],
)
def test_pod_kill_modes_pick_as_chaos_mesh_does(mode: str, value: int | None, count: int) -> None:
    pods = list(range(10))
    chosen = choose(pods, mode, value, random.Random(7))
    assert len(chosen) == count and len(set(chosen)) == count and set(chosen) <= set(pods)


def pod(
    phase: str = "Running", owner: str | None = "ReplicaSet", mirror: bool = False, ending: bool = False
) -> object:
    owners = [SimpleNamespace(kind=owner)] if owner else []
    annotations = {"kubernetes.io/config.mirror": "x"} if mirror else {}
    meta = SimpleNamespace(
        deletion_timestamp="now" if ending else None, annotations=annotations, owner_references=owners
    )
    return SimpleNamespace(metadata=meta, status=SimpleNamespace(phase=phase))


def test_a_drain_evicts_what_kubectl_drain_evicts() -> None:
    assert evictable(pod()) and evictable(pod(owner=None))
    assert not evictable(pod(owner="DaemonSet")) and not evictable(pod(mirror=True))
    assert not evictable(pod(phase="Succeeded")) and not evictable(pod(ending=True))


def container(**requests: str) -> object:
    return SimpleNamespace(resources=SimpleNamespace(requests=requests))


def test_stress_pods_are_sized_to_what_the_node_has_left() -> None:
    used = requested(
        [SimpleNamespace(spec=SimpleNamespace(containers=[container(cpu="250m", memory="1Gi"), container()]))]
    )
    assert used == {"cpu": pytest.approx(0.25), "memory": 2**30}
    body = stress_pod("stress-a", "east-node-0", "node-stress-abc", 1500, 512 * 2**20, "fleetdrill.io/stress")
    spec = body["spec"]
    (stress,) = spec["containers"]
    assert spec["nodeName"] == "east-node-0" and spec["tolerations"] == [{"operator": "Exists"}]
    assert (
        stress["resources"]["requests"]
        == stress["resources"]["limits"]
        == {"cpu": "1500m", "memory": "512Mi"}
    )
    assert stress["args"] == [
        *("--cpu", "2", "--cpu-load", "75"),
        *("--vm", "15", "--vm-bytes", "460M", "--vm-populate", "--vm-hang", "0"),  # 32 MiB a worker, held
    ]
    assert "command" not in stress, "the image's entrypoint (stress-ng) gets the options"
    assert body["metadata"]["labels"] == {"fleetdrill.io/fault": "node-stress-abc"}


class Namespaces:
    """CoreV1Api: namespaces that go when deleted; deleting their pods is forbidden (a role without it)."""

    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels

    def read_namespace(self, name: str, **_: object) -> SimpleNamespace:
        if name not in self.labels:
            raise ApiException(status=404)
        return SimpleNamespace(metadata=SimpleNamespace(labels=self.labels[name]))

    def delete_namespace(self, name: str, **_: object) -> None:
        self.labels.pop(name, None)

    def delete_collection_namespaced_pod(self, namespace: str, **_: object) -> None:
        raise ApiException(status=403)


def test_a_scratch_namespace_is_reverted_where_deleting_its_pods_at_once_is_forbidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = ScratchNamespace(targets=("south",), namespaces=("shop-restore-1a2b",))
    api = Namespaces({"shop-restore-1a2b": {kube.FAULT_LABEL: scratch.key}, "shop": {}})
    monkeypatch.setattr(kube, "core", lambda _client: api)
    scratch.revert(SimpleNamespace(api_client=lambda _cluster: None))  # type: ignore[arg-type]
    assert api.labels == {"shop": {}}, "the scratch namespace went, nothing else"
