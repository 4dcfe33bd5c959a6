"""The examples in fixtures/examples say what really runs: every fleetdrill command in the CI workflow
parses as the CLI takes it, the cloud, hybrid and PostgreSQL fleet files load as fleetdrill loads a fleet
file (the hybrid one's per-cluster scripts run through its real provider), and the CronJob's identity
holds every permission the drills may need."""

import datetime
import shlex
from pathlib import Path

import pytest
import yaml

from harness import cli, needs
from harness.config import App, ChaosToolkitSettings, CommandSettings, Fleet, PostgresqlSentinels, load_fleet
from harness.infra.chaostoolkit import as_text, pick
from harness.infra.command import render
from harness.infra.providers import provider_for
from harness.infra.registry import LOSE_CLUSTER, RESTORE_CLUSTER, Target
from harness.infra.steps import places
from harness.permissions import Permission
from harness.strategies import all_strategies

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "examples"


def test_the_ci_workflow_gates_on_commands_the_cli_takes() -> None:
    workflow = yaml.safe_load((EXAMPLES / "ci-gate.yml").read_text())
    steps = workflow["jobs"]["dr-gate"]["steps"]
    commands = [line for step in steps for line in step.get("run", "").splitlines() if "fleetdrill " in line]
    runs = [shlex.split(line) for line in commands if line.strip().startswith("fleetdrill")]
    assert runs, "the workflow runs fleetdrill"
    for argv in runs:
        args = cli.parser().parse_args(argv[1:])
        assert args.handler is cli.cmd_run and args.suite == "gate"
    assert workflow["jobs"]["rollout"]["needs"] == "dr-gate"


def test_the_cronjob_runs_the_quarterly_suite() -> None:
    documents = list(yaml.safe_load_all((EXAMPLES / "cronjob.yaml").read_text()))
    (cronjob,) = [d for d in documents if d["kind"] == "CronJob"]
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    args = cli.parser().parse_args(container["args"])
    assert args.handler is cli.cmd_run and args.suite == "quarterly"


def test_the_main_job_runs_the_quarterly_suite_unless_told_another() -> None:
    demo = cli.parser().parse_args(["demo"])
    assert demo.handler is cli.cmd_demo and demo.suite == "quarterly"
    assert cli.parser().parse_args(["demo", "--suite", "gameday"]).suite == "gameday"


@pytest.mark.parametrize("name", ["fleet-eks.yaml", "fleet-gke.yaml", "fleet-aks.yaml"])
def test_a_cloud_fleet_example_is_a_fleet_file_with_cloud_steps(name: str) -> None:
    fleet = load_fleet(EXAMPLES / name)  # a schema error is a ConfigError here
    settings = fleet.infrastructure.typed_settings()
    assert isinstance(settings, ChaosToolkitSettings) and settings.lose_cluster and settings.restore_cluster
    assert all(cluster.cloud and cluster.zones for cluster in fleet.clusters)
    assert set(fleet.safety.allowlist) == {fleet.context_for(cluster) for cluster in fleet.clusters}
    for app in fleet.apps:
        assert app.served_by and app.sentinels and app.objectives.rto and app.objectives.rpo
        assert set(app.endpoints) == {cluster.name for cluster in fleet.clusters}


def test_the_eks_example_fails_payments_over_with_a_route_53_change() -> None:
    """The command strategy with the cluster's cloud ids: the change batch and CLI profile of the cluster
    taking over."""
    fleet = load_fleet(EXAMPLES / "fleet-eks.yaml")
    app = fleet.app("payments")
    assert app.failover.strategy == "command"
    values = {
        "app": app.name,
        "namespace": app.namespace,
        "cluster": "usw2",
        "context": fleet.context_for("usw2"),
    }
    argv = render(app.failover.command or (), values | places(fleet)["usw2"])  # type: ignore[attr-defined]
    assert argv[:3] == ["aws", "--profile", "dr-444455556666"] and "change-resource-record-sets" in argv
    assert argv[-1] == "file://dr/payments-to-usw2.json"


def test_the_hybrid_example_runs_each_cluster_s_own_scripts_through_one_command_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An on-premises cluster and two clouds: the command provider runs dr/PLATFORM/STEP for each cluster
    (stand-in scripts here, which log their arguments and print a handle), and each restore step gets
    the handle its lose step printed."""
    fleet = load_fleet(EXAMPLES / "fleet-hybrid.yaml")
    assert isinstance(fleet.infrastructure.typed_settings(), CommandSettings)
    platforms = {c.name: c.cloud["platform"] for c in fleet.clusters}
    assert platforms == {"dc1": "onprem", "euc1": "eks", "euw3": "gke"}
    assert fleet.cluster("dc1").kubeconfig is not None, "the data centre's cluster has its own kubeconfig"
    assert set(fleet.safety.allowlist) == {fleet.context_for(cluster) for cluster in fleet.clusters}
    assert set(fleet.app("storefront").endpoints) == set(platforms)
    log = tmp_path / "ran.log"
    for platform in set(platforms.values()):
        for step in ("lose-cluster", "restore-cluster"):
            script = tmp_path / "dr" / platform / step
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(
                f'#!/bin/sh\necho "{platform}/{step} $*" >> {log}\necho "{platform}-$1-handle"\n'
            )
            script.chmod(0o755)
    monkeypatch.chdir(tmp_path)  # the example's scripts are relative to where fleetdrill runs
    provider = provider_for(fleet)
    assert provider is not None
    for cluster in platforms:
        handle = provider.run(LOSE_CLUSTER, Target(cluster=cluster))
        provider.run(RESTORE_CLUSTER, Target(cluster=cluster), handle or "")
    lines = log.read_text().splitlines()
    assert lines[:2] == [
        "onprem/lose-cluster dc1 eu-central-dc1 /DC1/host/k8s-prod/Resources/shop-dc1 "
        "vcenter.dc1.shop.internal",
        "onprem/restore-cluster dc1 eu-central-dc1 /DC1/host/k8s-prod/Resources/shop-dc1 "
        "vcenter.dc1.shop.internal onprem-dc1-handle",
    ]
    assert lines[2].startswith("eks/lose-cluster euc1 eu-central-1 EXT5hR8kW2nQ7vYp3 111122223333")
    assert (
        lines[5] == "gke/restore-cluster euw3 europe-west3 shop-euw3/default-pool shop-prod gke-euw3-handle"
    )


def test_the_postgresql_example_keeps_sentinels_in_the_app_s_database() -> None:
    """Every cluster a drill reads back from has its database, the restored copy too, and no password is
    in the file (the loader refuses one)."""
    fleet = load_fleet(EXAMPLES / "fleet-postgresql.yaml")
    (app,) = fleet.apps
    sentinels = app.sentinels
    assert isinstance(sentinels, PostgresqlSentinels) and sentinels.password_env
    assert set(sentinels.clusters) == set(app.endpoints) and sentinels.restored
    assert "target_session_attrs=read-write" in sentinels.primary
    assert app.objectives.rpo and app.failover.strategy == "command"
    assert {c.role for c in fleet.clusters} == {"active", "passive", "standby"}


FIS_ANSWER = {  # start_experiment's answer, as boto3 gives it (AWS CLI reference, fis start-experiment)
    "ResponseMetadata": {"RequestId": "1ceaedae-5897-4b64-9ade-9e94449f1262", "HTTPStatusCode": 200},
    "experiment": {
        "id": "ABC12DeFGhI3jKLMNOP",
        "experimentTemplateId": "ABCDE1fgHIJkLmNop",
        "state": {"status": "initiating", "reason": "Experiment is initiating."},
        "creationTime": datetime.datetime(2025, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
    },
}
STOPPED = [
    {"StoppingInstances": [{"InstanceId": "i-0123456789abcdef0", "CurrentState": {"Name": "stopping"}}]}
]
AKS_STOPPED = {"resources": [{"id": "/subscriptions/0b1f/resourceGroups/rg/providers/x/aks-shop-weu"}]}


@pytest.mark.parametrize(
    ("name", "step", "answer", "handle"),
    [
        ("fleet-eks.yaml", "lose_cluster", FIS_ANSWER, "ABC12DeFGhI3jKLMNOP"),
        ("fleet-eks.yaml", "lose_node", STOPPED, "i-0123456789abcdef0"),
        ("fleet-aks.yaml", "lose_cluster", AKS_STOPPED, AKS_STOPPED["resources"][0]["id"]),
    ],
)
def test_an_example_s_handle_finds_the_id_in_what_its_action_returns(
    name: str, step: str, answer: object, handle: str
) -> None:
    settings = load_fleet(EXAMPLES / name).infrastructure.typed_settings()
    assert isinstance(settings, ChaosToolkitSettings)
    assert pick(as_text(answer), getattr(settings, step)["handle"], step) == handle


def test_the_eks_example_stops_the_fis_experiment_its_lose_step_started() -> None:
    settings = load_fleet(EXAMPLES / "fleet-eks.yaml").infrastructure.typed_settings()
    assert isinstance(settings, ChaosToolkitSettings) and settings.restore_cluster is not None
    assert settings.restore_cluster["func"] == "stop_experiment"
    assert settings.restore_cluster["arguments"] == {"experiment_id": "{handle}"}


def granted(rules: list[dict], permission: Permission) -> bool:
    """Whether RBAC rules grant the permission (resources as RBAC spells them: "pods/eviction")."""
    return any(
        {permission.group, "*"} & set(rule.get("apiGroups", []))
        and {permission.resource, "*"} & set(rule.get("resources", []))
        and {permission.verb, "*"} & set(rule.get("verbs", []))
        for rule in rules
    )


def every_permission() -> set[Permission]:
    """Every permission any part of the harness declares, whatever strategy and workload an app has, in a
    cluster of every role, in every API group a moved resource may be served in."""
    failovers = [{"strategy": strategy, "command": ["failover.sh"]} for strategy in all_strategies()]
    apps = [App(name="a", namespace="a", workload="deployment/a", failover=f) for f in failovers]
    apps += [App(name="a", namespace="a", workload=f"{kind}/a") for kind in ("statefulset", "daemonset")]
    roles = ("active", "passive", "standby")
    clusters = [{"name": role, "region": "r", "role": role} for role in roles]
    fleet = Fleet(name="f", clusters=clusters, velero={"restart_to_sync": True})
    declared = [*needs.parts().values(), needs.LEASE, needs.AS_FOUND]
    found = {
        permission
        for part in declared
        for app in apps
        for cluster in fleet.clusters
        for permission in part.permissions(fleet, app, cluster)
    }
    return {asked for p in found for asked in (p.in_groups(p.served_in) if p.served_in else (p,))}


def test_the_cronjobs_roles_grant_every_permission_the_drills_may_need() -> None:
    """What `fleetdrill doctor` asks for, the example's ServiceAccount holds: its ClusterRole everywhere, its
    Role in the drill leases' namespace."""
    documents = list(yaml.safe_load_all((EXAMPLES / "cronjob.yaml").read_text()))
    (cluster_role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    (role,) = [d for d in documents if d["kind"] == "Role"]
    missing = [
        p.text()
        for p in sorted(every_permission(), key=Permission.text)
        if not granted(cluster_role["rules"], p)
        and not (p.namespace == role["metadata"]["namespace"] and granted(role["rules"], p))
    ]
    assert missing == [], missing


def test_the_grant_check_sees_a_permission_no_rule_grants() -> None:
    rules = [{"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list"]}]
    assert granted(rules, Permission("get", "nodes"))
    assert not granted(rules, Permission("get", "nodes/proxy"))
    assert not granted(rules, Permission("delete", "pods", namespace="shop"))
    assert not granted(rules, Permission("get", "leases", "coordination.k8s.io", "fleetdrill"))


def test_the_rollout_tools_run_the_gate_as_the_cli_takes_it() -> None:
    (template,) = yaml.safe_load_all((EXAMPLES / "argo-rollouts-gate.yaml").read_text())
    job = template["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    assert container["command"] == ["fleetdrill"] and job["restartPolicy"] == "Never"
    filled = [
        arg.replace("{{args.stage}}", "canary").replace("{{args.image}}", "x:2") for arg in container["args"]
    ]
    args = cli.parser().parse_args(filled)
    assert (args.handler, args.stage, args.image) == (cli.cmd_gate, "canary", "x:2")
    assert {a["name"] for a in template["spec"]["args"]} == {"stage", "image"}
    (canary,) = yaml.safe_load_all((EXAMPLES / "flagger-gate.yaml").read_text())
    (hook,) = canary["spec"]["analysis"]["webhooks"]
    argv = shlex.split(hook["metadata"]["cmd"])
    args = cli.parser().parse_args(argv[1:])
    assert argv[0] == "fleetdrill" and (args.handler, args.stage) == (cli.cmd_gate, "canary")
    assert hook["type"] == "rollout" and canary["spec"]["analysis"]["threshold"] == 1
