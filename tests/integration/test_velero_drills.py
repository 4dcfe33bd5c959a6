"""The drills that use Velero on the local fleet's real Velero (conftest.py's velero_dir: a two-cluster
fleet of the module's own): backup and restore into the standby, its broken-fleet cases, backup hygiene and DR
readiness."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from kubernetes import client, config

from harness import failover
from harness.config import Fleet, load_fleet
from harness.faults import Ledger
from tests.conftest import run_cli, served_from_home, wait_for
from tests.integration.test_broken_fleets import STEPS, fleet_file
from tests.integration.test_drills import run_drill
from tests.integration.test_exec_auth import LIFETIME_S, exec_fleet_file, issuances

SOURCE, TARGET, APP = "us-east", "eu-west", "orders"
EXCLUDES = "backup.velero.io/backup-volumes-excludes"


def test_the_backup_restore_drill_restores_the_data_up_to_the_backup_point(
    velero_dir: Path, velero_core: dict[str, client.CoreV1Api], tmp_path: Path
) -> None:
    done, record = run_drill(velero_dir, tmp_path, "test_backup_restore.py")
    assert done.returncode == 0, done.stdout[-3000:]
    verdicts = {v["objective"]: v for v in record["verdicts"]}
    assert set(verdicts) == {"RTO", "RPO at the backup point"}
    assert all(v["status"] == "pass" for v in verdicts.values()), verdicts
    figures = record["figures"]["orders"]
    started, completed = figures["backup_window_s"]
    assert started < completed < 0 < figures["rto_s"], figures
    assert figures["lost_writes"] >= 20, "the writes after the backup are really lost"
    assert figures["rpo_s"] >= -completed, "the loss reaches back to the backup point"
    events = [e["name"] for e in record["timeline"]["events"]]
    assert "backup.completed" in events and "restore.completed" in events, events
    assert not [n for n in velero_core[TARGET].list_namespace().items if "-restore-" in n.metadata.name]
    assert not Ledger(velero_dir / "ledger.json").open_entries(), "the scratch namespace is reverted"


def test_the_backup_restore_drill_passes_with_exec_plugin_credentials_that_expire_during_it(
    velero_dir: Path, tmp_path: Path
) -> None:
    """Every user an exec plugin handing out client certificates of 20 s: the harness's clients renew
    theirs, the probes of the restored app through the API server's proxy carry the renewed one, and the
    velero CLI (client-go) runs the plugin itself."""
    log = tmp_path / "plugin.log"
    done, record = run_drill(
        velero_dir, tmp_path, "test_backup_restore.py", fleet_file=exec_fleet_file(velero_dir, log)
    )
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    harness_runs, velero_runs = issuances(log), issuances(log, velero=True)
    assert velero_runs, f"velero never ran the plugin: {log.read_text()}"
    target = harness_runs[f"{TARGET}-admin"]
    assert target[-1] - target[0] > LIFETIME_S, f"the restore target's credential was never renewed: {target}"


def test_the_backup_restore_drill_fails_when_the_app_s_volume_is_excluded_from_backups(
    velero_dir: Path, tmp_path: Path
) -> None:
    """A pod annotated `backup.velero.io/backup-volumes-excludes: data` (a real misconfiguration): the
    backup Completes without the data, the restored app starts empty, and the drill says what is missing."""
    with volume_excluded(velero_dir):
        done, record = run_drill(velero_dir, tmp_path, "test_backup_restore.py")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert "writes acknowledged before the backup started are not in the restore" in done.stdout, done.stdout[
        -3000:
    ]


def test_the_backup_restore_drill_is_an_error_when_the_cluster_loss_never_happens(
    velero_dir: Path, velero_core: dict[str, client.CoreV1Api], tmp_path: Path
) -> None:
    """The broken-fleet case: every provider step exits 0 and changes nothing. The primary never goes, so
    the restore proves nothing: an error naming the fault, nothing judged, no restore left behind."""
    noop = {"provider": "command", "settings": {step: ["true"] for step in STEPS}, "effect_timeout": "10s"}
    broken = fleet_file(velero_dir, "noop", {"infrastructure": noop})
    done, record = run_drill(velero_dir, tmp_path, "test_backup_restore.py", fleet_file=broken.name)
    assert done.returncode != 0 and record["verdict"] == "error", done.stdout[-3000:]
    assert f"cluster-loss on {SOURCE} did not take effect within 10 s" in done.stdout, done.stdout[-3000:]
    judged = {v["objective"] for v in record["verdicts"]} & {"RTO", "RPO at the backup point"}
    assert not judged, f"nothing is judged after a fault that did not happen: {judged}"
    assert not [n for n in velero_core[TARGET].list_namespace().items if "-restore-" in n.metadata.name]
    assert not Ledger(velero_dir / "ledger.json").open_entries()


@contextmanager
def volume_excluded(folder: Path) -> Iterator[None]:
    """The app in SOURCE excludes its data volume from file-system backups, then as it was."""
    apps = client.AppsV1Api(config.new_client_from_config(str(folder / "kubeconfig"), context=SOURCE))
    app = load_fleet(folder / "fleet.yaml").app(APP)

    def annotate(value: str | None) -> None:
        patch = {"spec": {"template": {"metadata": {"annotations": {EXCLUDES: value}}}}}
        generation = apps.patch_namespaced_deployment(APP, APP, patch).metadata.generation

        def rolled_out() -> bool:
            status = apps.read_namespaced_deployment_status(APP, APP).status
            done = status.observed_generation == generation and status.updated_replicas == status.replicas
            return done and failover.app_serves(app, SOURCE)

        wait_for(rolled_out, 120, f"{APP} in {SOURCE} to roll out")
        wait_for(lambda: served_from_home(folder), 60, "the global endpoint served from the active cluster")

    annotate("data")
    try:
        yield
    finally:
        annotate(None)


def test_backup_hygiene_and_dr_readiness_pass_with_the_scheduled_backups(
    velero_dir: Path, tmp_path: Path
) -> None:
    for drill in ("test_backup_hygiene.py", "test_dr_readiness.py"):
        done, record = run_drill(velero_dir, tmp_path / drill, drill)
        assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]


def test_backup_hygiene_fails_when_the_storage_location_is_in_the_cluster_s_region(
    velero_dir: Path, velero_fleet: Fleet, tmp_path: Path
) -> None:
    """us-east said to be in the store's own region: a regional disaster takes the backups with it."""
    assert velero_fleet.velero.store is not None
    region = velero_fleet.velero.store.region
    same = yaml.safe_load((velero_dir / "fleet.yaml").read_text())
    next(c for c in same["clusters"] if c["name"] == SOURCE)["region"] = region
    (velero_dir / "fleet-same-region.yaml").write_text(yaml.safe_dump(same))
    done, record = run_drill(
        velero_dir, tmp_path, "test_backup_hygiene.py", fleet_file="fleet-same-region.yaml"
    )
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    expected = f"{SOURCE}: storage location default region: expected a region other than the cluster's"
    assert expected in done.stdout, done.stdout[-3000:]


def test_dr_readiness_fails_when_the_newest_backup_lacks_an_object_of_the_app(
    velero_dir: Path, velero_core: dict[str, client.CoreV1Api], tmp_path: Path
) -> None:
    """The restore dry run: an object made after the newest backup would not come back from it."""
    name = "added-after-the-backup"
    velero_core[SOURCE].create_namespaced_config_map(APP, {"metadata": {"name": name}, "data": {"k": "v"}})
    try:
        done, record = run_drill(velero_dir, tmp_path, "test_dr_readiness.py")
    finally:
        velero_core[SOURCE].delete_namespaced_config_map(name, APP)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert f"restore dry run: expected every object of namespace {APP}" in done.stdout, done.stdout[-3000:]
    assert f"missing ConfigMap/{name}" in done.stdout, done.stdout[-3000:]


@contextmanager
def workload_deleted(folder: Path, context: str) -> Iterator[None]:
    """The app's Deployment in one cluster deleted, then made again as it was and serving."""
    api = config.new_client_from_config(str(folder / "kubeconfig"), context=context)
    apps, app = client.AppsV1Api(api), load_fleet(folder / "fleet.yaml").app(APP)
    body = api.sanitize_for_serialization(apps.read_namespaced_deployment(APP, APP))
    body["metadata"] = {k: v for k, v in body["metadata"].items() if k in ("name", "labels", "annotations")}
    body.pop("status", None)
    apps.delete_namespaced_deployment(APP, APP)
    try:
        yield
    finally:
        apps.create_namespaced_deployment(APP, body)
        wait_for(lambda: failover.app_serves(app, context), 120, f"{APP} in {context} to serve again")
        wait_for(lambda: served_from_home(folder), 60, "the global endpoint served from the active cluster")


def test_dr_readiness_and_doctor_fail_naming_a_passive_cluster_without_the_app_s_workload(
    velero_dir: Path, velero_fleet: Fleet, tmp_path: Path
) -> None:
    """eu-west, the passive cluster (a warm standby), with the app's Deployment deleted: the gate drill
    and `fleetdrill doctor` both fail and name it, where everything else on the DR path is ready."""
    passive = next(c.name for c in velero_fleet.clusters if c.role == "passive")
    expected = f"{passive}: workload deployment/{APP}: expected running with every replica available"
    with workload_deleted(velero_dir, passive):
        done, record = run_drill(velero_dir, tmp_path, "test_dr_readiness.py")
        doctor = run_cli("doctor", "--fleet", velero_dir / "fleet.yaml", "--app", APP, check=False)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert expected in done.stdout and "found missing" in done.stdout, done.stdout[-3000:]
    assert doctor.returncode == 1 and expected in doctor.stdout, doctor.stdout[-3000:] + doctor.stderr
    assert "every check passed" not in doctor.stdout, doctor.stdout[-3000:]
