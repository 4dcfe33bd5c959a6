"""Infrastructure providers driven by the fleet file: `command` (the user's scripts, argv lists with
templated arguments) and `chaostoolkit` (any Chaos Toolkit activity, run by chaoslib), as faults use them;
the hand-over of what a lose step returns to its restore step, through the ledger and `recover`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from harness.config import CommandSettings, fleet_json_schema, load_fleet
from harness.errors import ConfigError, FleetDrillError
from harness.faults import FaultStack, KubeContext, Ledger, recover
from harness.faults.actions import revert_fault
from harness.faults.cluster import ClusterLoss
from harness.faults.nodes import NodeLoss
from harness.faults.partition import WanPartition
from harness.infra.chaostoolkit import ChaosToolkitProvider, as_text, fill, returned
from harness.infra.command import CommandProvider
from harness.infra.providers import provider_for
from harness.infra.registry import (
    HEAL,
    LOSE_CLUSTER,
    LOSE_NODE,
    PARTITION,
    RESTORE_CLUSTER,
    TRAFFIC_CROSSES,
    Target,
)
from harness.infra.steps import HANDLE_MAX
from harness.timeline import Timeline

FLEET = {
    "name": "unit",
    "kubeconfig": "kubeconfig",
    "clusters": [
        {"name": "east", "context": "arn:aws:eks:us-east-1:1:cluster/east", "region": "us-east"},
        {"name": "west", "region": "eu-west"},
    ],
}


def fleet_file(tmp_path: Path, provider: str, settings: dict) -> Path:
    path = tmp_path / "fleet.yaml"
    data = {**FLEET, "infrastructure": {"provider": provider, "settings": settings}}
    path.write_text(yaml.safe_dump(data))
    return path


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def logger(tmp_path: Path) -> str:
    return script(
        tmp_path,
        "log.sh",
        f'for arg in "$@"; do printf "%s|" "$arg" >> {tmp_path}/calls; done; echo >> {tmp_path}/calls\n',
    )


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []


def test_command_provider_runs_each_step_with_its_arguments(tmp_path: Path, logger: str) -> None:
    steps = {
        "lose_cluster": [logger, "lose", "{cluster}", "--context={context}"],
        "restore_cluster": [logger, "restore", "{cluster}"],
        "partition": [logger, "cut", "{name}", "{clusters}", "{contexts}"],
        "heal": [logger, "heal", "{name}"],
        "lose_node": [logger, "freeze", "{cluster}", "{node}"],
        "restore_node": [logger, "thaw", "{node}"],
    }
    provider = provider_for(load_fleet(fleet_file(tmp_path, "command", steps)))
    assert isinstance(provider, CommandProvider)
    ctx = KubeContext(infra=provider)
    for fault in (
        ClusterLoss(targets=("east",)),
        WanPartition(targets=("east", "west")),
        NodeLoss(targets=("west",), nodes=("w-1",)),
    ):
        fault.inject(ctx)
        fault.revert(ctx)
    assert calls(tmp_path) == [
        "lose|east|--context=arn:aws:eks:us-east-1:1:cluster/east|",
        "restore|east|",
        "cut|east_west|east,west|arn:aws:eks:us-east-1:1:cluster/east,west|",
        "heal|east_west|",
        "freeze|west|w-1|",
        "thaw|w-1|",
    ]


def test_a_step_gets_its_cluster_s_region_zones_and_cloud_ids(tmp_path: Path, logger: str) -> None:
    """A cloud step needs more than a name: an EKS nodegroup, a resource group, the region and zones."""
    steps = {
        "lose_cluster": [logger, "{region}", "{zones}", "{cloud[eks_cluster]}", "{cloud[nodegroup]}"],
        "partition": [logger, "{regions}", "{name}"],
    }
    path = fleet_file(tmp_path, "command", steps)
    data = yaml.safe_load(path.read_text())
    data["clusters"][0] |= {"zones": ["us-east-1a", "us-east-1b"], "cloud": {"eks_cluster": "shop-use1"}}
    data["clusters"][0]["cloud"]["nodegroup"] = "ng-1"
    data["clusters"][1]["cloud"] = {"eks_cluster": "shop-euw1", "nodegroup": "ng-2"}
    path.write_text(yaml.safe_dump(data))
    ctx = KubeContext(infra=provider_for(load_fleet(path)))
    ClusterLoss(targets=("west",)).inject(ctx)
    WanPartition(targets=("east", "west")).inject(ctx)
    assert calls(tmp_path) == ["eu-west||shop-euw1|ng-2|", "us-east,eu-west|east_west|"]
    del data["clusters"][1]["cloud"]["nodegroup"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as raised:
        load_fleet(path)
    assert str(raised.value).startswith(
        f"{path}: clusters[1].cloud: expected a key nodegroup (infrastructure.settings.lose_cluster uses "
        "{cloud[nodegroup]})"
    )


def test_a_name_is_one_argument_never_shell(tmp_path: Path, logger: str) -> None:
    provider = CommandProvider(CommandSettings.with_steps()(lose_node=(logger, "{node}")), {})
    provider.run(LOSE_NODE, Target(cluster="east", node="n; touch pwned $(id) `id`"))
    assert calls(tmp_path) == ["n; touch pwned $(id) `id`|"]
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_failing_script_is_one_line_with_its_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    failing = script(tmp_path, "fail.sh", 'seq 1 200 >&2; echo "cluster $1 is not mine" >&2; exit 3\n')
    provider = CommandProvider(CommandSettings.with_steps()(restore_cluster=(failing, "{cluster}")), {})
    with pytest.raises(FleetDrillError) as raised:
        provider.run(RESTORE_CLUSTER, Target(cluster="east"))
    message = str(raised.value)
    assert "\n" not in message and len(message) < 500
    assert message.startswith(f"infrastructure.settings.restore_cluster: `{failing} east` exited 3: ...")
    assert message.endswith("199 200 cluster east is not mine")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "infrastructure.settings.heal: not set, and this fault needs it"),
        (
            {"heal": ("/nonexistent/heal.sh",)},
            "infrastructure.settings.heal: '/nonexistent/heal.sh' not found",
        ),
        (
            {"heal": ("/bin/sleep", "5"), "timeout": 0.3},
            "infrastructure.settings.heal: `/bin/sleep 5` still ran after",
        ),
    ],
)
def test_a_command_that_cannot_run_says_why(settings: dict, message: str) -> None:
    with pytest.raises(FleetDrillError, match="^" + message.replace("(", r"\(")):
        CommandProvider(CommandSettings.with_steps()(**settings), {}).run(HEAL, Target(name="p"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"heal": ["heal.sh", "{cluster}"]},
            "infrastructure.settings.heal[1]: expected text whose only placeholders are {name}, {handle}, "
            "got '{cluster}'",
        ),
        (
            {"lose_cluster": "stop.sh {cluster}"},
            "infrastructure.settings.lose_cluster: expected a list, got 'stop.sh {cluster}'",
        ),
        (
            {"lose_clustr": ["stop.sh"]},
            "infrastructure.settings.lose_clustr: unknown field (did you mean 'lose_cluster'?)",
        ),
        ({"partition": []}, "infrastructure.settings.partition: expected a valid value"),
        (
            {"lose_cluster": ["stop.sh", "{cloud}"]},
            "infrastructure.settings.lose_cluster[1]: expected text whose only placeholders are {cluster}, "
            "{context}, {region}, {zones}, {cloud[KEY]}, got '{cloud}'",
        ),
        ({"timeout": "soon"}, "infrastructure.settings.timeout: expected a duration"),
    ],
)
def test_bad_command_settings_are_one_line_naming_the_field(
    tmp_path: Path, settings: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_fleet(fleet_file(tmp_path, "command", settings))
    assert str(raised.value).startswith(f"{tmp_path / 'fleet.yaml'}: {message}")


def test_the_schema_describes_each_providers_settings() -> None:
    infrastructure = fleet_json_schema()["$defs"]["Infrastructure"]
    chosen = {
        rule["if"]["properties"]["provider"]["const"]: rule["then"]["properties"]["settings"]
        for rule in infrastructure["allOf"]
    }
    assert set(chosen) == {"command", "chaostoolkit"}
    assert (
        chosen["command"]["additionalProperties"] is False and "lose_node" in chosen["command"]["properties"]
    )
    assert "configuration" in chosen["chaostoolkit"]["properties"]


# --- chaostoolkit ------------------------------------------------------------------------------------

ACTIONS = """
from pathlib import Path


def lose(cluster, context, log):
    with open(log, "a") as file:
        file.write(f"lose {cluster} {context}\\n")


def restore(cluster, log, secrets=None):
    raise RuntimeError(f"cloud API said no for {cluster} (token {secrets['token']})")
"""


@pytest.fixture
def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "drill_actions.py").write_text(textwrap.dedent(ACTIONS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "drill_actions"


def chaostoolkit_fleet(tmp_path: Path, module: str) -> Path:
    log = str(tmp_path / "calls")
    settings = {
        "lose_cluster": {
            "type": "python",
            "module": module,
            "func": "lose",
            "arguments": {"cluster": "{cluster}", "context": "{context}", "log": log},
        },
        "restore_cluster": {
            "type": "python",
            "module": module,
            "func": "restore",
            "secrets": ["cloud"],
            "arguments": {"cluster": "{cluster}", "log": log},
        },
        "heal": {
            "type": "process",
            "path": "/bin/sh",
            "arguments": ["-c", "echo partition {name} is gone >&2; exit 4"],
        },
        "secrets": {"cloud": {"token": {"type": "env", "key": "FLEETDRILL_TEST_TOKEN"}}},
    }
    return fleet_file(tmp_path, "chaostoolkit", settings)


def test_chaostoolkit_runs_any_action_by_module_path(
    tmp_path: Path, actions: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETDRILL_TEST_TOKEN", "s3cr3t-value")
    provider = provider_for(load_fleet(chaostoolkit_fleet(tmp_path, actions)))
    assert isinstance(provider, ChaosToolkitProvider) and "s3cr3t-value" not in repr(provider)
    ClusterLoss(targets=("east",)).inject(KubeContext(infra=provider))
    assert calls(tmp_path) == ["lose east arn:aws:eks:us-east-1:1:cluster/east"]
    with pytest.raises(
        FleetDrillError,
        match=r"^infrastructure.settings.restore_cluster: Chaos Toolkit rollback restore failed: "
        "RuntimeError: cloud API said no for east",
    ):
        provider.run(RESTORE_CLUSTER, Target(cluster="east"))


def test_a_failing_process_activity_says_its_exit_code(
    tmp_path: Path, actions: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETDRILL_TEST_TOKEN", "s3cr3t-value")
    provider = provider_for(load_fleet(chaostoolkit_fleet(tmp_path, actions)))
    with pytest.raises(
        FleetDrillError,
        match=r"^infrastructure.settings.heal: Chaos Toolkit rollback /bin/sh failed: exited 4: "
        "partition east is gone$",
    ):
        provider.run(HEAL, Target(name="east"))
    with pytest.raises(FleetDrillError, match=r"^infrastructure\.settings\.lose_node: not set"):
        provider.run(LOSE_NODE, Target(cluster="east", node="n"))


def test_an_activity_chaoslib_cannot_load_is_refused_with_the_fleet(tmp_path: Path) -> None:
    settings = {"lose_cluster": {"type": "python", "module": "no_such_module_anywhere", "func": "lose"}}
    with pytest.raises(
        ConfigError,
        match=r"^infrastructure.settings.lose_cluster: not a valid Chaos Toolkit activity: "
        ".*no_such_module_anywhere",
    ):
        provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", settings)))


def test_no_provider_refuses_infrastructure_faults_in_one_line(tmp_path: Path) -> None:
    provider = provider_for(load_fleet(fleet_file(tmp_path, "none", {})))
    with pytest.raises(
        FleetDrillError, match=r"needs an infrastructure provider: set infrastructure\.provider"
    ):
        NodeLoss(targets=("east",), nodes=("n",)).inject(KubeContext(infra=provider))


def test_chaostoolkit_arguments_get_the_cluster_s_cloud_ids() -> None:
    values = {"cluster": "east", "region": "us-east-1", "cloud": {"nodegroup": "ng-1"}}
    step = {"arguments": {"nodegroup_names": ["{cloud[nodegroup]}"], "region": "{region}", "other": "{x}"}}
    assert fill(step, values) == {
        "arguments": {"nodegroup_names": ["ng-1"], "region": "us-east-1", "other": "{x}"}
    }


def test_the_command_provider_looks_across_a_cut_with_the_users_script(tmp_path: Path, logger: str) -> None:
    """Exit 0: traffic still crosses; 1: it no longer does; anything else is an error, never a verdict."""
    answer = tmp_path / "answer"
    look = script(tmp_path, "look.sh", f'{logger} look "$@"; exit $(cat {answer})\n')
    settings = {"traffic_crosses": [look, "{clusters}", "{contexts}", "{regions}"]}
    provider = provider_for(load_fleet(fleet_file(tmp_path, "command", settings)))
    assert isinstance(provider, CommandProvider)
    answer.write_text("0")
    assert provider.look(TRAFFIC_CROSSES, Target(clusters=("east",))) is True
    answer.write_text("1")
    assert provider.look(TRAFFIC_CROSSES, Target(clusters=("east", "west"))) is False
    answer.write_text("3")
    with pytest.raises(FleetDrillError, match=r"^infrastructure.settings.traffic_crosses: `.*` exited 3"):
        provider.look(TRAFFIC_CROSSES, Target(clusters=("east",)))
    assert calls(tmp_path)[:2] == [
        "look|east|arn:aws:eks:us-east-1:1:cluster/east|us-east|",
        "look|east,west|arn:aws:eks:us-east-1:1:cluster/east,west|us-east,eu-west|",
    ]
    without = provider_for(load_fleet(fleet_file(tmp_path, "command", {"heal": ["true"]})))
    assert without is not None and without.look(TRAFFIC_CROSSES, Target(clusters=("east",))) is None, (
        "cannot look: not a yes or no"
    )


PROBES = """
def crosses(clusters, answer):
    return {"yes": True, "no": False}.get(answer, answer)
"""


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (
            {"type": "python", "func": "crosses", "arguments": {"clusters": "{clusters}", "answer": "yes"}},
            True,
        ),
        (
            {"type": "python", "func": "crosses", "arguments": {"clusters": "{clusters}", "answer": "no"}},
            False,
        ),
        ({"type": "process", "path": "/bin/sh", "arguments": ["-c", "exit 0"]}, True),
        ({"type": "process", "path": "/bin/sh", "arguments": ["-c", "exit 1"]}, False),
        (
            {"type": "python", "func": "crosses", "arguments": {"clusters": "{clusters}", "answer": "maybe"}},
            None,
        ),
        ({"type": "process", "path": "/bin/sh", "arguments": ["-c", "exit 2"]}, None),
    ],
)
def test_a_chaostoolkit_probe_looks_across_a_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: dict, expected: bool | None
) -> None:
    (tmp_path / "drill_probes.py").write_text(textwrap.dedent(PROBES))
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = {"traffic_crosses": {**step, "module": "drill_probes"} if step["type"] == "python" else step}
    provider = provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", settings)))
    assert isinstance(provider, ChaosToolkitProvider)
    if expected is None:
        with pytest.raises(FleetDrillError, match=r"expected the probe to return True or False"):
            provider.look(TRAFFIC_CROSSES, Target(clusters=("east",)))
    else:
        assert provider.look(TRAFFIC_CROSSES, Target(clusters=("east",))) is expected


REGIONAL = """
def lose(cluster, log, configuration=None):
    with open(log, "a") as file:
        file.write(f"lose {cluster} in {configuration['aws_region']}\\n")


def account(cluster, log, secrets=None):
    with open(log, "a") as file:
        file.write(f"lose {cluster} as {secrets['client_id']}\\n")
"""


def test_the_chaostoolkit_configuration_follows_the_cluster_a_step_acts_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chaosaws reads aws_region from the configuration: in a multi-region fleet it must be the region of
    the cluster the step acts on, not one global value."""
    (tmp_path / "regional_actions.py").write_text(textwrap.dedent(REGIONAL))
    monkeypatch.syspath_prepend(str(tmp_path))
    lose = {"type": "python", "module": "regional_actions", "func": "lose"}
    lose["arguments"] = {"cluster": "{cluster}", "log": str(tmp_path / "calls")}
    settings = {"lose_cluster": lose, "configuration": {"aws_region": "{region}"}}
    provider = provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", settings)))
    assert isinstance(provider, ChaosToolkitProvider)
    provider.run(LOSE_CLUSTER, Target(cluster="east"))
    provider.run(LOSE_CLUSTER, Target(cluster="west"))
    assert calls(tmp_path) == ["lose east in us-east", "lose west in eu-west"]


def test_a_step_s_secrets_follow_the_cluster_it_acts_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clusters in different accounts or subscriptions need different cloud credentials: the step names its
    secrets scope with a placeholder, and each cluster's scope is the one its activity gets."""
    (tmp_path / "regional_actions.py").write_text(textwrap.dedent(REGIONAL))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLEETDRILL_TEST_WEST_ID", "west-principal")
    lose = {"type": "python", "module": "regional_actions", "func": "account"}
    lose |= {
        "secrets": ["azure-{region}"],
        "arguments": {"cluster": "{cluster}", "log": str(tmp_path / "calls")},
    }
    secrets = {
        "azure-us-east": {"client_id": "east-principal"},
        "azure-eu-west": {"client_id": {"type": "env", "key": "FLEETDRILL_TEST_WEST_ID"}},
    }
    provider = provider_for(
        load_fleet(fleet_file(tmp_path, "chaostoolkit", {"lose_cluster": lose, "secrets": secrets}))
    )
    provider.run(LOSE_CLUSTER, Target(cluster="east"))
    provider.run(LOSE_CLUSTER, Target(cluster="west"))
    assert calls(tmp_path) == ["lose east as east-principal", "lose west as west-principal"]


# --- the hand-over: what a lose step returns, kept for its restore step -----------------------------

CLOUD = """\
printf '%s|' "$@" >> {log}; echo >> {log}
if [ "$1" = lose ]; then
  echo "starting an experiment on $2 ..."
  [ "$2" = "$FLEETDRILL_TEST_CRASH_ON" ] && kill -9 $PPID
  printf 'EXP-%s-0001\\n\\n' "$2"
fi
"""
"""A fake cloud: `lose CLUSTER` logs a line, then prints the id of what it started (a crash while it runs
for $FLEETDRILL_TEST_CRASH_ON: it kills its caller first); every call's argv goes to the log."""

RUNNER = """
import sys
from harness.config import load_fleet
from harness.faults import FaultStack, KubeContext, Ledger
from harness.faults.cluster import ClusterLoss
from harness.infra.providers import provider_for
from harness.timeline import Timeline

ctx = KubeContext(infra=provider_for(load_fleet(sys.argv[1])))
FaultStack(ctx, Ledger(sys.argv[2]), Timeline(), "crashed-run").push(ClusterLoss(targets=("east", "west")))
"""


@pytest.fixture
def cloud(tmp_path: Path) -> Path:
    """A command provider's fleet file over the fake cloud."""
    fake = script(tmp_path, "cloud.sh", CLOUD.format(log=tmp_path / "calls"))
    steps = {
        "lose_cluster": [fake, "lose", "{cluster}"],
        "restore_cluster": [fake, "restore", "{cluster}", "{handle}"],
    }
    return fleet_file(tmp_path, "command", steps)


def test_the_restore_step_gets_what_the_lose_step_printed_last(tmp_path: Path, cloud: Path) -> None:
    ledger, timeline = Ledger(tmp_path / "ledger.json"), Timeline()
    stack = FaultStack(KubeContext(infra=provider_for(load_fleet(cloud))), ledger, timeline, "run-1")
    with stack.applied(ClusterLoss(targets=("east", "west"))) as injected:
        (entry,) = ledger.entries()
        assert entry.handles == {"east": "EXP-east-0001", "west": "EXP-west-0001"}
        assert injected.detail["handles"] == entry.handles
    assert calls(tmp_path) == [
        "lose|east|",
        "lose|west|",
        "restore|east|EXP-east-0001|",
        "restore|west|EXP-west-0001|",
    ]
    assert ledger.entries() == []


def test_after_a_crash_the_ledger_holds_the_handle_and_recover_hands_it_over(
    tmp_path: Path, cloud: Path
) -> None:
    """The runner dies while west's lose step runs: east's id is in the ledger already, west has none."""
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    ledger = Ledger(tmp_path / "ledger.json")
    env = {**os.environ, "FLEETDRILL_TEST_CRASH_ON": "west"}
    died = subprocess.run(
        [sys.executable, runner, cloud, ledger.path], env=env, capture_output=True, check=False
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    (entry,) = ledger.entries()
    assert (entry.state, entry.handles) == ("intended", {"east": "EXP-east-0001"})

    (report,) = recover(ledger.path, KubeContext(infra=provider_for(load_fleet(cloud))))
    assert report.outcome == "reverted" and "handed over east: EXP-east-0001" in report.line()
    assert calls(tmp_path) == ["lose|east|", "lose|west|", "restore|east|EXP-east-0001|", "restore|west||"]
    assert ledger.entries() == []


def test_a_chaostoolkit_rollback_in_another_process_reads_the_handles_from_the_ledger(
    tmp_path: Path, cloud: Path
) -> None:
    """revert_fault for a fault this process did not inject (the action's process is gone)."""
    ledger = Ledger(tmp_path / "ledger.json")
    ctx = KubeContext(infra=provider_for(load_fleet(cloud)))
    FaultStack(ctx, ledger, Timeline(), "run-1").push(ClusterLoss(targets=("east",)))  # never undone
    revert_fault("cluster-loss", ["east"], str(cloud), ledger=str(ledger.path))
    assert calls(tmp_path) == ["lose|east|", "restore|east|EXP-east-0001|"]
    assert ledger.entries() == []


def test_a_command_s_handle_is_its_last_line_one_line_at_most_so_long(tmp_path: Path) -> None:
    chatty = script(tmp_path, "chatty.sh", "echo 'node gone'; echo; printf '  a  b\\n\\n'\n")
    long = script(tmp_path, "long.sh", "yes x | head -n 2000 | tr -d '\\n'\n")
    provider = CommandProvider(CommandSettings.with_steps()(lose_node=(chatty,), partition=(long,)), {})
    assert provider.run(LOSE_NODE, Target(cluster="east", node="n-1")) == "a  b"
    handle = provider.run(PARTITION, Target(clusters=("east",), name="p"))
    assert len(handle) == HANDLE_MAX and handle.endswith("x...")


CLOUD_SDK = """
import datetime


def start_experiment(experiment_template_id, tags):
    started = datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc)
    experiment = {"id": "EXP" + tags["cluster"], "startTime": started, "templateId": experiment_template_id}
    return {"ResponseMetadata": {"HTTPStatusCode": 200}, "experiment": experiment}


def stop_experiment(experiment_id, log):
    with open(log, "a") as file:
        file.write(f"stop {experiment_id}\\n")


def stop_instance(name):
    return f"i-0{len(name)}  "


def start_instances(instance_ids, log):
    with open(log, "a") as file:
        file.write(f"start {instance_ids}\\n")
"""
"""A cloud SDK as chaosaws wraps it: start_experiment returns the API's answer, datetimes included."""


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """chaostoolkit settings whose lose steps return an experiment and an instance id."""
    (tmp_path / "cloud_sdk.py").write_text(textwrap.dedent(CLOUD_SDK))
    monkeypatch.syspath_prepend(str(tmp_path))
    log = str(tmp_path / "calls")

    def step(func: str, **arguments: object) -> dict:
        return {"type": "python", "module": "cloud_sdk", "func": func, "arguments": arguments}

    return {
        "lose_cluster": {
            **step("start_experiment", experiment_template_id="EXT{cluster}", tags={"cluster": "{cluster}"}),
            "handle": "experiment.id",
        },
        "restore_cluster": step("stop_experiment", experiment_id="{handle}", log=log),
        "lose_node": step("stop_instance", name="{node}"),
        "restore_node": step("start_instances", instance_ids=["{handle}"], log=log),
    }


def test_a_chaostoolkit_activity_s_return_value_reaches_its_rollback(tmp_path: Path, sdk: dict) -> None:
    ledger, timeline = Ledger(tmp_path / "ledger.json"), Timeline()
    ctx = KubeContext(infra=provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", sdk))))
    stack = FaultStack(ctx, ledger, timeline, "run-1")
    with (
        stack.applied(ClusterLoss(targets=("east",))),
        stack.applied(NodeLoss(targets=("west",), nodes=("w-12",))),
    ):
        assert [entry.handles for entry in ledger.entries()] == [{"east": "EXPeast"}, {"w-12": "i-04"}]
    assert calls(tmp_path) == ["start ['i-04']", "stop EXPeast"]
    injected = [event.detail["handles"] for event in timeline.events() if event.name == "fault.injected"]
    assert injected == [{"east": "EXPeast"}, {"w-12": "i-04"}]


def test_recover_gives_a_chaostoolkit_rollback_the_id_the_ledger_kept(tmp_path: Path, sdk: dict) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    ctx = KubeContext(infra=provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", sdk))))
    FaultStack(ctx, ledger, Timeline(), "run-1").push(ClusterLoss(targets=("east",)))  # never undone
    assert [report.outcome for report in recover(ledger.path, ctx)] == ["reverted"]
    assert calls(tmp_path) == ["stop EXPeast"]


def test_without_a_handle_path_the_whole_return_value_is_handed_over_as_json(
    tmp_path: Path, sdk: dict
) -> None:
    del sdk["lose_cluster"]["handle"]
    provider = provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", sdk)))
    assert provider is not None
    assert provider.run(LOSE_CLUSTER, Target(cluster="east")) == (
        '{"ResponseMetadata":{"HTTPStatusCode":200},"experiment":{"id":"EXPeast",'
        '"startTime":"2025-01-02 00:00:00+00:00","templateId":"EXTeast"}}'
    )


def test_a_handle_path_that_misses_says_what_the_step_returned(tmp_path: Path, sdk: dict) -> None:
    sdk["lose_cluster"]["handle"] = "experiment.arn"
    provider = provider_for(load_fleet(fleet_file(tmp_path, "chaostoolkit", sdk)))
    assert provider is not None
    with pytest.raises(FleetDrillError) as raised:
        provider.run(LOSE_CLUSTER, Target(cluster="east"))
    assert str(raised.value) == (
        "infrastructure.settings.lose_cluster.handle: expected experiment.arn in what the step returned, "
        "found no 'arn' in "
        '{"id":"EXPeast","startTime":"2025-01-02 00:00:00+00:00","templateId":"EXTeast"}'
    )


@pytest.mark.parametrize(
    ("step", "handle", "message"),
    [
        (
            "restore_cluster",
            "id",
            "restore_cluster.handle: expected no handle (only lose_cluster, partition, lose_node hand one "
            "over), got 'id'",
        ),
        ("lose_cluster", ["experiment", "id"], "lose_cluster.handle: expected a path into what the step"),
        ("lose_node", "experiment..id", "lose_node.handle: expected a path into what the step returns"),
    ],
)
def test_a_bad_handle_is_one_line_naming_the_field(
    tmp_path: Path, sdk: dict, step: str, handle: object, message: str
) -> None:
    sdk[step] = {**sdk[step], "handle": handle}
    with pytest.raises(ConfigError) as raised:
        load_fleet(fleet_file(tmp_path, "chaostoolkit", sdk))
    assert str(raised.value).startswith(f"{tmp_path / 'fleet.yaml'}: infrastructure.settings.{message}")


def test_a_process_hands_over_its_last_line_of_stdout_and_an_http_call_its_body() -> None:
    process = {"status": 0, "stdout": "stopping\ni-0abc\n", "stderr": "token=s3cr3t"}
    assert as_text(returned("process", process)) == "i-0abc"
    http = {"status": 202, "headers": {"Set-Cookie": "session=s3cr3t"}, "body": {"operation": "op-1"}}
    assert as_text(returned("http", http)) == '{"operation":"op-1"}'
    assert as_text(returned("python", None)) == ""


def test_a_chaostoolkit_step_s_cloud_id_is_checked_against_every_cluster(tmp_path: Path) -> None:
    settings = {
        "lose_cluster": {"type": "python", "module": "m", "func": "f", "arguments": {"id": "{cloud[fis]}"}},
        "configuration": {"aws_assume_role_arn": "arn:aws:iam::{cloud[account]}:role/drill"},
    }
    path = fleet_file(tmp_path, "chaostoolkit", settings)
    data = yaml.safe_load(path.read_text())
    data["clusters"][0]["cloud"] = {"fis": "EXT1", "account": "1"}
    data["clusters"][1]["cloud"] = {"fis": "EXT2"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as raised:
        load_fleet(path)
    assert str(raised.value) == (
        f"{path}: clusters[1].cloud: expected a key account (infrastructure.settings.configuration uses "
        "{cloud[account]}), got a mapping"
    )
