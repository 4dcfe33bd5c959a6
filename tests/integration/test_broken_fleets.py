"""The broken-fleet matrix: every drill that injects a fault, on fleets where the fault never happens or
where the global endpoint is an ingress default backend. None may pass; each names the cause.

The shared fleet, with fleet files of its own beside the kubeconfig: no drill here breaks it (the faults
never happen, or the drills stop at their steady state), and each leaves it as it found it.
"""

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from harness.infra.registry import STEPS as REGISTERED

ROOT = Path(__file__).resolve().parents[2]
STEPS = tuple(REGISTERED)  # every provider step
# drill file, pytest -k, and what the provider does nothing about
FAULTING_DRILLS = [
    ("test_active_passive.py", "", "cluster-loss on us-east"),
    ("test_active_active.py", "us-east", "cluster-loss on us-east"),
    ("test_region_partition.py", "", "wan-partition on us-east"),
    ("test_simultaneous_failures.py", "", "wan-partition on ap-south"),
]
# every drill that injects a fault, each stopping at its steady state when the global endpoint is not the app
STEADY_FIRST = [d[:2] for d in FAULTING_DRILLS] + [
    ("test_backup_restore.py", ""),  # its cluster loss never happening: test_velero_drills.py (Velero)
    ("test_resource_exhaustion.py", ""),  # its fault never happening: test_stress_that_burns_nothing...
]


@pytest.fixture(scope="module")
def matrix_fleet(fleet_dir: Path) -> Path:
    return fleet_dir


def fleet_file(fleet: Path, name: str, change: dict) -> Path:
    """The fleet's own fleet file with top-level keys (or, under "app", the app's keys) changed."""
    document = yaml.safe_load((fleet / "fleet.yaml").read_text())
    document |= {k: v for k, v in change.items() if k != "app"}
    document["apps"][0] |= change.get("app", {})
    path = fleet / f"fleet-{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run_drill(fleet_yaml: Path, reports: Path, drill: str, select: str) -> tuple[str, dict]:
    argv = [sys.executable, "-m", "pytest", f"drills/{drill}", "-q", "-p", "no:cacheprovider"]
    argv += ["-k", select] if select else []
    argv += [
        "--fleet",
        str(fleet_yaml),
        "--ledger",
        str(reports / "ledger.json"),
        "--report-dir",
        str(reports),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    (record,) = reports.glob("*/*/record.json")
    assert done.returncode != 0, f"a drill that passes a broken fleet is the worst bug: {done.stdout[-3000:]}"
    return done.stdout, json.loads(record.read_text())


@pytest.mark.parametrize(("drill", "select", "fault"), FAULTING_DRILLS, ids=[d[0] for d in FAULTING_DRILLS])
def test_a_fault_that_never_happens_is_an_error_not_a_recovery(
    matrix_fleet: Path, tmp_path: Path, drill: str, select: str, fault: str
) -> None:
    """Every provider step is `true`: it exits 0 and changes nothing (a cloud call that returns before
    anything happens); so does the look across a cut, which then says traffic still crosses."""
    noop = {"provider": "command", "settings": {step: ["true"] for step in STEPS}, "effect_timeout": "10s"}
    output, record = run_drill(
        fleet_file(matrix_fleet, "noop", {"infrastructure": noop}), tmp_path, drill, select
    )
    assert record["verdict"] == "error", output[-3000:]
    assert f"{fault} did not take effect within 10 s" in output, output[-3000:]
    judged = {v["objective"] for v in record["verdicts"]} & {"RTO", "RPO", "availability", "split brain"}
    assert not judged, f"nothing is judged after a fault that did not happen: {judged}"


class DefaultBackend(BaseHTTPRequestHandler):
    """What an ingress answers for a host it has no rule for: 404, from nobody's app."""

    def _not_found(self) -> None:
        body = b"default backend - 404"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _not_found

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def default_backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DefaultBackend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("drill", "select"), STEADY_FIRST, ids=[d[0] for d in STEADY_FIRST])
def test_a_global_endpoint_answering_404_from_a_default_backend_fails(
    matrix_fleet: Path, tmp_path: Path, default_backend: str, drill: str, select: str
) -> None:
    """The fleet file's global endpoint is an ingress default backend: every answer is a 404 without the
    app's identity. Not one probe succeeds, so the drill stops at its steady state, before any fault (its
    deadline is twice the RTO objective: 10 s here)."""
    app = yaml.safe_load((matrix_fleet / "fleet.yaml").read_text())["apps"][0]
    objectives = app["objectives"] | {"rto": "5s"}
    change = {"app": {"global_endpoint": default_backend, "objectives": objectives}}
    broken = fleet_file(matrix_fleet, "default-backend", change)
    output, record = run_drill(broken, tmp_path, drill, select)
    assert record["verdict"] in ("fail", "error"), output[-3000:]
    assert "steady state:" in output and "does not serve orders" in output, output[-3000:]
    assert "global probes in the last 1 s: status: HTTP 404 not an accepted status" in output, output[-3000:]
    assert not [e for e in record["timeline"]["events"] if e["name"] == "fault.injecting"], "no fault"


def test_stress_that_burns_nothing_is_an_error_not_a_recovery(matrix_fleet: Path, tmp_path: Path) -> None:
    """The fleet file's stress image is not stress-ng (busybox, after a registry mirror mix-up): its pods
    run and burn nothing, which the nodes' kubelets show; no verdict on latency under stress that was not
    there."""
    stress = yaml.safe_load((matrix_fleet / "fleet.yaml").read_text())["stress"] | {"image": "busybox"}
    broken = fleet_file(matrix_fleet, "idle-stress", {"stress": stress})
    output, record = run_drill(broken, tmp_path, "test_resource_exhaustion.py", "")
    assert record["verdict"] == "error", output[-3000:]
    said = "node-stress on us-east (" in output and "did not take effect within 30 s" in output
    assert said, output[-3000:]
    assert "burns 0.0" in output and "image='busybox'" in output, output[-3000:]
    judged = {v["objective"] for v in record["verdicts"]} & {"RTO", "availability", "p99 latency"}
    assert not judged, f"nothing is judged after a fault that did not happen: {judged}"
