"""The drill catalogue run through the plugin, as `pytest drills/...` runs it: on a healthy fleet each
drill passes with measured figures; on a broken fleet it fails and says why. Drills break their
fleet for real, so these tests bring a fleet of their own."""

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import pytest
import yaml
from kubernetes import client, config

from harness import failover
from harness.config import load_fleet
from harness.faults import Ledger
from harness.fleet import FleetAccess
from harness.localfleet import supervisor
from harness.timeline import Timeline
from tests.conftest import run_cli, served_from_home, wait_for

ROOT = Path(__file__).resolve().parents[2]


def drill_argv(
    fleet: Path, reports: Path, drill: str, *extra: str, fleet_file: str = "fleet.yaml"
) -> list[str]:
    """pytest running one drill file through the plugin, against the fleet, its ledger and a report folder."""
    return [
        sys.executable,
        "-m",
        "pytest",
        f"drills/{drill}",
        *extra,
        "-q",
        "-p",
        "no:cacheprovider",
        "--fleet",
        str(fleet / fleet_file),
        "--ledger",
        str(fleet / "ledger.json"),
        "--report-dir",
        str(reports),
    ]


def run_drill(
    fleet: Path, reports: Path, drill: str, *extra: str, fleet_file: str = "fleet.yaml"
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run one drill file through pytest and the plugin; return the run and its (last) record."""
    argv = drill_argv(fleet, reports, drill, *extra, fleet_file=fleet_file)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    records = sorted(reports.glob("*/*/record.json"))
    assert records, f"no drill record written: {done.stdout[-2000:]}"
    return done, json.loads(records[-1].read_text())


def with_objectives(fleet: Path, name: str, safety: dict[str, str] | None = None, **objectives: str) -> str:
    """A fleet file beside the fleet's own (fleet-NAME.yaml) with the app's objectives (and safety settings)
    changed; its name."""
    document = yaml.safe_load((fleet / "fleet.yaml").read_text())
    document["apps"][0]["objectives"] |= objectives
    document["safety"] |= safety or {}
    (fleet / f"fleet-{name}.yaml").write_text(yaml.safe_dump(document))
    return f"fleet-{name}.yaml"


def served_by(url: str) -> str | None:
    """The cluster the sample app names (X-Served-By) in its answer to GET url, None without an answer."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.headers.get("X-Served-By", "").split("/")[0] or None
    except OSError:
        return None


def status(url: str) -> dict:
    """The sample app's own view of itself (GET /status)."""
    with urllib.request.urlopen(urljoin(url, "/status"), timeout=5) as answer:
        return json.loads(answer.read())


@contextmanager
def app_settings(folder: Path, context: str, settings: dict[str, str]) -> Iterator[None]:
    """The sample app in one cluster restarted with these settings, then as it was, whatever happens."""
    core = client.CoreV1Api(config.new_client_from_config(str(folder / "kubeconfig"), context=context))
    data = core.read_namespaced_config_map("orders-settings", "orders").data or {}
    restart_app(folder, core, context, settings)
    try:
        yield
    finally:  # a key that was absent is deleted (null in a merge patch)
        restart_app(folder, core, context, {key: data.get(key) for key in settings})


def restart_app(folder: Path, core: client.CoreV1Api, context: str, settings: dict[str, str | None]) -> None:
    """Change the sample app's settings in one cluster and wait until a new pod serves."""
    app = load_fleet(folder / "fleet.yaml").app("orders")
    core.patch_namespaced_config_map("orders-settings", "orders", {"data": settings})
    old = {p.metadata.uid for p in core.list_namespaced_pod("orders", label_selector="app=orders").items}
    core.delete_collection_namespaced_pod("orders", label_selector="app=orders")

    def restarted() -> bool:
        pods = core.list_namespaced_pod("orders", label_selector="app=orders").items
        return not {p.metadata.uid for p in pods} & old and failover.app_serves(app, context)

    wait_for(restarted, 60, f"{context}'s app to restart")
    wait_for(lambda: served_from_home(folder), 60, "the global endpoint to be served from the active cluster")


def test_losing_the_primary_passes_on_a_healthy_fleet_with_measured_figures(
    drill_fleet: Path, tmp_path: Path
) -> None:
    """us-east ships its writes 2 s late, inside the 5 s RPO objective: the drill passes, and the writes
    acked in those 2 s before the loss are measured lost (with the fleet's 0.5 s, a runner so loaded that
    a write's round trip outlasts the lag had none left to lose)."""
    with app_settings(drill_fleet, "us-east", {"ORDERS_REPLICATION_LAG": "2"}):
        done, record = run_drill(drill_fleet, tmp_path, "test_active_passive.py")
    assert done.returncode == 0, done.stdout[-3000:]
    figures = record["figures"]["orders"]
    assert record["verdict"] == "pass" and {v["objective"] for v in record["verdicts"]} == {
        "RTO",
        "RPO",
        "availability",
    }
    assert figures["rto_outcome"] in ("recovered", "no_failure") and figures["rto_s"] is not None
    assert figures["lost_writes"] > 0 and figures["rpo_s"] > 0, "acked writes inside the lag are really lost"
    probes = (tmp_path / record["run_id"] / "test_lose_the_primary_cluster" / "probes.jsonl").read_text()
    assert len(probes.splitlines()) > 100, "the raw samples behind the figures are kept"
    assert not Ledger(drill_fleet / "ledger.json").open_entries(), "no fault left behind in the ledger"


def test_losing_the_primary_passes_with_a_failover_command(drill_fleet: Path, tmp_path: Path) -> None:
    """The command strategy: the fleet file names a script (here `fleetdrill promote`) the drill runs to
    fail over and back, each run timed on the timeline."""
    document = yaml.safe_load((drill_fleet / "fleet.yaml").read_text())
    command = [sys.executable, "-m", "harness.cli", "promote", "--fleet", str(drill_fleet / "fleet.yaml")]
    command += ["--app", "{app}", "--to", "{cluster}"]
    document["apps"][0]["failover"] = {"strategy": "command", "command": command, "timeout": "60s"}
    (drill_fleet / "fleet-command.yaml").write_text(yaml.safe_dump(document))
    done, record = run_drill(drill_fleet, tmp_path, "test_active_passive.py", fleet_file="fleet-command.yaml")
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    commanded = [e["cluster"] for e in record["timeline"]["events"] if e["name"] == "failover.commanded"]
    assert commanded == ["eu-west", "us-east"], "failed over, then back"


def test_a_drill_killed_mid_fault_is_reverted_by_recover(drill_fleet: Path, tmp_path: Path) -> None:
    """kill -9 of the runner while the primary is lost: the next run refuses to drill the still faulted
    fleet, naming the fault and `fleetdrill recover`, which brings the cluster back."""
    ledger = drill_fleet / "ledger.json"
    runner = subprocess.Popen(
        drill_argv(drill_fleet, tmp_path, "test_active_passive.py"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: [e for e in Ledger(ledger).open_entries() if e.state == "applied"],
            60,
            "the cluster loss to be applied",
        )
    finally:
        runner.kill()
        runner.wait(timeout=30)
    assert not supervisor.cluster_running(drill_fleet, "us-east"), "the killed run left the cluster lost"
    again = drill_argv(drill_fleet, tmp_path / "again", "test_active_passive.py")
    refused = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == pytest.ExitCode.USAGE_ERROR, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "1 fault(s) left in force by a run that is gone (cluster-loss" in refused.stderr, refused.stderr
    assert f"`fleetdrill recover --fleet {drill_fleet / 'fleet.yaml'} --ledger {ledger}`" in refused.stderr
    assert not list((tmp_path / "again").glob("*/*/record.json")), "no drill ran"
    recovered = run_cli("recover", "--fleet", drill_fleet / "fleet.yaml", "--ledger", ledger)
    assert "cluster-loss" in recovered.stdout
    assert supervisor.cluster_running(drill_fleet, "us-east") and not Ledger(ledger).open_entries()
    again = run_cli("recover", "--fleet", drill_fleet / "fleet.yaml", "--ledger", ledger)
    assert "nothing to recover" in again.stdout, "recover twice is harmless"
    fleet = load_fleet(drill_fleet / "fleet.yaml")
    access = FleetAccess(fleet)
    try:  # the killed run may have promoted eu-west: make us-east primary again for the next drill
        failover.fail_back(access, fleet.app("orders"), "us-east", Timeline(), 60)
    finally:
        access.close()


def test_ctrl_c_after_the_failover_leaves_the_fleet_as_found(drill_fleet: Path, tmp_path: Path) -> None:
    """SIGINT to the runner once the drill has failed over: its faults are reverted and, after them, its
    failover (a recovery change in the ledger): us-east serves the global endpoint again as the primary."""
    ledger = drill_fleet / "ledger.json"
    runner = subprocess.Popen(
        drill_argv(drill_fleet, tmp_path, "test_active_passive.py"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job
    )
    try:
        wait_for(
            lambda: [e for e in Ledger(ledger).open_entries() if e.fault["kind"] == "failover"],
            120,
            "the drill's failover in the ledger",
        )
        runner.send_signal(signal.SIGINT)
        output, _ = runner.communicate(timeout=300)
    finally:
        runner.kill()
    assert runner.returncode != 0, output[-3000:]
    assert not Ledger(ledger).open_entries(), "every fault and the failover reverted"
    app = load_fleet(drill_fleet / "fleet.yaml").app("orders")
    global_health = urljoin(app.global_endpoint or "", app.health_path)
    assert served_by(global_health) == "us-east", "the Gslb's primary where the drill found it"
    assert status(app.endpoints["us-east"])["role"] == "primary", "and the data primary"
    assert status(app.endpoints["eu-west"])["role"] == "replica"
    (record,) = tmp_path.glob("*/*/record.json")
    assert json.loads(record.read_text())["verdict"] == "error", "an interrupted drill is recorded"


def test_configuration_parity_passes_on_a_healthy_fleet(drill_fleet: Path, tmp_path: Path) -> None:
    done, _ = run_drill(drill_fleet, tmp_path, "test_config_parity.py")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed" in done.stdout, "parity runs once per passive and standby cluster"


def test_dr_readiness_fails_where_velero_is_not_installed(drill_fleet: Path, tmp_path: Path) -> None:
    done, record = run_drill(drill_fleet, tmp_path, "test_dr_readiness.py")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    expected = "us-east: velero: expected installed (CRD backups.velero.io), found velero not installed"
    assert expected in done.stdout, done.stdout[-3000:]


def test_losing_any_cluster_keeps_global_traffic_on_a_healthy_fleet(
    drill_fleet: Path, tmp_path: Path
) -> None:
    done, record = run_drill(drill_fleet, tmp_path, "test_active_active.py", "-k", "us-east")
    assert done.returncode == 0, done.stdout[-3000:]
    figures = record["figures"]["orders"]
    assert 0 < figures["longest_outage_s"] < 20, (
        "losing the primary is a real, bounded outage (health checks)"
    )
    assert {v["objective"] for v in record["verdicts"]} == {"RTO", "availability", "longest outage"}


def test_partitioning_the_primary_region_passes_without_two_writers(
    drill_fleet: Path, tmp_path: Path
) -> None:
    done, record = run_drill(drill_fleet, tmp_path, "test_region_partition.py")
    assert done.returncode == 0, done.stdout[-3000:]
    assert {v["objective"] for v in record["verdicts"]} == {"RTO", "availability", "RPO", "split brain"}


def test_partitioning_fails_when_the_cut_off_primary_keeps_accepting_writes(
    drill_fleet: Path, tmp_path: Path
) -> None:
    """us-east's app never fences itself (ORDERS_FENCE_TIMEOUT=0): the drill catches the split brain."""
    with app_settings(drill_fleet, "us-east", {"ORDERS_FENCE_TIMEOUT": "0"}):
        done, record = run_drill(drill_fleet, tmp_path, "test_region_partition.py")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert "split brain: two clusters' acknowledged writes interleave" in done.stdout, done.stdout[-3000:]
    assert "eu-west and us-east from" in done.stdout, "the message names both writers and when"


def test_losing_the_primary_while_the_standby_region_is_cut_off_passes(
    drill_fleet: Path, tmp_path: Path
) -> None:
    done, record = run_drill(drill_fleet, tmp_path, "test_simultaneous_failures.py")
    assert done.returncode == 0, done.stdout[-3000:]
    events = record["timeline"]["events"]
    kinds = [e["detail"].get("kind") for e in events if e["name"] == "fault.injected"]
    assert kinds == ["wan-partition", "cluster-loss"], f"both faults at once, got {kinds}"
    assert not Ledger(drill_fleet / "ledger.json").open_entries(), "both faults reverted"


def test_simultaneous_failures_fail_when_replication_lags_beyond_the_rpo(
    drill_fleet: Path, tmp_path: Path
) -> None:
    """us-east ships its writes 8 s late: every write acked in the seconds before the loss is gone. The
    sentinel wrote for twice the RPO objective before the fault, so the loss is measured: a FAIL with its
    size, never "not judged"."""
    with app_settings(drill_fleet, "us-east", {"ORDERS_REPLICATION_LAG": "8"}):
        done, record = run_drill(drill_fleet, tmp_path, "test_simultaneous_failures.py")
    assert_rpo_missed(done, record, lag_s=8.0)


def test_losing_the_primary_fails_on_rpo_when_replication_lags_twice_the_objective(
    drill_fleet: Path, tmp_path: Path
) -> None:
    """us-east ships its writes 10 s late, twice the 5 s RPO objective: active-passive fails on RPO with the
    measured loss."""
    with app_settings(drill_fleet, "us-east", {"ORDERS_REPLICATION_LAG": "10"}):
        done, record = run_drill(drill_fleet, tmp_path, "test_active_passive.py")
    assert_rpo_missed(done, record, lag_s=10.0)


def assert_rpo_missed(done: subprocess.CompletedProcess, record: dict, lag_s: float) -> None:
    """The drill failed on RPO with a measured loss about the replication lag, named in its output."""
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    rpo = next(v for v in record["verdicts"] if v["objective"] == "RPO")
    lost = record["figures"]["orders"]["lost_writes"]
    assert rpo["status"] == "fail" and lost > 0, rpo
    assert "exceeds objective 5 s" in rpo["message"] and not rpo["measured"].startswith(">="), rpo
    assert lag_s - 1.0 < record["figures"]["orders"]["rpo_s"] < lag_s + 2.0, rpo
    assert f"{lost} of" in rpo["message"] and "acknowledged before t0 lost" in rpo["message"], rpo
    assert rpo["message"] in done.stdout, done.stdout[-3000:]


def test_exhausting_the_primarys_nodes_keeps_latency_and_availability(
    drill_fleet: Path, tmp_path: Path
) -> None:
    done, record = run_drill(drill_fleet, tmp_path, "test_resource_exhaustion.py")
    assert done.returncode == 0, done.stdout[-3000:]
    objectives = {v["objective"] for v in record["verdicts"]}
    assert objectives == {"RTO", "availability", "longest outage", "p99 latency"}, objectives
    kinds = [e["detail"].get("kind") for e in record["timeline"]["events"] if e["name"] == "fault.injected"]
    assert kinds == ["quota-squeeze", "node-stress"]
    assert not Ledger(drill_fleet / "ledger.json").open_entries(), "the stress pods and the quota are gone"


def test_resource_exhaustion_fails_when_latency_exceeds_its_bound(drill_fleet: Path, tmp_path: Path) -> None:
    """A latency bound of 1 ms, which no request through the fleet meets: every probe counts as failed, and
    the drill fails on availability and latency."""
    fleet_file = with_objectives(drill_fleet, "1ms", latency="1ms")
    done, record = run_drill(drill_fleet, tmp_path, "test_resource_exhaustion.py", fleet_file=fleet_file)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    verdicts = {v["objective"]: v for v in record["verdicts"]}
    assert verdicts["availability"]["status"] == "fail", verdicts["availability"]
    assert "below objective 80.00%" in verdicts["availability"]["message"]
    assert verdicts["p99 latency"]["status"] != "pass", verdicts["p99 latency"]
    assert verdicts["availability"]["message"] in done.stdout, done.stdout[-3000:]


OBJECTIVE_FIELDS = {"RTO": "rto", "RPO": "rpo", "availability": "availability", "p99 latency": "latency"}
# every drill that injects a fault and judges the app's objectives (backup-restore needs Velero: its RTO
# unset is tests/unit/test_drill_verdicts.py's), with pytest -k
JUDGING_DRILLS = [
    ("test_active_passive.py", ""),
    ("test_active_active.py", "us-east"),
    ("test_region_partition.py", ""),
    ("test_simultaneous_failures.py", ""),
    ("test_resource_exhaustion.py", ""),
]


@pytest.mark.parametrize(("drill", "select"), JUDGING_DRILLS, ids=[d[0] for d in JUDGING_DRILLS])
def test_every_objective_a_drill_judges_but_the_fleet_file_does_not_set_is_an_error_naming_it(
    drill_fleet: Path, tmp_path: Path, drill: str, select: str
) -> None:
    """The fleet file without `objectives`: the drill runs on the healthy fleet and measures, yet each
    objective it judges is an error naming apps[0].objectives.FIELD, never skipped, never a pass."""
    document = yaml.safe_load((drill_fleet / "fleet.yaml").read_text())
    del document["apps"][0]["objectives"]
    (drill_fleet / "fleet-no-objectives.yaml").write_text(yaml.safe_dump(document))
    extra = ("-k", select) if select else ()
    done, record = run_drill(drill_fleet, tmp_path, drill, *extra, fleet_file="fleet-no-objectives.yaml")
    assert done.returncode != 0 and record["verdict"] == "error", done.stdout[-3000:]
    judged = {v["objective"]: v for v in record["verdicts"] if v["objective"] in OBJECTIVE_FIELDS}
    assert "RTO" in judged, record["verdicts"]
    for objective, verdict in judged.items():
        field = f"apps[0].objectives.{OBJECTIVE_FIELDS[objective]}"
        assert verdict["status"] == "error" and field in verdict["message"], verdict
        assert f"{objective} not judged: the fleet file of fleet" in done.stdout, done.stdout[-3000:]


def test_configuration_parity_reports_drift_precisely(drill_fleet: Path, tmp_path: Path) -> None:
    api = config.new_client_from_config(str(drill_fleet / "kubeconfig"), context="eu-west")
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "orders", "image": "fleetdrill.io/orders:2"}]}}
        }
    }
    client.AppsV1Api(api).patch_namespaced_deployment("orders", "orders", patch)
    done, _ = run_drill(drill_fleet, tmp_path, "test_config_parity.py")
    (passive,) = tmp_path.glob("*/*passive*/record.json")  # eu-west is the passive cluster
    assert done.returncode != 0 and json.loads(passive.read_text())["verdict"] == "fail", done.stdout[-3000:]
    path = "eu-west: deployment/orders.containers.orders.image"
    expected = f"{path}: expected 'fleetdrill.io/orders:1' (as in us-east), got 'fleetdrill.io/orders:2'"
    assert expected in done.stdout, done.stdout[-3000:]
    assert "1 failed, 1 passed" in done.stdout, "ap-south has not drifted"


def test_losing_a_cluster_fails_when_the_fleet_only_looks_active_active(
    drill_fleet: Path, tmp_path: Path
) -> None:
    """Only us-east runs the app: losing it leaves nothing to serve, and the drill says so. us-east never
    fences itself here (ORDERS_FENCE_TIMEOUT=0): with no replica to ship to it would refuse writes some
    seconds later, and the drill would then stop at its steady state instead, depending on timing. Its app,
    restarted with its cluster, finds no peer to confirm its primacy and refuses every write: the fleet is
    not as the drill found it, and the drill names that too, once its 20 s to come back have passed."""
    with app_settings(drill_fleet, "us-east", {"ORDERS_FENCE_TIMEOUT": "0"}):
        for context in ("eu-west", "ap-south"):
            api = config.new_client_from_config(str(drill_fleet / "kubeconfig"), context=context)
            client.AppsV1Api(api).delete_namespaced_deployment("orders", "orders")
        safety = {"as_found_timeout": "20s"}
        fleet_file = with_objectives(drill_fleet, "no-writes", safety, rto="5s")  # waits 2 x RTO: 10 s
        done, record = run_drill(
            drill_fleet, tmp_path, "test_active_active.py", "-k", "us-east", fleet_file=fleet_file
        )
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert "not recovered" in done.stdout, done.stdout[-3000:]
    assert "orders: its data path takes no sentinel write as before" in record["message"], record["message"]


def test_losing_the_primary_fails_when_the_passive_cluster_lacks_the_app(
    drill_fleet: Path, tmp_path: Path
) -> None:
    """eu-west (and ap-south) lack the app since the last test. With no replica to ship to, us-east's app
    fences itself and refuses writes, so the drill stops at its steady state, before any fault; were
    writes accepted, promoting eu-west would fail instead. Either way it fails and names the cluster."""
    fleet_file = with_objectives(drill_fleet, "rto-5s", rto="5s")  # steady state's deadline: 2 x RTO
    done, record = run_drill(drill_fleet, tmp_path, "test_active_passive.py", fleet_file=fleet_file)
    assert done.returncode != 0, "a drill that passes on a broken fleet is the worst bug"
    assert record["verdict"] in ("fail", "error")
    named = "steady state: us-east does not serve orders" in done.stdout or (
        "eu-west" in done.stdout and "orders" in done.stdout
    )
    assert named, done.stdout[-3000:]
