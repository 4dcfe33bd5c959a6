"""The real Velero in the local fleet: backups to the fleet's MinIO (the app's data by file-system
backup through Velero's node agent and kopia), restores into another cluster, a store cut off, schedules.

One two-cluster fleet for the module: us-east is active (its storage location ReadWrite), eu-west a
DR target (ReadOnly). Every wait polls with a deadline; `velero --wait` is never used.
"""

import datetime as dt
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from harness import failover, velero
from harness.config import Fleet, load_fleet
from harness.faults import Ledger
from harness.localfleet import supervisor, velero_install
from harness.sentinels import Where, store_for
from harness.velero import Backup, BackupSpec, Velero
from tests.conftest import served_from_home, started_fleet, wait_for
from tests.integration.test_broken_fleets import STEPS, fleet_file
from tests.integration.test_drills import run_drill

SOURCE, TARGET, APP = "us-east", "eu-west", "orders"
BACKUP_DEADLINE_S, RESTORE_DEADLINE_S = 180, 180
SYNC_DEADLINE_S = velero_install.SYNC_TICK_S + 30  # a minute's tick, plus the server's own pass
EXCLUDES = "backup.velero.io/backup-volumes-excludes"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "velero", clusters=2, backups=True) as started:
        yield started


@pytest.fixture(scope="module")
def fleet(folder: Path) -> Fleet:
    return load_fleet(folder / "fleet.yaml")


@pytest.fixture(scope="module")
def clis(fleet: Fleet) -> dict[str, Velero]:
    return {name: Velero.for_cluster(fleet, name) for name in (SOURCE, TARGET)}


@pytest.fixture(scope="module")
def core(folder: Path) -> Iterator[dict[str, client.CoreV1Api]]:
    apis = {
        name: config.new_client_from_config(str(folder / "kubeconfig"), context=name)
        for name in (SOURCE, TARGET)
    }
    yield {name: client.CoreV1Api(api) for name, api in apis.items()}
    for api in apis.values():
        api.close()


def write_orders(base_url: str, stream: str, seqs: range) -> None:
    """Write orders to the app on one kept-alive connection; each must be committed (201)."""
    host = base_url.removeprefix("http://").rstrip("/")
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        for seq in seqs:
            body = json.dumps({"seq": seq, "payload": f"order {seq}", "stream": stream})
            conn.request("POST", "/orders", body, {"Content-Type": "application/json"})
            with conn.getresponse() as reply:
                assert reply.status == 201, f"order {seq}: HTTP {reply.status} {reply.read()!r}"
    finally:
        conn.close()


def _restored_pod_url(core: client.CoreV1Api, namespace: str) -> str | None:
    """The restored app's own address once its pod is Ready (no ingress serves the new namespace)."""
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.status.pod_ip:
            return f"http://{pod.status.pod_ip}:8080"
    return None


def test_the_fleet_file_names_velero_and_the_store(fleet: Fleet, clis: dict[str, Velero]) -> None:
    assert Path(fleet.velero.binary).is_absolute() and Path(fleet.velero.binary).exists()
    assert fleet.velero.store is not None and fleet.velero.store.url.endswith(":9000")
    for name, access in ((SOURCE, "ReadWrite"), (TARGET, "ReadOnly")):
        (location,) = clis[name].get_backup_locations("default")
        assert (location.phase, location.access_mode) == ("Available", access)
        assert location.config["s3Url"] == fleet.velero.store.url


def _backup_and_restore(
    fleet: Fleet, clis: dict[str, Velero], core: dict[str, client.CoreV1Api], tag: str, stream: str
) -> tuple[str, str]:
    """Orders 1-20, a file-system backup in SOURCE, orders 21-30, a restore into TARGET under another
    namespace; return the backup's name and the restored app's URL."""
    endpoint = fleet.apps[0].endpoints[SOURCE]
    write_orders(endpoint, stream, range(1, 21))
    name = f"orders-{tag}"
    spec = BackupSpec(include_namespaces=(APP,), default_volumes_to_fs_backup=True)
    clis[SOURCE].create_backup(name, spec)
    clis[SOURCE].wait_for_backup(name, BACKUP_DEADLINE_S)
    created = time.monotonic()
    write_orders(endpoint, stream, range(21, 31))  # after the backup: must not come back
    clis[TARGET].wait_for_backup_visible(name, SYNC_DEADLINE_S)
    print(f"backup {name} visible in {TARGET} {time.monotonic() - created:.1f} s after it completed")
    restore, namespace = f"{name}-restore", f"{APP}-restored-{tag}"
    clis[TARGET].create_restore(restore, backup=name, namespace_mappings={APP: namespace})
    clis[TARGET].wait_for_restore(restore, RESTORE_DEADLINE_S)
    restored = core[TARGET].read_namespaced_config_map(f"{APP}-settings", namespace).metadata.labels
    assert (restored["velero.io/backup-name"], restored["velero.io/restore-name"]) == (name, restore)
    url = wait_for(lambda: _restored_pod_url(core[TARGET], namespace), 120, "the restored app to be Ready")
    return name, str(url)


@pytest.fixture
def restored_namespaces(core: dict[str, client.CoreV1Api]) -> Iterator[None]:
    yield
    for namespace in core[TARGET].list_namespace().items:
        if namespace.metadata.name.startswith(f"{APP}-restored-"):
            core[TARGET].delete_namespace(namespace.metadata.name)


def test_a_backup_restores_into_another_cluster_with_exactly_the_records_backed_up(
    fleet: Fleet,
    clis: dict[str, Velero],
    core: dict[str, client.CoreV1Api],
    restored_namespaces: None,
) -> None:
    tag = uuid.uuid4().hex[:6]
    stream = f"data-{tag}"
    name, url = _backup_and_restore(fleet, clis, core, tag, stream)
    printed = json.loads(clis[SOURCE].run("backup", "get", name, "-o", "json"))
    assert printed["kind"] == "Backup" and printed["apiVersion"] == "velero.io/v1"
    backup = Backup.from_json(printed)
    assert backup.phase == "Completed" and backup.errors == 0
    assert backup.start and backup.completion and backup.expiration
    assert backup.start <= backup.completion < backup.expiration
    assert abs(backup.completion - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert backup.items_backed_up == backup.total_items > 0
    details = clis[SOURCE].run("backup", "describe", name, "--details")
    assert "Pod Volume Backups - kopia" in details, details
    kept = store_for(fleet.app(APP), "apps[0].sentinels").present(Where("restored", url), 0, stream)
    assert sorted(kept) == list(range(1, 21))


def test_a_restarted_server_sees_a_new_backup_at_once(folder: Path, clis: dict[str, Velero]) -> None:
    name = f"quick-{uuid.uuid4().hex[:6]}"
    clis[SOURCE].create_backup(name, BackupSpec(include_namespaces=(APP,), include_resources=("configmaps",)))
    clis[SOURCE].wait_for_backup(name, BACKUP_DEADLINE_S)
    start = time.monotonic()
    api = config.new_client_from_config(str(folder / "kubeconfig"), context=TARGET)
    try:
        velero.restart_server(api)
    finally:
        api.close()
    clis[TARGET].wait_for_backup_visible(name, 60)
    took = time.monotonic() - start
    print(f"backup {name} visible in {TARGET} {took:.1f} s after its server was restarted")
    assert took < velero_install.SYNC_TICK_S


def test_a_backup_to_a_store_cut_off_fails_and_the_location_goes_unavailable(
    folder: Path, clis: dict[str, Velero]
) -> None:
    name, cut = f"cutoff-{uuid.uuid4().hex[:6]}", "store-cut"
    cli = clis[SOURCE]
    supervisor.cut_off_store(folder, [SOURCE], cut)
    try:
        wait_for(
            lambda: cli.get_backup_locations("default")[0].phase == "Unavailable",
            180,
            "the storage location to go Unavailable",
            interval_s=1,
        )
        cli.create_backup(name, BackupSpec(include_namespaces=(APP,)))
        failed = wait_for(
            lambda: (b := cli.get_backup(name)).phase in velero.TERMINAL_PHASES and b,
            BACKUP_DEADLINE_S,
            f"backup {name} to end",
            interval_s=1,
        )
        assert failed.phase == "FailedValidation", failed
        assert any("Unavailable" in error for error in failed.validation_errors), failed.validation_errors
    finally:
        supervisor.heal(folder, cut)
    wait_for(
        lambda: cli.get_backup_locations("default")[0].phase == "Available",
        120,
        "the storage location to be Available again",
        interval_s=1,
    )


def test_a_schedule_makes_backups_on_time(clis: dict[str, Velero]) -> None:
    cli, name = clis[SOURCE], f"every-minute-{uuid.uuid4().hex[:6]}"
    cli.create_schedule(
        name, "*/1 * * * *", BackupSpec(include_namespaces=(APP,), include_resources=("configmaps",))
    )
    try:

        def made() -> list[Backup]:
            return [b for b in cli.get_backups() if b.labels.get("velero.io/schedule-name") == name]

        backups = wait_for(lambda: len(made()) >= 2 and made(), 200, f"two backups of schedule {name}", 2)
    finally:
        cli.delete_schedule(name)
    for backup in backups:
        cli.wait_for_backup(backup.name, BACKUP_DEADLINE_S)
    stamps = sorted(dt.datetime.strptime(b.name.rsplit("-", 1)[1], "%Y%m%d%H%M%S") for b in backups)
    due = stamps[1].replace(second=0)  # the second is the first the cron made: at a minute's start
    late = (stamps[1] - due).total_seconds()
    print(f"schedule {name}: first backup at creation, next {late:.0f} s after its minute began")
    assert late < velero_install.SYNC_TICK_S + 5


def test_the_backup_restore_drill_restores_the_data_up_to_the_backup_point(
    folder: Path, core: dict[str, client.CoreV1Api], tmp_path: Path
) -> None:
    done, record = run_drill(folder, tmp_path, "test_backup_restore.py")
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
    assert not [n for n in core[TARGET].list_namespace().items if "-restore-" in n.metadata.name]
    assert not Ledger(folder / "ledger.json").open_entries(), "the scratch namespace is reverted"


def test_the_backup_restore_drill_fails_when_the_app_s_volume_is_excluded_from_backups(
    folder: Path, tmp_path: Path
) -> None:
    """A pod annotated `backup.velero.io/backup-volumes-excludes: data` (a real misconfiguration): the
    backup Completes without the data, the restored app starts empty, and the drill says what is missing."""
    with volume_excluded(folder):
        done, record = run_drill(folder, tmp_path, "test_backup_restore.py")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert "writes acknowledged before the backup started are not in the restore" in done.stdout, done.stdout[
        -3000:
    ]


def test_the_backup_restore_drill_is_an_error_when_the_cluster_loss_never_happens(
    folder: Path, core: dict[str, client.CoreV1Api], tmp_path: Path
) -> None:
    """The broken-fleet case: every provider step exits 0 and changes nothing. The primary never goes, so
    the restore proves nothing: an error naming the fault, nothing judged, no restore left behind."""
    noop = {"provider": "command", "settings": {step: ["true"] for step in STEPS}, "effect_timeout": "10s"}
    broken = fleet_file(folder, "noop", {"infrastructure": noop})
    done, record = run_drill(folder, tmp_path, "test_backup_restore.py", fleet_file=broken.name)
    assert done.returncode != 0 and record["verdict"] == "error", done.stdout[-3000:]
    assert f"cluster-loss on {SOURCE} did not take effect within 10 s" in done.stdout, done.stdout[-3000:]
    judged = {v["objective"] for v in record["verdicts"]} & {"RTO", "RPO at the backup point"}
    assert not judged, f"nothing is judged after a fault that did not happen: {judged}"
    assert not [n for n in core[TARGET].list_namespace().items if "-restore-" in n.metadata.name]
    assert not Ledger(folder / "ledger.json").open_entries()


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
    folder: Path, tmp_path: Path
) -> None:
    for drill in ("test_backup_hygiene.py", "test_dr_readiness.py"):
        done, record = run_drill(folder, tmp_path / drill, drill)
        assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]


def test_backup_hygiene_fails_when_the_storage_location_is_in_the_cluster_s_region(
    folder: Path, fleet: Fleet, tmp_path: Path
) -> None:
    """us-east said to be in the store's own region: a regional disaster takes the backups with it."""
    assert fleet.velero.store is not None
    region = fleet.velero.store.region
    same = yaml.safe_load((folder / "fleet.yaml").read_text())
    next(c for c in same["clusters"] if c["name"] == SOURCE)["region"] = region
    (folder / "fleet-same-region.yaml").write_text(yaml.safe_dump(same))
    done, record = run_drill(folder, tmp_path, "test_backup_hygiene.py", fleet_file="fleet-same-region.yaml")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    expected = f"{SOURCE}: storage location default region: expected a region other than the cluster's"
    assert expected in done.stdout, done.stdout[-3000:]


def test_dr_readiness_fails_when_the_newest_backup_lacks_an_object_of_the_app(
    folder: Path, core: dict[str, client.CoreV1Api], tmp_path: Path
) -> None:
    """The restore dry run: an object made after the newest backup would not come back from it."""
    name = "added-after-the-backup"
    core[SOURCE].create_namespaced_config_map(APP, {"metadata": {"name": name}, "data": {"k": "v"}})
    try:
        done, record = run_drill(folder, tmp_path, "test_dr_readiness.py")
    finally:
        core[SOURCE].delete_namespaced_config_map(name, APP)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert f"restore dry run: expected every object of namespace {APP}" in done.stdout, done.stdout[-3000:]
    assert f"missing ConfigMap/{name}" in done.stdout, done.stdout[-3000:]
