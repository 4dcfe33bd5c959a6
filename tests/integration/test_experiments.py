"""The Chaos Toolkit experiments of experiments/ run through the plugin against the local fleet, as
`pytest experiments/ --fleet FLEET` runs them, each from the steady state; they restore what they break."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from kubernetes import client

from harness.config import load_fleet
from harness.fleet import FleetAccess
from tests.conftest import wait_for

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
