"""The Chaos Toolkit bridge: experiments collected as pytest items and run through chaoslib as drills
(pytester), and the experiment as a fault (prepare, targets, rollbacks, evidence, the ledger, recover)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from harness import chaos
from harness.config import Fleet
from harness.errors import ConfigError
from harness.faults import Ledger, fault_from_record
from harness.faults.experiment import (
    ExperimentFault,
    Targets,
    prepare,
    record_values,
    selections,
    targets,
)
from harness.timeline import Timeline

pytest_plugins = ["pytester"]

FLEET = """
name: unit
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active}
  - {name: west-1, context: ctx-west, region: eu-west, role: passive}
apps:
  - {name: shop, namespace: shop, workload: deployment/shop, global_endpoint: "http://127.0.0.1:9/",
     endpoints: {east: "http://127.0.0.1:9/east/"}, health_path: /healthz,
     served_by: {header: X-Shop-Cluster}}
safety:
  allowlist: [east, ctx-west]
"""

# Activities the experiments call: they record what ran, in order, in the file ACTS_LOG names.
ACTS = """
import json, os, time

def note(what, secrets=None):
    with open(os.environ["ACTS_LOG"], "a") as log:
        log.write(json.dumps({"what": what, "context": (secrets or {}).get("KUBERNETES_CONTEXT")}) + "\\n")
    return what

def select(found):
    return found

def answer(value):
    return value

def crash():
    raise RuntimeError("the fault could not be injected")

def hang(reached):
    open(reached, "w").close()
    time.sleep(600)  # the runner is killed long before
"""

# The drill lease, in memory: the unit fleet has no API server (the lease's own tests are in test_safety);
# nor does the session check that it answers (its tests are in test_kubeconfig_errors).
CONFTEST = """
import json, os

from harness.fleet import FleetAccess
from harness.run import DrillRun


class Lease:
    def __init__(self, cluster):
        self.cluster, self.duration_s, self.where = cluster, 30.0, f"cluster {cluster}: test lease"

    def acquire(self):
        with open(os.environ["ACTS_LOG"], "a") as log:
            log.write(json.dumps({"what": "lease", "context": self.cluster}) + "\\n")

    def check(self):
        pass

    def renew(self):
        pass

    def release(self):
        pass


def pytest_configure(config):
    DrillRun._lease_for = lambda self, cluster, held_in: Lease(cluster)
    FleetAccess.unreachable = lambda self, clusters=None: {}
"""


def act(kind: str, what: str, scope: str | None = "k8s") -> dict:
    provider = {"type": "python", "module": "acts", "func": "note", "arguments": {"what": what}}
    return {"type": kind, "name": what, "provider": {**provider, **({"secrets": [scope]} if scope else {})}}


def probe(name: str, value: object) -> dict:
    return {
        "type": "probe",
        "name": name,
        "tolerance": True,
        "provider": {"type": "python", "module": "acts", "func": "answer", "arguments": {"value": value}},
    }


def experiment(steady: bool = True) -> str:
    """An experiment in the community's shape: a hypothesis, a method, rollbacks."""
    body = {
        "title": "shop survives",
        "description": "a unit experiment",
        "tags": ["quarterly"],
        "configuration": {"url": "${global_url}"},
        "steady-state-hypothesis": {"title": "shop serves", "probes": [probe("serves", steady)]},
        "method": [act("action", "break ${namespace} at ${global_url}"), probe("after-check", True)],
        "rollbacks": [act("action", "repair")],
    }
    return yaml.safe_dump(body, sort_keys=False)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makefile(".yaml", fleet=textwrap.dedent(FLEET))
    pytester.makepyfile(acts=ACTS, conftest=CONFTEST)
    (pytester.path / "experiments").mkdir()
    monkeypatch.setenv("ACTS_LOG", str(pytester.path / "acts.log"))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    return pytester


def argv(*args: str) -> list[str]:
    options = ["--fleet", "fleet.yaml", "--ledger", "ledger.json", "--report-dir", "reports"]
    return [*options, "-p", "no:cacheprovider", "experiments", *args]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*argv(*args))


def acts(pytester: pytest.Pytester) -> list[dict]:
    log = pytester.path / "acts.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def record(pytester: pytest.Pytester, name: str = "shop") -> dict:
    (path,) = (pytester.path / "reports").glob(f"*/{name}/record.json")
    return json.loads(path.read_text())


def test_an_experiment_runs_as_a_drill_with_the_fleet_filled_in(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "shop.yaml").write_text(experiment())
    result = run(project, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*experiments/shop.yaml::shop PASSED*"])
    assert acts(project) == [
        {"what": "lease", "context": "east"},
        {"what": "break shop at http://127.0.0.1:9/", "context": "east"},
        {"what": "repair", "context": "east"},
    ], "the lease of the cluster it acts on is taken before it acts"
    (journal_path,) = (project.path / "reports").glob("*/shop/journal.json")
    journal = json.loads(journal_path.read_text())
    assert journal["status"] == "completed" and not journal["deviated"]
    assert journal["experiment"]["secrets"]["k8s"] == {"KUBERNETES_CONTEXT": "***"}, "secrets are masked"
    drill = record(project)
    assert (drill["verdict"], drill["outcome"]) == ("pass", "passed")
    assert drill["verdicts"][0]["objective"] == "experiment"
    events = [event["name"] for event in drill["timeline"]["events"]]
    assert (
        events.index("fault.injected") < events.index("experiment.activity") < events.index("fault.reverted")
    )
    assert "probes.started" in events, "the app is probed while the experiment runs"
    assert not Ledger(project.path / "ledger.json").entries(), "its rollbacks took it out of the ledger"
    assert list((project.path / "reports").glob("*/report.html")), "the HTML report includes it"


def test_a_failing_steady_state_fails_the_item_and_rollbacks_still_run(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "shop.yaml").write_text(experiment(steady=False))
    result = run(project)
    result.assert_outcomes(failed=1)
    unmet = "steady-state hypothesis not met before the method: probe 'serves' expected True, got false"
    result.stdout.fnmatch_lines([f"*shop.yaml: {unmet}*"])
    assert [a["what"] for a in acts(project)] == ["lease", "repair"], "the method is skipped, rollbacks run"
    drill = record(project)
    assert (drill["verdict"], drill["outcome"]) == ("fail", "failed") and unmet in drill["message"]


def test_a_failed_method_action_fails_the_item_after_its_rollbacks(project: pytest.Pytester) -> None:
    broken = yaml.safe_load(experiment())
    crash = {"type": "python", "module": "acts", "func": "crash"}
    broken["method"].insert(0, {"type": "action", "name": "crash", "provider": crash})
    (project.path / "experiments" / "shop.json").write_text(json.dumps(broken))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*shop.json: method activity 'crash' failed: *RuntimeError: the fault could not be injected*"]
    )
    assert {"what": "repair", "context": "east"} in acts(project)


def test_a_deviation_after_the_method_fails_the_item(project: pytest.Pytester, tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    module = f"""
import os
def answer(value):
    return value and not os.path.exists({str(flag)!r})
def note(what, secrets=None):
    if what == "break":
        open({str(flag)!r}, "w").close()
    return what
"""
    project.makepyfile(acts=module)
    body = yaml.safe_load(experiment())
    body["method"] = [act("action", "break")]
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*steady-state hypothesis not met after the method (deviated): probe 'serves'*"]
    )


def test_a_method_action_that_selected_nothing_is_a_failed_experiment(project: pytest.Pytester) -> None:
    """chaosk8s's terminate_pods returns [] when its selector matched no pod: it tested nothing."""
    body = yaml.safe_load(experiment())
    select = {"type": "python", "module": "acts", "func": "select", "arguments": {"found": []}}
    body["method"] = [
        {"type": "action", "name": "terminate-pods", "provider": {**select, "secrets": ["k8s"]}}
    ]
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*shop.yaml: the method's action(s) 'terminate-pods' selected nothing*"])
    drill = record(project)
    assert drill["verdict"] == "fail" and "tested nothing" in drill["message"]
    assert "fault.not_effective" in [event["name"] for event in drill["timeline"]["events"]]
    assert [a["what"] for a in acts(project)] == ["lease", "repair"]


def test_an_experiment_acting_on_a_cluster_outside_the_allowlist_is_refused(project: pytest.Pytester) -> None:
    fleet = project.path / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("allowlist: [east, ctx-west]", "allowlist: [ctx-west]"))
    (project.path / "experiments" / "shop.yaml").write_text(experiment())
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*refused: cluster east (context east) is not in safety.allowlist*"])
    assert acts(project) == []
    assert record(project)["verdict"] == "error", "a refused experiment judged nothing"
    assert not Ledger(project.path / "ledger.json").entries()


def test_dry_run_names_each_cluster_with_its_safety_verdict(project: pytest.Pytester) -> None:
    fleet = project.path / "fleet.yaml"
    fleet.write_text(fleet.read_text().rstrip() + "\n  blast_radius: {max_clusters: 1}\n")
    body = yaml.safe_load(experiment())
    kill = {"type": "python", "module": "chaosk8s.pod.actions", "func": "terminate_pods"}
    body["method"] += [
        act("action", "break-west", scope="k8s-passive"),
        {"type": "action", "name": "kill", "provider": {**kill, "arguments": {"ns": "shop"}}},
    ]
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    result = run(project, "--dry-run", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*dry run: shop: would run 'shop survives' acting on east (allowed), west-1 (refused: *"
            "blast_radius.max_clusters 1*; without a secret scope, acting on the active cluster east: kill*"
        ]
    )
    assert acts(project) == [] and not (project.path / "reports").exists()


def test_a_destructive_experiment_tagged_gate_is_an_error(project: pytest.Pytester) -> None:
    body = yaml.safe_load(experiment())
    body["tags"] = ["gate"]
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*shop.yaml: tagged gate (read-only drills) yet its actions act on east*"])
    assert acts(project) == []


def test_an_invalid_experiment_is_one_clear_line_and_an_error_record(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "bad.yaml").write_text("title: no method\ndescription: x\n")
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*bad.yaml: invalid experiment: an experiment requires a method*"])
    assert "Traceback" not in result.stdout.str()
    assert record(project, "bad")["verdict"] == "error"


def test_a_runner_killed_mid_experiment_is_recovered(project: pytest.Pytester) -> None:
    """kill -9 while the method acts; `fleetdrill recover` runs the rollbacks from the ledger."""
    reached = project.path / "reached"
    body = yaml.safe_load(experiment())
    hang = {"type": "python", "module": "acts", "func": "hang", "arguments": {"reached": str(reached)}}
    body["method"].insert(1, {"type": "action", "name": "hang", "provider": {**hang, "secrets": ["k8s"]}})
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    command = [sys.executable, "-m", "pytest", *argv()]
    runner = subprocess.Popen(command, cwd=project.path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not reached.exists() and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reached.exists(), f"the runner never reached the method: {runner.stderr.read()[-2000:]!r}"
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    ledger = Ledger(project.path / "ledger.json")
    assert [entry.fault["kind"] for entry in ledger.open_entries()] == ["chaostoolkit-experiment"]
    assert "repair" not in [a["what"] for a in acts(project)]

    cli = [sys.executable, "-m", "harness.cli", "recover", "--fleet", "fleet.yaml", "--ledger", "ledger.json"]
    recovered = subprocess.run(cli, cwd=project.path, capture_output=True, text=True, timeout=120)
    assert recovered.returncode == 0, recovered.stderr
    assert "reverted: chaostoolkit-experiment on east" in recovered.stdout
    assert acts(project)[-1] == {"what": "repair", "context": "east"}, "the rollback ran, on its cluster"
    assert not ledger.entries()
    again = subprocess.run(cli, cwd=project.path, capture_output=True, text=True, timeout=120)
    assert "nothing to recover" in again.stdout and [a["what"] for a in acts(project)].count("repair") == 1


def fleet_of(tmp_path: Path, text: str = FLEET) -> Fleet:
    return Fleet.model_validate(yaml.safe_load(text), context={"base": tmp_path})


def test_the_experiment_s_configuration_wins_over_the_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "elsewhere")
    monkeypatch.delenv("FLEETDRILL_URL", raising=False)
    fleet = fleet_of(tmp_path)
    declared = {
        "context": "mine",
        "namespace": {"type": "env", "key": "POD_NAMESPACE"},
        "workload": {"type": "env", "key": "FLEETDRILL_WORKLOAD_UNSET", "default": "own"},
        "global_url": {"type": "env", "key": "FLEETDRILL_URL"},
    }
    config = prepare({"configuration": declared}, fleet)["configuration"]
    assert config["context"] == "mine", "a literal is kept"
    assert config["namespace"] == declared["namespace"], "an env key that is set is kept (chaoslib reads it)"
    assert config["workload"] == declared["workload"], "an env key with a default is kept"
    assert config["global_url"] == "http://127.0.0.1:9/", "an env key with neither is the fleet's"
    assert config["health_url"] == "http://127.0.0.1:9/healthz", "a key left out is the fleet's"
    assert config["passive_context"] == "ctx-west" and config["context_west_1"] == "ctx-west"
    assert config["served_by_header"] == "X-Shop-Cluster", "the app's identity header, for answers_within"
    assert config["kubeconfig"] == str(tmp_path / "kubeconfig")
    secrets = prepare({}, fleet)["secrets"]
    assert secrets["k8s-west-1"] == secrets["k8s-passive"] == {"KUBERNETES_CONTEXT": "ctx-west"}


def test_rollbacks_restore_the_replicas_recorded_at_the_start(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path)
    scale = {"type": "python", "module": "chaosk8s.deployment.actions", "func": "scale_deployment"}
    body = {
        "configuration": {"replicas_passive": 9},
        "rollbacks": [
            {
                "type": "action",
                "name": "back",
                "provider": {**scale, "arguments": {"replicas": "${replicas}"}},
            },
            {"type": "action", "name": "p", "provider": {**scale, "arguments": {"n": "${replicas_passive}"}}},
        ],
    }
    asked = []
    recorded = record_values(body, fleet, lambda app, cluster: asked.append((app.name, cluster)) or 3)
    assert recorded == {"replicas": 3} and asked == [("shop", "east")], "only what the fleet fills is read"
    config = prepare(body, fleet, recorded)["configuration"]
    assert (config["replicas"], config["replicas_passive"]) == (3, 9)


def test_targets_are_the_clusters_whose_contexts_the_actions_name(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path)
    kill = {"type": "python", "module": "chaosk8s.pod.actions", "func": "terminate_pods"}
    body = {"method": [{"type": "action", "name": "kill", "provider": {**kill, "secrets": ["k8s-passive"]}}]}
    assert targets(body, fleet).clusters == ("west-1",)
    foreign = {**body, "secrets": {"k8s-passive": {"KUBERNETES_CONTEXT": "prod-cluster"}}}
    with pytest.raises(
        ConfigError, match="name context 'prod-cluster', which is not a context of fleet unit"
    ):
        targets(foreign, fleet)


def test_an_activity_without_a_secret_scope_acts_on_the_active_cluster(tmp_path: Path) -> None:
    fleet = fleet_of(tmp_path)
    kill = {"type": "python", "module": "chaosk8s.pod.actions", "func": "terminate_pods"}
    count = {"type": "python", "module": "chaosk8s.pod.probes", "func": "count_pods"}
    body = {
        "steady-state-hypothesis": {
            "title": "t",
            "probes": [{"type": "probe", "name": "n", "provider": count}],
        },
        "method": [{"type": "action", "name": "kill", "provider": kill}],
    }
    prepared = prepare(body, fleet)
    assert prepared["method"][0]["provider"]["secrets"] == ["k8s"]
    assert prepared["steady-state-hypothesis"]["probes"][0]["provider"]["secrets"] == ["k8s"]
    assert "secrets" not in body["method"][0]["provider"], "the experiment itself is not changed"
    assert targets(body, fleet) == Targets(("east",), ("kill",))


def test_selections_tell_an_action_that_acted_on_nothing() -> None:
    def journal(*outputs: object) -> dict:
        runs = [
            {"activity": {"type": "action", "name": f"a{i}"}, "status": "succeeded", "output": out}
            for i, out in enumerate(outputs)
        ]
        return {
            "run": [*runs, {"activity": {"type": "probe", "name": "p"}, "status": "succeeded", "output": []}]
        }

    assert selections(journal(["pod-1"], None)).effective
    for empty in ([], {}, 0):
        evidence = selections(journal(["pod-1"], empty))
        assert not evidence.effective and "'a1' selected nothing" in evidence.detail
    assert selections(journal(False)).effective, "a boolean is not a selection"


def test_an_experiment_fault_rebuilds_from_its_ledger_record(tmp_path: Path) -> None:
    fault = ExperimentFault(
        targets=("east",),
        experiment="/e/shop.yaml",
        fleet="/f/fleet.yaml",
        journal="/r/journal.json",
        recorded={"replicas": 2},
        environment=("POD_NAMESPACE",),
    )
    entry = Ledger(tmp_path / "ledger.json").add(fault, "run")
    assert fault_from_record(entry.fault) == fault


def test_an_abort_stops_the_experiment_but_not_its_rollbacks() -> None:
    timeline = Timeline()
    watch = chaos.Watch(timeline)
    aborted = {
        "status": "failed",
        "exception": [
            "chaoslib.exceptions.ActivityFailed: harness.safety.DrillAborted: drill aborted: low\n"
        ],
    }
    with pytest.raises(KeyboardInterrupt):
        watch.activity_completed({"type": "action", "name": "kill"}, aborted)
    assert watch.stopped == "drill aborted: low" and not watch.interrupted
    watch.signal_exit()
    assert not watch.interrupted, "the abort, not a signal, stopped it"
    rolling = chaos.Watch(timeline)
    rolling.start_rollbacks({})
    rolling.activity_completed({"type": "action", "name": "back"}, aborted)
    assert rolling.stopped == "drill aborted: low"
    assert [e.detail["name"] for e in timeline.events("experiment.activity")] == ["kill", "back"]


def test_answers_within_a_cluster_needs_the_header_that_names_it() -> None:
    """The probe knows no app's header: asking who served without one is a failed activity, not a guess."""
    with pytest.raises(chaos.ActivityFailed, match=r"needs the header naming who served.*served_by_header"):
        chaos.answers_within("http://127.0.0.1:9/", timeout=1, served_by="east")
