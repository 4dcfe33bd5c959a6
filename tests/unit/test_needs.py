"""What the selected drills need, per cluster: the drill markers' `uses` (harness.catalogue), checked and
collected as a run selects drills, resolved to each part's permissions in the clusters it acts on
(harness.needs); and the catalogue's own drills declare what their code does."""

import ast
import textwrap
from pathlib import Path

import pytest

from harness import catalogue, needs
from harness.catalogue import SelectedDrill, Use
from harness.config import Fleet, dump_fleet
from harness.errors import ConfigError
from harness.faults import all_kinds

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = [
    {"name": "east", "region": "us-east", "role": "active"},
    {"name": "west", "region": "eu-west", "role": "passive"},
    {"name": "south", "region": "ap-south", "role": "standby"},
]
APP = {"name": "shop", "namespace": "shop", "workload": "deployment/shop", "endpoints": {"east": "http://e/"}}


def fleet(**more: object) -> Fleet:
    return Fleet.model_validate({"name": "unit", "clusters": CLUSTERS, "apps": [APP], **more})


def drill(*uses: tuple[str, str | tuple[str, ...]], destructive: bool = True) -> SelectedDrill:
    declared = tuple(Use(part, (roles,) if isinstance(roles, str) else roles) for part, roles in uses)
    return SelectedDrill("drills/test_x.py::test_x", "shop", destructive, declared)


def table(found: list[needs.Need]) -> set[tuple[str, str]]:
    return {(n.cluster, n.permission.text()) for n in found}


def test_a_fault_needs_its_permissions_in_its_targets_and_a_destructive_drill_its_lease_and_as_found() -> (
    None
):
    found = needs.needs(fleet(), [drill(("pod-kill", "active"))])
    lease = {
        (c, f"{v} leases.coordination.k8s.io in namespace fleetdrill")
        for c in ("east", "west", "south")
        for v in ("get", "create", "update")
    }
    kills = {("east", f"{v} pods in namespace shop") for v in ("list", "delete")}
    workloads = {
        ("east", f"list {kind}.apps in namespace shop")
        for kind in ("deployments", "statefulsets", "daemonsets")
    }
    assert table(found) == lease | kills | workloads, (
        "the as-found check lists pods where the app has endpoints"
    )
    [pods] = [n for n in found if n.permission.text() == "list pods in namespace shop"]
    assert pods.why() == "pod-kill in test_x; as-found check in test_x"


def test_the_promote_failover_moves_the_gslb_in_every_cluster_and_observe_needs_nothing() -> None:
    promote = table(needs.needs(fleet(), [drill(("failover", "passive"), destructive=False)]))
    assert promote == {(c, "patch gslbs.k8gb.io in namespace shop") for c in ("east", "west", "south")}
    observing = fleet(apps=[{**APP, "failover": {"strategy": "observe"}}])
    assert needs.needs(observing, [drill(("failover", "passive"), destructive=False)]) == []


def test_roles_pick_the_clusters_of_the_first_role_the_fleet_has_or_every_cluster() -> None:
    restore = drill(("velero-restore", ("standby", "passive")), destructive=False)
    assert {c for c, _ in table(needs.needs(fleet(), [restore]))} == {"south"}
    without_standby = fleet(clusters=CLUSTERS[:2], absent_roles=["standby"])
    assert {c for c, _ in table(needs.needs(without_standby, [restore]))} == {"west"}
    loss = drill(("node-drain", "every"), destructive=False)
    assert {c for c, _ in table(needs.needs(fleet(), [loss]))} == {"east", "west", "south"}
    velero = {p for _, p in table(needs.needs(fleet(velero={"namespace": "backups"}), [restore]))}
    assert "create restores.velero.io in namespace backups" in velero


def test_restarting_velero_to_sync_needs_patch_on_its_deployment_only_in_the_restore_target() -> None:
    restore = drill(("velero-restore", "standby"), destructive=False)
    restart = ("south", "patch deployments.apps in namespace backups")
    assert restart not in table(needs.needs(fleet(velero={"namespace": "backups"}), [restore]))
    asked = table(needs.needs(fleet(velero={"namespace": "backups", "restart_to_sync": True}), [restore]))
    assert restart in asked and not {p for c, p in asked if c != "south"}


def test_non_prod_picks_every_cluster_whose_environment_is_not_prod() -> None:
    segmented = [{**c, "environment": e} for c, e in zip(CLUSTERS, ("prod", "staging", "dev"), strict=True)]
    assert Use("cluster-loss", ("non-prod",)).clusters(fleet(clusters=segmented)) == ("west", "south")
    assert Use("cluster-loss", ("non-prod",)).clusters(fleet()) == (), "an unsegmented fleet: none faulted"
    assert catalogue.uses_of("d.py::t", {"cluster-loss": "non-prod"}, needs.parts()) == (
        Use("cluster-loss", ("non-prod",)),
    )


def test_the_lease_is_asked_only_where_safety_lease_cluster_holds_it() -> None:
    found = needs.needs(fleet(safety={"lease_cluster": "west"}), [drill(("cluster-loss", "every"))])
    assert {c for c, p in table(found) if "leases" in p} == {"west"}


def test_a_permission_many_drills_need_is_asked_once_naming_the_first_and_how_many_more() -> None:
    drills = [
        SelectedDrill(f"d.py::test_{i}", "shop", True, (Use("cluster-loss", ("active",)),)) for i in range(3)
    ]
    found = needs.needs(fleet(), drills)
    assert len(found) == len(table(found))
    assert {n.why() for n in found} == {
        "drill lease in test_0 and 2 more",
        "as-found check in test_0 and 2 more",
    }


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        (["cluster-loss"], "expected a mapping of part to roles, got [cluster-loss]"),
        ({"cluster-lost": "active"}, "expected a part (backup-hygiene-read, chaos-mesh-network, "),
        ({"cluster-loss": "primary"}, "[cluster-loss]: expected a role (active, passive, standby), a list"),
        ({"cluster-loss": []}, "[cluster-loss]: expected a role"),
        ({"failover": ("passive", 3)}, "[failover]: expected a role"),
        ({"failover": ("every", "passive")}, "[failover]: expected a role"),
        ({"cluster-loss": ("non-prod", "standby")}, "a list of them, every or non-prod, got"),
    ],
)
def test_a_wrong_uses_is_one_line_naming_the_drill_and_what_is_expected(
    declared: object, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        catalogue.uses_of("drills/test_x.py::test_x", declared, needs.parts())
    assert str(caught.value).startswith("drills/test_x.py::test_x: @pytest.mark.drill(uses=...)")
    assert problem in str(caught.value).replace("'", ""), str(caught.value)


def test_uses_names_any_fault_kind_a_drill_injects_but_never_a_recovery_change() -> None:
    known = needs.parts()
    assert {"pod-kill", "cluster-loss", "chaos-mesh-network", "failover", "service-proxy"} <= set(known)
    assert known["failover"].label == "failover" and known["failover"].everywhere


DRILL_FILE = """
import pytest


@pytest.mark.gate
@pytest.mark.drill(app="shop")
def test_reads(cluster_name):
    pass


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.drill(app="shop", uses={"pod-kill": "active", "velero-restore": ["standby", "passive"]})
def test_kills(cluster_name):
    pass


def test_not_a_drill():
    pass
"""


@pytest.fixture
def drills_folder(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A drills folder; its module's name is the test's (pytest imports drill modules by their name)."""
    (tmp_path / "fleet.yaml").write_text(dump_fleet(fleet(clusters=CLUSTERS[:2], absent_roles=["standby"])))
    (tmp_path / "drills").mkdir()
    (tmp_path / "drills" / f"{request.node.name}_drills.py").write_text(DRILL_FILE)
    return tmp_path / "drills"


def test_collect_selects_drills_as_a_run_does_each_once_with_what_it_uses(drills_folder: Path) -> None:
    fleet_file = drills_folder.parent / "fleet.yaml"
    every = catalogue.collect(drills_folder, fleet_file, None, needs.parts())
    assert [(d.short, d.app, d.destructive, d.uses) for d in every] == [
        ("test_reads", "shop", False, ()),
        (
            "test_kills",
            "shop",
            True,
            (Use("pod-kill", ("active",)), Use("velero-restore", ("standby", "passive"))),
        ),
    ], "one per drill whatever its parameters; tests without a drill marker are no drills"
    gate = catalogue.collect(drills_folder, fleet_file, "gate", needs.parts())
    assert [d.short for d in gate] == ["test_reads"]


def test_drills_that_cannot_be_collected_are_one_line(drills_folder: Path) -> None:
    (drills_folder / "test_catalogue_broken.py").write_text("import no_such_module\n")
    with pytest.raises(ConfigError) as caught:
        catalogue.collect(drills_folder, drills_folder.parent / "fleet.yaml", None, needs.parts())
    assert str(caught.value) == (
        f"{drills_folder}: the drills cannot be collected: drills/test_catalogue_broken.py: "
        "E   ModuleNotFoundError: No module named 'no_such_module'"
    )


CALLS = {
    "fail_over": "failover",
    "back_up": "velero-backup",
    "restore_to_standby": "velero-restore",
    "Load": "load",
    "Preflight().run": "readiness-read",
    "Preflight().backups": "backup-hygiene-read",
    "compare": "parity-read",
}
"""What a drill's code calls, by the part it stands for (beside the fault classes it makes); a method of an
object made in the call, by its class: "Preflight().run"."""


def done_and_declared(source: str) -> dict[str, tuple[set[str], set[str]]]:
    """Per drill function of `source`: the parts its code uses, and the keys of its marker's `uses`."""
    kinds = {cls.__name__: kind for kind, cls in all_kinds().items() if not cls.recovery}
    found = {}
    for function in ast.parse(source).body:
        if not isinstance(function, ast.FunctionDef):
            continue
        marker = next(
            (
                d
                for d in function.decorator_list
                if isinstance(d, ast.Call) and ast.unparse(d.func) == "pytest.mark.drill"
            ),
            None,
        )
        if marker is None:
            continue
        uses = next((k.value for k in marker.keywords if k.arg == "uses"), None)
        declared = {key.value for key in uses.keys} if isinstance(uses, ast.Dict) else set()
        done = set()
        for call in (node for node in ast.walk(function) if isinstance(node, ast.Call)):
            name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
            if isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Call):
                name = f"{ast.unparse(call.func.value.func)}().{name}"
            part = (
                kinds.get(name) or CALLS.get(name) or ("service-proxy" if name == "service_proxy" else None)
            )
            if part is not None:
                done.add(part)
        found[function.name] = (done, declared)
    return found


def test_every_drill_declares_what_its_code_does() -> None:
    for path in sorted((ROOT / "drills").glob("test_*.py")):
        for name, (done, declared) in done_and_declared(path.read_text()).items():
            assert done == declared, (
                f"{path.name}::{name}: its code uses {sorted(done)}, its marker {sorted(declared)}"
            )


def test_the_declaration_check_sees_a_drill_that_does_more_than_it_declares() -> None:
    source = textwrap.dedent("""
        @pytest.mark.drill(app="shop", uses={"cluster-loss": "active"})
        def test_x(drill, failover):
            drill.inject(ClusterLoss(targets=("east",)))
            drill.inject(PodKill(targets=("east",), namespace="shop"))
            failover.fail_over(app, "west")
    """)
    assert done_and_declared(source) == {
        "test_x": ({"cluster-loss", "pod-kill", "failover"}, {"cluster-loss"})
    }


def test_the_gate_drills_need_what_they_read_in_each_role(tmp_path: Path) -> None:
    """The catalogue's gate drills, as doctor collects them: parity's namespace kinds in every cluster, the
    backups and the restore dry run where the app is backed up, the takeover's reads where it fails over to,
    the storage location where it is restored into."""
    (tmp_path / "fleet.yaml").write_text(dump_fleet(fleet()))
    gate = catalogue.collect(ROOT / "drills", tmp_path / "fleet.yaml", "gate", needs.parts())
    assert {d.short for d in gate} >= {
        "test_the_dr_path_is_ready",
        "test_standby_runs_what_the_active_cluster_runs",
        "test_backups_are_recent_and_kept_in_another_region",
    }
    found = table(needs.needs(fleet(), gate))
    kinds = {
        "services",
        "serviceaccounts",
        "persistentvolumeclaims",
        "ingresses.networking.k8s.io",
        "networkpolicies.networking.k8s.io",
        "horizontalpodautoscalers.autoscaling",
        "poddisruptionbudgets.policy",
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "every namespaced custom resource",
    }
    for cluster in ("east", "west", "south"):
        assert {(cluster, f"list {kind} in namespace shop") for kind in kinds} <= found, cluster
        assert {(cluster, f"get {kind} in namespace shop") for kind in ("configmaps", "secrets")} <= found
        assert (cluster, "get deployments.apps in namespace shop") in found
    backups = {
        ("east", "list backups.velero.io in namespace velero"),
        ("east", "get backups.velero.io in namespace velero"),
        ("east", "create downloadrequests.velero.io in namespace velero"),
        ("east", "list every namespaced resource in namespace shop"),
        ("east", "list customresourcedefinitions.apiextensions.k8s.io"),
    }
    location = {
        (cluster, text)
        for cluster in ("east", "south")
        for text in (
            "list backupstoragelocations.velero.io in namespace velero",
            "get secrets in namespace velero",
            "get customresourcedefinitions.apiextensions.k8s.io",
        )
    }
    takeover = {(c, p) for c in ("west", "south") for p in ("list nodes", "list pods in every namespace")}
    assert backups | location | takeover <= found
    assert not {(c, p) for c, p in found if c != "east" and "backups.velero.io" in p}, "only east backs up"
    assert not {(c, p) for c, p in found if c == "west" and "velero" in p}, "nothing of velero's in passive"
    assert not {(c, p) for c, p in found if c == "east" and p.startswith("list nodes")}
    [hygiene] = [n for n in needs.needs(fleet(), gate) if n.permission.text().startswith("create download")]
    assert hygiene.why() == (
        "backup hygiene in test_backups_are_recent_and_kept_in_another_region; dr readiness in "
        "test_the_dr_path_is_ready"
    )
