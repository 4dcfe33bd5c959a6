"""The burst tier (`fleet up --burst`): a load above what the primary cluster's nodes hold through the web
tier's global endpoint. The primary serves what its ready pods take (the overflow Gslb's capacity), the HPA
scales it out until pods stay Pending, the excess is served by the next cluster, and once the load stops
the primary serves alone again. Then the burst drill (drills/test_burst_overflow.py) on the same fleet: it
passes, then fails naming the cause when the HPA's maximum is below the load, and when the burst cluster
lacks the app (last: it breaks the fleet for good)."""

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import load_fleet
from harness.load import Load, Request
from harness.localfleet import build
from harness.localfleet.burst import MAX_REPLICAS
from tests.conftest import started_fleet, wait_for
from tests.integration.test_drills import run_drill

DRILL = "test_burst_overflow.py"
DRILL_ARGS = ("--app", "web")
WORKERS = 32
"""Requests in flight at once: above what the primary's nodes hold (some 5 pods x 2 in flight)."""
BURST_SAMPLE = 500
"""Answers judged while the primary is full (about 5 s of the load here)."""


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "burst", clusters=2, burst=True) as folder:
        yield folder


def cluster_of(request: Request) -> str:
    return (request.served_by or "?").split("/")[0]


def test_a_burst_spills_to_the_next_cluster_once_the_primary_is_full_and_returns(fleet_dir: Path) -> None:
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    web = fleet.app("web")
    primary = fleet.primary().name
    other = next(c.name for c in fleet.clusters if c.name != primary)
    kubectl = [str(build.ensure_binaries()["kubectl"]), "--kubeconfig", str(fleet_dir / "kubeconfig")]

    def pending() -> int:
        done = subprocess.run(
            [*kubectl, "--context", primary, "get", "pods", "-n", "web", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return sum(p["status"].get("phase") == "Pending" for p in json.loads(done.stdout)["items"])

    with Load(f"{web.global_endpoint}healthz", WORKERS, 360, identity_header="X-Served-By") as load:
        wait_for(
            lambda: any(cluster_of(r) == other for r in load.requests()),
            60,
            f"{other} serving the excess",
            0.2,
        )
        wait_for(lambda: pending() > 0, 240, f"pods Pending in {primary} (its nodes full)", 2.0)
        mark = len(load.requests())  # the steady burst with the primary full: its next BURST_SAMPLE answers
        wait_for(
            lambda: len(load.requests()) >= mark + BURST_SAMPLE,
            60,
            f"{BURST_SAMPLE} answers in the burst",
            0.2,
        )
        burst = load.requests()[mark:]
    errors = [r.error for r in burst if r.error]
    by = {name: sum(cluster_of(r) == name for r in burst) for name in (primary, other)}
    assert by[primary] and by[other] and not errors, (by, errors[:3])

    def primary_alone() -> bool:
        with urllib.request.urlopen(f"{web.global_endpoint}healthz", timeout=5) as response:
            return (response.headers.get("X-Served-By") or "").startswith(f"{primary}/")

    wait_for(primary_alone, 30, f"{primary} serving alone once the load stops", 0.5)


def kubectl(fleet_dir: Path, context: str, *args: str) -> str:
    """The real kubectl against the burst fleet; its output (AssertionError naming the command on failure)."""
    argv = [str(build.ensure_binaries()["kubectl"]), "--kubeconfig", str(fleet_dir / "kubeconfig")]
    done = subprocess.run([*argv, "--context", context, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def scaled_within(fleet_dir: Path, context: str, replicas: int) -> bool:
    """The web Deployment in `context` asks for at most `replicas` pods (its HPA applied a new bound)."""
    spec = kubectl(
        fleet_dir, context, "get", "deployment", "web", "-n", "web", "-o", "jsonpath={.spec.replicas}"
    )
    return int(spec.strip()) <= replicas


def verdicts_of(record: dict) -> dict[str, dict]:
    return {v["objective"]: v for v in record["verdicts"]}


def test_the_burst_drill_passes_on_a_healthy_fleet(fleet_dir: Path, tmp_path: Path) -> None:
    done, record = run_drill(fleet_dir, tmp_path, DRILL, *DRILL_ARGS)
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    figures = record["figures"]["web"]
    assert figures["pending_pods"], "the primary full, proven by pods Pending"
    assert figures["full_after_s"] > 1.0, "filled by the drill's own load, not by the burst before it"
    assert figures["spill_s"] is not None and figures["spill_s"] <= 5.0
    assert figures["return_s"] is not None and figures["return_s"] <= 10.0
    assert {"us-east", "eu-west"} <= set(figures["load"]["served_by"]), figures["load"]
    assert set(verdicts_of(record)) == {"spill", "availability", "p99 latency", "return"}
    events = [e["name"] for e in record["timeline"]["events"]]
    assert events.index("load.started") < events.index("burst.full") < events.index("load.stopped")


CAPPED = 4
"""The HPA's maximum in the capped case: below the drill's load (16 in flight, 2 a pod), within what the
nodes hold (two 900m pods a node), and above what the steady state's probes need (about 50 a second: at
most 2 pods took them only while each answer came within 80 ms, so a slow runner's steady state spilled)."""


def test_the_burst_drill_fails_when_the_hpa_maximum_is_below_the_load(
    fleet_dir: Path, tmp_path: Path
) -> None:
    patch = ["patch", "hpa", "web", "-n", "web", "--type", "merge"]
    kubectl(fleet_dir, "us-east", *patch, "-p", json.dumps({"spec": {"maxReplicas": CAPPED}}))
    try:
        wait_for(
            lambda: scaled_within(fleet_dir, "us-east", CAPPED), 120, f"us-east within {CAPPED} pods", 1.0
        )
        done, record = run_drill(fleet_dir, tmp_path, DRILL, *DRILL_ARGS)
    finally:
        kubectl(fleet_dir, "us-east", *patch, "-p", json.dumps({"spec": {"maxReplicas": MAX_REPLICAS}}))
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    [verdict] = record["verdicts"]
    assert verdict["status"] == "fail" and verdict["measured"] == "autoscaler capped"
    assert "the HorizontalPodAutoscaler's maximum is below the load" in verdict["message"]
    capped = f"HorizontalPodAutoscaler web at {CAPPED} of at most {CAPPED}, wanting more in us-east"
    assert capped in verdict["message"]


def test_the_burst_drill_fails_naming_a_burst_cluster_without_the_app(
    fleet_dir: Path, tmp_path: Path
) -> None:
    kubectl(fleet_dir, "eu-west", "delete", "deployment", "web", "-n", "web", "--wait=true")
    done, record = run_drill(fleet_dir, tmp_path, DRILL, *DRILL_ARGS)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    spill = verdicts_of(record)["spill"]
    assert spill["status"] == "fail" and spill["measured"] == "never", spill
    assert "deployment/web is not in namespace web of eu-west" in spill["message"]
    assert record["figures"]["web"]["pending_pods"], "judged with the primary full"
