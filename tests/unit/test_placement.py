"""Runner placement: where the harness runs (the fleet file's `runner`, or found from inside a pod by its
cluster's kube-system uid), and the warning when a selected drill would cut it off; unknown, nothing."""

from pathlib import Path

import pytest

from harness import placement
from harness.catalogue import SelectedDrill, Use
from harness.config import Fleet, load_fleet
from harness.errors import ConfigError
from tests.kubefake import FakeAccess, FakeKube

CLUSTERS = [
    {"name": "east", "region": "us-east", "role": "active"},
    {"name": "west", "region": "eu-west", "role": "passive"},
    {"name": "south", "region": "ap-south", "role": "standby"},
    {"name": "east2", "region": "us-east", "role": "standby"},
]
PARTITION = SelectedDrill("d.py::test_partition", "shop", True, (Use("wan-partition", ("active",)),))
LOSS = SelectedDrill("d.py::test_loss", "shop", True, (Use("cluster-loss", ("passive",)),))
STRESS = SelectedDrill("d.py::test_stress", "shop", True, (Use("node-stress", ("standby",)),))


def fleet(runner: dict[str, str] | None = None, clusters: list[dict[str, str]] = CLUSTERS) -> Fleet:
    return Fleet.model_validate(
        {"name": "unit", "clusters": clusters, **({"runner": runner} if runner else {})}
    )


def warnings(runner: dict[str, str] | None, *drills: SelectedDrill, clusters: list = CLUSTERS) -> list[str]:
    found = fleet(runner, clusters)
    return placement.warnings(found, placement.declared(found), drills)


def test_a_runner_in_a_region_a_drill_partitions_is_warned_with_the_drill_the_region_and_the_fix() -> None:
    assert warnings({"region": "us-east"}, PARTITION, LOSS, STRESS) == [
        "WARN runner: test_partition partitions region us-east, where the harness runs (the fleet file's "
        "runner): it would cut itself off from the fleet mid-drill; run the harness from outside us-east, "
        "e.g. from cluster south (region ap-south), which no selected drill cuts off"
    ]
    assert warnings({"cluster": "east2"}, PARTITION) != [], "a cluster's region is the runner's"


def test_a_runner_in_a_cluster_a_drill_loses_is_warned() -> None:
    assert warnings({"cluster": "west"}, PARTITION, LOSS) == [
        "WARN runner: test_loss loses cluster west, where the harness runs (the fleet file's runner): it "
        "would cut itself off from the fleet mid-drill; run the harness from outside west, e.g. from cluster "
        "south (region ap-south), which no selected drill cuts off"
    ]


def test_a_runner_elsewhere_or_beside_a_lost_cluster_in_its_region_is_not_warned() -> None:
    assert warnings({"cluster": "south"}, PARTITION, LOSS, STRESS) == []
    assert warnings({"region": "eu-west"}, LOSS) == [], "a loss takes the cluster, not its region"
    assert warnings({"cluster": "south"}, STRESS) == [], "stress cuts nobody off"


def test_where_no_cluster_is_safe_the_fix_is_outside_the_fleet() -> None:
    every = SelectedDrill("d.py::test_every", "shop", True, (Use("cluster-loss", ("every",)),))
    [line] = warnings({"cluster": "east"}, every, clusters=CLUSTERS[:2])
    assert line.endswith(
        "run the harness from outside east, e.g. from a machine or a cluster outside the fleet"
    )


def test_an_unknown_runner_is_never_warned() -> None:
    assert placement.warnings(fleet(), None, [PARTITION, LOSS]) == []


def kube_system(uid: str) -> FakeKube:
    return FakeKube({"/api/v1/namespaces/kube-system": {"metadata": {"name": "kube-system", "uid": uid}}})


@pytest.fixture
def account(tmp_path: Path) -> Path:
    (tmp_path / "namespace").write_text("fleetdrill\n")
    return tmp_path


def test_in_a_pod_the_cluster_is_the_one_whose_kube_system_uid_is_its_own(account: Path) -> None:
    found = fleet()
    access = FakeAccess(
        found, {name: kube_system(f"uid-{name}") for name in ("east", "west", "south", "east2")}
    )
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    where = placement.in_cluster(found, access, (), env, account, lambda: "uid-west")
    assert where == placement.Location(
        "west", "eu-west", "a pod in namespace fleetdrill of cluster west, by its kube-system uid"
    )
    [line] = placement.warnings(found, where, [LOSS])
    assert line.startswith("WARN runner: test_loss loses cluster west, where the harness runs (a pod in ")


def test_outside_a_pod_or_in_no_fleet_cluster_or_unreadable_the_runner_is_unknown(account: Path) -> None:
    found, env = fleet(), {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    clusters = {name: kube_system(f"uid-{name}") for name in ("east", "west", "south", "east2")}
    access = FakeAccess(found, clusters)
    assert placement.in_cluster(found, access, (), {}, account, lambda: "uid-west") is None
    assert placement.in_cluster(found, access, (), env, account / "missing", lambda: "uid-west") is None
    assert placement.in_cluster(found, access, (), env, account, lambda: None) is None
    assert placement.in_cluster(found, access, (), env, account, lambda: "uid-management") is None
    assert placement.in_cluster(found, access, ("west",), env, account, lambda: "uid-west") is None
    clusters["west"] = FakeKube({}, refuse={"/api/v1/namespaces/kube-system": 403})
    assert placement.in_cluster(found, access, (), env, account, lambda: "uid-west") is None


def test_the_fleet_files_runner_wins_and_its_cluster_gives_its_region() -> None:
    assert placement.declared(fleet({"cluster": "east2"})) == placement.Location(
        "east2", "us-east", "the fleet file's runner"
    )
    assert placement.declared(fleet({"region": "mars"})) == placement.Location(
        None, "mars", "the fleet file's runner"
    )
    assert placement.declared(fleet()) is None


@pytest.mark.parametrize(
    ("runner", "problem"),
    [
        ("{cluster: north}", "runner.cluster: expected a cluster name (east, west), got 'north'"),
        (
            "{cluster: east, region: eu-west}",
            "runner.region: expected the region of cluster east (us-east), got 'eu-west'",
        ),
        ("{}", "runner: expected at least one of cluster, region, got {}"),
        ("{zone: a}", "runner.zone: unknown field"),
    ],
)
def test_a_wrong_runner_in_the_fleet_file_is_one_line(tmp_path: Path, runner: str, problem: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: unit\nclusters:\n  - {name: east, region: us-east}\n  - {name: west, region: eu-west}\n"
        f"runner: {runner}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert str(caught.value) == f"{path}: {problem}"
