"""The examples in fixtures/examples say what really runs: every fleetdrill command in the CI workflow
parses as the CLI takes it."""

import shlex
from pathlib import Path

import yaml

from harness import cli

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
