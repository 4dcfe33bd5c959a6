"""Faults as Chaos Toolkit actions (harness.faults.actions) on the shared fleet, run through chaoslib: each
action enters a drill run of its own (safety rules, lease, ledger, proof of effect, the record), its
rollback ends it, and `fleetdrill recover` reverts what a killed experiment left."""

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from chaoslib.activity import run_activity
from chaoslib.exceptions import ActivityFailed
from kubernetes import client, config

from harness.faults import Ledger
from tests.integration.test_drills import ROOT

CLUSTER = "us-east"


def activity(func: str, fleet: Path, tmp_path: Path, namespace: str) -> dict:
    arguments = {
        "kind": "scratch-namespace",
        "targets": [CLUSTER],
        "fleet": str(fleet),
        "params": {"namespaces": [namespace]},
        "ledger": str(tmp_path / "ledger.json"),
        "reports": str(tmp_path / "reports"),
    }
    provider = {"type": "python", "module": "harness.faults.actions", "func": func, "arguments": arguments}
    return {"type": "action", "name": func, "provider": provider}


def namespaces(fleet_dir: Path) -> set[str]:
    api = config.new_client_from_config(str(fleet_dir / "kubeconfig"), context=CLUSTER)
    try:
        return {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    finally:
        api.close()


def test_an_action_runs_as_a_drill_from_injection_to_its_rollback(fleet_dir: Path, tmp_path: Path) -> None:
    ledger, name = Ledger(tmp_path / "ledger.json"), f"action-{uuid.uuid4().hex[:6]}"
    fleet = fleet_dir / "fleet.yaml"
    record = run_activity(activity("inject_fault", fleet, tmp_path, name), {}, {})
    assert record["kind"] == "scratch-namespace" and name in record["evidence"], record
    assert name in namespaces(fleet_dir)
    assert [(e.fault["targets"], e.state) for e in ledger.entries()] == [([CLUSTER], "applied")]
    run_activity(activity("revert_fault", fleet, tmp_path, name), {}, {})
    assert name not in namespaces(fleet_dir) and ledger.entries() == []
    (written,) = (tmp_path / "reports").glob("*/action-scratch-namespace/record.json")
    drill = json.loads(written.read_text())
    assert drill["verdict"] == "pass", drill
    assert [v["objective"] for v in drill["verdicts"]] == ["fault effect"]
    events = [e["name"] for e in drill["timeline"]["events"]]
    assert {"lease.held", "fault.effective", "fault.reverted", "as found.end"} <= set(events), events
    run_activity(activity("revert_fault", fleet, tmp_path, name), {}, {})  # harmless twice


def test_the_fleets_safety_rules_refuse_an_action_before_the_ledger(fleet_dir: Path, tmp_path: Path) -> None:
    document = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
    document["safety"]["allowlist"] = [c for c in document["safety"]["allowlist"] if c != CLUSTER]
    fleet = fleet_dir / "fleet-no-us-east.yaml"
    fleet.write_text(yaml.safe_dump(document))
    name = f"refused-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ActivityFailed, match=rf"refused: cluster {CLUSTER} .* is not in safety\.allowlist"):
        run_activity(activity("inject_fault", fleet, tmp_path, name), {}, {})
    assert name not in namespaces(fleet_dir) and Ledger(tmp_path / "ledger.json").entries() == []
    (written,) = (tmp_path / "reports").glob("*/action-scratch-namespace/record.json")
    assert json.loads(written.read_text())["verdict"] == "error"


KILLED = """
import os, signal, sys
from chaoslib.activity import run_activity
run_activity({activity!r}, {{}}, {{}})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_experiment_killed_after_its_action_is_recovered(fleet_dir: Path, tmp_path: Path) -> None:
    """kill -9 between the action and its rollback: the ledger holds the fault, `fleetdrill recover`
    reverts it and frees the lease; nothing is left behind."""
    name = f"killed-{uuid.uuid4().hex[:6]}"
    script = KILLED.format(activity=activity("inject_fault", fleet_dir / "fleet.yaml", tmp_path, name))
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert name in namespaces(fleet_dir)
    recover = [sys.executable, "-m", "harness.cli", "recover", "--fleet", str(fleet_dir / "fleet.yaml")]
    recover += ["--ledger", str(tmp_path / "ledger.json")]
    done = subprocess.run(recover, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert name not in namespaces(fleet_dir) and Ledger(tmp_path / "ledger.json").entries() == []
