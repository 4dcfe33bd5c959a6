"""The Chaos Toolkit bridge: experiments collected as pytest items and run through chaoslib (pytester)."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from harness import chaos
from harness.config import Fleet
from harness.errors import ConfigError

pytest_plugins = ["pytester"]

FLEET = """
name: unit
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active}
  - {name: west-1, context: ctx-west, region: eu-west, role: passive}
apps:
  - {name: shop, namespace: shop, workload: deployment/shop, global_endpoint: "http://shop.example/",
     endpoints: {east: "http://east.example/"}, health_path: /healthz}
safety:
  allowlist: [east, ctx-west]
"""

# Activities the experiments call: they record what ran, in order, in the file ACTS_LOG names.
ACTS = """
import json, os

def note(what, secrets=None):
    with open(os.environ["ACTS_LOG"], "a") as log:
        log.write(json.dumps({"what": what, "context": (secrets or {}).get("KUBERNETES_CONTEXT")}) + "\\n")
    return what

def answer(value):
    return value

def crash():
    raise RuntimeError("the fault could not be injected")
"""


def experiment(steady: bool = True) -> str:
    """An experiment in the community's shape: a hypothesis, a method, rollbacks."""

    def probe(name: str, value: bool) -> dict:
        return {
            "type": "probe",
            "name": name,
            "tolerance": True,
            "provider": {"type": "python", "module": "acts", "func": "answer", "arguments": {"value": value}},
        }

    def act(kind: str, what: str) -> dict:
        provider = {"type": "python", "module": "acts", "func": "note", "arguments": {"what": what}}
        return {"type": kind, "name": what, "provider": {**provider, "secrets": ["k8s"]}}

    body = {
        "title": "shop survives",
        "description": "a unit experiment",
        "tags": ["gate"],
        "configuration": {"url": "${global_url}"},
        "steady-state-hypothesis": {"title": "shop serves", "probes": [probe("serves", steady)]},
        "method": [act("action", "break ${namespace} at ${global_url}"), probe("after-check", True)],
        "rollbacks": [act("action", "repair")],
    }
    return yaml.safe_dump(body, sort_keys=False)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makefile(".yaml", fleet=textwrap.dedent(FLEET))
    pytester.makepyfile(acts=ACTS)
    (pytester.path / "experiments").mkdir()
    monkeypatch.setenv("ACTS_LOG", str(pytester.path / "acts.log"))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--fleet", "fleet.yaml", "--report-dir", "reports", "-p", "no:cacheprovider", "experiments", *args
    )


def acts(pytester: pytest.Pytester) -> list[dict]:
    log = pytester.path / "acts.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_an_experiment_is_collected_and_run_with_the_fleet_filled_in(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "shop.yaml").write_text(experiment())
    result = run(project, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*experiments/shop.yaml::shop PASSED*"])
    assert acts(project) == [
        {"what": "break shop at http://shop.example/", "context": "east"},
        {"what": "repair", "context": "east"},
    ]
    journals = list((project.path / "reports").glob("*/shop/journal.json"))
    assert len(journals) == 1
    journal = json.loads(journals[0].read_text())
    assert journal["status"] == "completed" and not journal["deviated"]
    assert journal["experiment"]["secrets"]["k8s"] == {"KUBERNETES_CONTEXT": "***"}, "secrets are masked"


def test_a_failing_steady_state_fails_the_item_and_rollbacks_still_run(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "shop.yaml").write_text(experiment(steady=False))
    result = run(project)
    result.assert_outcomes(failed=1)
    unmet = "steady-state hypothesis not met before the method: probe 'serves' expected True, got false"
    result.stdout.fnmatch_lines([f"*shop.yaml: {unmet}*"])
    assert acts(project) == [{"what": "repair", "context": "east"}], (
        "the method is skipped, the rollback runs"
    )


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
    body["method"] = [
        {
            "type": "action",
            "name": "break",
            "provider": {"type": "python", "module": "acts", "func": "note", "arguments": {"what": "break"}},
        }
    ]
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*steady-state hypothesis not met after the method (deviated): probe 'serves'*"]
    )


def test_an_experiment_acting_on_a_cluster_outside_the_allowlist_is_refused(project: pytest.Pytester) -> None:
    fleet = project.path / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("allowlist: [east, ctx-west]", "allowlist: [ctx-west]"))
    (project.path / "experiments" / "shop.yaml").write_text(experiment())
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*refused: cluster east (context east) is not in safety.allowlist*"])
    assert acts(project) == []


def test_a_chaosk8s_action_that_names_no_cluster_is_refused(project: pytest.Pytester) -> None:
    body = yaml.safe_load(experiment())
    kill = {"type": "python", "module": "chaosk8s.pod.actions", "func": "terminate_pods"}
    body["method"].insert(
        0, {"type": "action", "name": "kill", "provider": {**kill, "arguments": {"ns": "shop"}}}
    )
    (project.path / "experiments" / "shop.yaml").write_text(yaml.safe_dump(body))
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*shop.yaml: action 'kill': name the cluster it acts on with secrets: [[]k8s[]]*"]
    )
    assert acts(project) == []


def test_dry_run_names_what_the_experiment_would_act_on(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "shop.yaml").write_text(experiment())
    result = run(project, "--dry-run", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*dry run: shop: would run 'shop survives' acting on east*"])
    assert acts(project) == []


def test_an_invalid_experiment_is_one_clear_line(project: pytest.Pytester) -> None:
    (project.path / "experiments" / "bad.yaml").write_text("title: no method\ndescription: x\n")
    result = run(project)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*bad.yaml: invalid experiment: an experiment requires a method*"])
    assert "Traceback" not in result.stdout.str()


def test_prepare_fills_env_and_missing_keys_but_keeps_literals(tmp_path: Path) -> None:
    fleet = Fleet.model_validate(yaml.safe_load(FLEET), context={"base": tmp_path})
    prepared = chaos.prepare(
        {"configuration": {"context": "mine", "global_url": {"type": "env", "key": "NOPE"}}}, fleet
    )
    config = prepared["configuration"]
    assert config["context"] == "mine"
    assert config["global_url"] == "http://shop.example/"
    assert config["health_url"] == "http://shop.example/healthz"
    assert config["passive_context"] == "ctx-west" and config["context_west_1"] == "ctx-west"
    assert config["kubeconfig"] == str(tmp_path / "kubeconfig")
    assert prepared["secrets"]["k8s-west-1"] == {"KUBERNETES_CONTEXT": "ctx-west"}
    assert prepared["secrets"]["k8s-passive"] == {"KUBERNETES_CONTEXT": "ctx-west"}


def test_targets_are_the_clusters_whose_contexts_the_actions_name(tmp_path: Path) -> None:
    fleet = Fleet.model_validate(yaml.safe_load(FLEET), context={"base": tmp_path})
    kill = {"type": "python", "module": "chaosk8s.pod.actions", "func": "terminate_pods"}
    body = {"method": [{"type": "action", "name": "kill", "provider": {**kill, "secrets": ["k8s-passive"]}}]}
    assert chaos.targets(chaos.prepare(body, fleet), fleet) == ["west-1"]
    foreign = {**body, "secrets": {"k8s-passive": {"KUBERNETES_CONTEXT": "prod-cluster"}}}
    with pytest.raises(
        ConfigError, match="name context 'prod-cluster', which is not a context of fleet unit"
    ):
        chaos.targets(chaos.prepare(foreign, fleet), fleet)
