"""The real Velero in the local fleet: backups to the fleet's MinIO (the app's data by file-system
backup through Velero's node agent and kopia), restores into another cluster, a store cut off, schedules.

One two-cluster fleet for the module (conftest.py's velero_dir: us-east active, eu-west a DR target); the
drills that use Velero are in test_velero_drills.py, on a fleet of their own. Every wait polls with a
deadline; `velero --wait` is never used.
"""

import datetime as dt
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from harness import velero
from harness.config import Fleet
from harness.localfleet import supervisor, velero_install
from harness.sentinels import Where, store_for
from harness.velero import Backup, BackupSpec, Velero
from tests.conftest import wait_for

SOURCE, TARGET, APP = "us-east", "eu-west", "orders"
BACKUP_DEADLINE_S, RESTORE_DEADLINE_S = 180, 180
SYNC_DEADLINE_S = velero_install.SYNC_TICK_S + 30  # a minute's tick, plus the server's own pass


@pytest.fixture(scope="module")
def clis(velero_fleet: Fleet) -> dict[str, Velero]:
    return {name: Velero.for_cluster(velero_fleet, name) for name in (SOURCE, TARGET)}


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


def test_the_fleet_file_names_velero_and_the_store(velero_fleet: Fleet, clis: dict[str, Velero]) -> None:
    assert Path(velero_fleet.velero.binary).is_absolute() and Path(velero_fleet.velero.binary).exists()
    assert velero_fleet.velero.store is not None and velero_fleet.velero.store.url.endswith(":9000")
    for name, access in ((SOURCE, "ReadWrite"), (TARGET, "ReadOnly")):
        (location,) = clis[name].get_backup_locations("default")
        assert (location.phase, location.access_mode) == ("Available", access)
        assert location.config["s3Url"] == velero_fleet.velero.store.url


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
def restored_namespaces(velero_core: dict[str, client.CoreV1Api]) -> Iterator[None]:
    yield
    for namespace in velero_core[TARGET].list_namespace().items:
        if namespace.metadata.name.startswith(f"{APP}-restored-"):
            velero_core[TARGET].delete_namespace(namespace.metadata.name)


def test_a_backup_restores_into_another_cluster_with_exactly_the_records_backed_up(
    velero_fleet: Fleet,
    clis: dict[str, Velero],
    velero_core: dict[str, client.CoreV1Api],
    restored_namespaces: None,
) -> None:
    tag = uuid.uuid4().hex[:6]
    stream = f"data-{tag}"
    name, url = _backup_and_restore(velero_fleet, clis, velero_core, tag, stream)
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
    kept = store_for(velero_fleet.app(APP), "apps[0].sentinels").present(Where("restored", url), 0, stream)
    assert sorted(kept) == list(range(1, 21))


def test_a_restarted_server_sees_a_new_backup_at_once(velero_dir: Path, clis: dict[str, Velero]) -> None:
    name = f"quick-{uuid.uuid4().hex[:6]}"
    clis[SOURCE].create_backup(name, BackupSpec(include_namespaces=(APP,), include_resources=("configmaps",)))
    clis[SOURCE].wait_for_backup(name, BACKUP_DEADLINE_S)
    start = time.monotonic()
    api = config.new_client_from_config(str(velero_dir / "kubeconfig"), context=TARGET)
    try:
        velero.restart_server(api)
    finally:
        api.close()
    clis[TARGET].wait_for_backup_visible(name, 60)
    took = time.monotonic() - start
    print(f"backup {name} visible in {TARGET} {took:.1f} s after its server was restarted")
    assert took < velero_install.SYNC_TICK_S


def test_a_backup_to_a_store_cut_off_fails_and_the_location_goes_unavailable(
    velero_dir: Path, clis: dict[str, Velero]
) -> None:
    """The store's firewall refuses the cluster: a blackhole (dropped packets) is the same to Velero, but its
    AWS plugin gives up on one only after its client's timeouts and retries (96 s here), a refusal at once."""
    name, cut = f"cutoff-{uuid.uuid4().hex[:6]}", "store-cut"
    cli = clis[SOURCE]
    supervisor.cut_off_store(velero_dir, [SOURCE], cut, refuse=True)
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
        supervisor.heal(velero_dir, cut)
    wait_for(
        lambda: cli.get_backup_locations("default")[0].phase == "Available",
        120,
        "the storage location to be Available again",
        interval_s=1,
    )


def test_a_backup_from_a_schedule_follows_its_template(clis: dict[str, Velero]) -> None:
    """`velero backup create --from-schedule`, as an operator takes a scheduled backup now (and as the local
    fleet takes its first): the backup has the schedule's label and template (only the app's ConfigMaps);
    the schedule is paused, so it is the schedule's only backup."""
    cli, name = clis[SOURCE], f"paused-{uuid.uuid4().hex[:6]}"
    template = BackupSpec(include_namespaces=(APP,), include_resources=("configmaps",))
    cli.create_schedule(name, "@every 1h", template, paused=True)
    try:
        backup_name = f"{name}-now"
        cli.create_backup_from_schedule(backup_name, name)
        backup = cli.wait_for_backup(backup_name, BACKUP_DEADLINE_S)
        made = [b.name for b in cli.get_backups() if b.labels.get("velero.io/schedule-name") == name]
    finally:
        cli.delete_schedule(name)
    assert backup.phase == "Completed" and backup.errors == 0, backup
    assert made == [backup_name], "the schedule's only backup is the one taken from it"
    spec = json.loads(cli.run("backup", "get", backup_name, "-o", "json"))["spec"]
    assert (spec["includedNamespaces"], spec["includedResources"]) == ([APP], ["configmaps"]), spec
    assert 0 < backup.items_backed_up == backup.total_items, backup
    resources = cli.describe_backup(backup_name, details=True)
    assert "v1/ConfigMap:" in resources and "v1/Pod:" not in resources, resources
