"""The examples in fixtures/examples say what really runs: every fleetdrill command in the CI workflow
parses as the CLI takes it, and the cloud fleet files load as fleetdrill loads a fleet file."""

import datetime
import shlex
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.config import ChaosToolkitSettings, load_fleet
from harness.infra.chaostoolkit import as_text, pick

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


@pytest.mark.parametrize("name", ["fleet-eks.yaml", "fleet-gke.yaml", "fleet-aks.yaml"])
def test_a_cloud_fleet_example_is_a_fleet_file_with_cloud_steps(name: str) -> None:
    fleet = load_fleet(EXAMPLES / name)  # a schema error is a ConfigError here
    settings = fleet.infrastructure.typed_settings()
    assert isinstance(settings, ChaosToolkitSettings) and settings.lose_cluster and settings.restore_cluster
    assert all(cluster.cloud and cluster.zones for cluster in fleet.clusters)
    assert set(fleet.safety.allowlist) == {fleet.context_for(cluster) for cluster in fleet.clusters}
    (app,) = fleet.apps
    assert app.served_by and app.sentinels and app.objectives.rto and app.objectives.rpo
    assert set(app.endpoints) == {cluster.name for cluster in fleet.clusters}


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
