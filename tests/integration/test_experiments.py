"""The Chaos Toolkit experiments of experiments/ run through the plugin against the local fleet, as
`pytest experiments/ --fleet FLEET` runs them, each from the steady state; they restore what they break,
and a run killed mid-experiment leaves nothing behind once `fleetdrill recover` ran."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from kubernetes import client

from harness.config import load_fleet
from harness.faults import Ledger
from harness.fleet import FleetAccess
from harness.lease import lease_name
from tests.conftest import run_cli, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.*"))
RUN_TIMEOUT_S = 600
STEADY_DEADLINE_S = 180


def served_by(url: str) -> str | None:
    """The cluster that answered `url` with 200 (from the sample app's X-Served-By), None otherwise."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.headers.get("X-Served-By", "").split("/")[0] if response.status == 200 else None
    except OSError:
        return None


def wait_for_steady_state(fleet_file: Path) -> None:
    """Every cluster's orders Deployment available, and the global endpoint served by the active one."""
    fleet = load_fleet(fleet_file)
    app, active = fleet.app("orders"), fleet.primary().name
    url = urljoin(app.global_endpoint or "", app.health_path)
    access = FleetAccess(fleet)

    def steady() -> bool:
        for cluster in fleet.clusters:
            apps = client.AppsV1Api(access.api_client(cluster.name))
            deployment = apps.read_namespaced_deployment("orders", app.namespace, _request_timeout=10)
            if deployment.status.available_replicas != deployment.spec.replicas:
                return False
        return served_by(url) == active

    try:
        wait_for(steady, STEADY_DEADLINE_S, f"orders available in every cluster and served by {active}")
    finally:
        access.close()


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_the_experiment_passes_against_the_fleet(fleet_dir: Path, tmp_path: Path, experiment: Path) -> None:
    fleet_file = fleet_dir / "fleet.yaml"
    wait_for_steady_state(fleet_file)
    argv = [sys.executable, "-m", "pytest", str(experiment), "--fleet", str(fleet_file)]
    argv += ["--report-dir", str(tmp_path), "-p", "no:cacheprovider", "-v"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "1 passed" in done.stdout
    (journal,) = tmp_path.glob(f"*/{experiment.stem}/journal.json")
    record = json.loads(journal.read_text())
    assert record["status"] == "completed" and not record["deviated"]
    assert record["steady_states"]["before"]["steady_state_met"]
    assert record["steady_states"]["after"]["steady_state_met"]
    assert record["rollbacks"] and all(r["status"] == "succeeded" for r in record["rollbacks"])
    (drill_record,) = tmp_path.glob(f"*/{experiment.stem}/record.json")
    drill = json.loads(drill_record.read_text())
    assert drill["verdict"] == "pass", drill["message"]
    names = [event["name"] for event in drill["timeline"]["events"]]
    assert {"fault.injected", "fault.effective", "fault.reverted"} <= set(names), names


def test_an_experiment_fails_in_one_line_when_the_global_endpoint_does_not_answer(
    fleet_dir: Path, tmp_path: Path
) -> None:
    """A broken fleet for the experiments: nothing answers where the fleet file says the global endpoint is
    (a port nobody listens on, on the load balancer's own address). The steady state is not met, the
    method never runs, and the item fails saying so."""
    document = yaml.safe_load((fleet_dir / "fleet.yaml").read_text())
    app = document["apps"][0]
    app["global_endpoint"] = f"http://{urlsplit(app['global_endpoint']).hostname}:81/"
    broken = fleet_dir / "fleet-no-global-endpoint.yaml"  # beside the kubeconfig it names
    broken.write_text(yaml.safe_dump(document))
    experiment = ROOT / "experiments" / "orders-pod-kill.yaml"
    argv = [sys.executable, "-m", "pytest", str(experiment), "--fleet", str(broken)]
    argv += ["--report-dir", str(tmp_path), "-p", "no:cacheprovider"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    assert done.returncode != 0 and "1 failed" in done.stdout, done.stdout[-4000:]
    assert "steady-state hypothesis not met before the method" in done.stdout, done.stdout[-4000:]
    (journal,) = tmp_path.glob(f"*/{experiment.stem}/journal.json")
    assert not json.loads(journal.read_text())["run"], "the method never ran"


def hang(reached: str) -> None:
    """A method action that announces it has been reached, then waits to be killed."""
    Path(reached).write_text("reached")
    time.sleep(600)  # killed long before


def test_a_run_killed_mid_experiment_leaves_nothing_behind_after_recover(
    fleet_dir: Path, tmp_path: Path
) -> None:
    """orders-active-outage with the runner killed (SIGKILL) after its method scaled the active orders to
    zero: the experiment is in the fault ledger, and `fleetdrill recover` runs its rollbacks (the recorded
    replicas back, the global endpoint served by the active cluster again) and frees the lease."""
    fleet_file = fleet_dir / "fleet.yaml"
    wait_for_steady_state(fleet_file)
    body = yaml.safe_load((ROOT / "experiments" / "orders-active-outage.yaml").read_text())
    reached = tmp_path / "reached"
    provider = {"type": "python", "module": __name__, "func": "hang", "arguments": {"reached": str(reached)}}
    body["method"].insert(1, {"type": "action", "name": "hang", "provider": provider})
    experiment = tmp_path / "experiments" / "killed-outage.yaml"
    experiment.parent.mkdir()
    experiment.write_text(yaml.safe_dump(body, sort_keys=False))
    ledger = tmp_path / "ledger.json"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(experiment),
        "--fleet",
        str(fleet_file),
        "--ledger",
        str(ledger),
    ]
    argv += ["--report-dir", str(tmp_path / "reports"), "-p", "no:cacheprovider"]
    runner = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: reached.exists() or runner.poll() is not None, 180, "the runner to reach the method")
        assert reached.exists(), f"the runner ended first: {runner.stderr.read()[-2000:]}"
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(timeout=30)
    fleet = load_fleet(fleet_file)
    active = fleet.primary().name
    assert [entry.fault["kind"] for entry in Ledger(ledger).open_entries()] == ["chaostoolkit-experiment"]
    access = FleetAccess(fleet)
    try:
        apps = client.AppsV1Api(access.api_client(active))
        assert apps.read_namespaced_deployment("orders", "orders", _request_timeout=10).spec.replicas == 0
        recovered = run_cli("recover", "--fleet", fleet_file, "--ledger", ledger)
        assert f"reverted: chaostoolkit-experiment on {active}" in recovered.stdout, recovered.stdout
        assert not Ledger(ledger).entries(), "the ledger is empty after recover"
        assert apps.read_namespaced_deployment("orders", "orders", _request_timeout=10).spec.replicas == 1
        for holder in (c.name for c in fleet.clusters if c.name != active):  # held outside the faulted one
            lease = client.CoordinationV1Api(access.api_client(holder)).read_namespaced_lease(
                lease_name(active), "fleetdrill", _request_timeout=10
            )
            assert not lease.spec.holder_identity, f"recover freed the killed run's lease in {holder}"
    finally:
        access.close()
    wait_for_steady_state(fleet_file)
    again = run_cli("recover", "--fleet", fleet_file, "--ledger", ledger)
    assert "nothing to recover" in again.stdout
