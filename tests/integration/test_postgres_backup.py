"""The backup-restore drill on the PostgreSQL fleet with Velero (`fleet up --postgres`, its
fleet-postgresql.yaml, backups on): the app's namespace and its database's (apps[].data_namespaces) backed
up from the active cluster, the server's Velero pre-backup hook (fixtures/apps/postgres.yaml: CHECKPOINT,
then Velero's file-system backup of PGDATA) run through pods/exec, the restore into the cold standby cluster,
whose ingress then serves the restored server: it must start and hold exactly the sentinels acknowledged up
to the backup point. Broken fleet: the server's pod annotated with a pre hook that fails (as `kubectl
annotate pod` sets one): the backup ends PartiallyFailed and the drill fails on "backup hooks", naming it.
Without the hook the drill still judges the restored data (what a file-system copy of a running server
holds), and records that no hook ran.

The fleet is the module's own (three clusters: the restore needs a standby; the drill loses the active one).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client, config

from harness.faults import Ledger
from harness.localfleet import postgres
from tests.conftest import started_fleet
from tests.integration.test_drills import run_drill

PRIMARY, STANDBY = "us-east", "ap-south"
DRILL = "test_backup_restore.py"
HOOK = "pre.hook.backup.velero.io/command"


@pytest.fixture(scope="module")
def pg_velero_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "pgbackup", clusters=3, backups=True, postgres=True) as folder:
        yield folder


@pytest.fixture(autouse=True)
def password_env(monkeypatch: pytest.MonkeyPatch, pg_velero_fleet: Path) -> None:
    """The drill's sentinels read the superuser's password from the variable the fleet file names."""
    monkeypatch.setenv(postgres.PASSWORD_ENV, postgres.password(pg_velero_fleet / "kubeconfig", PRIMARY))


def core(folder: Path, cluster: str) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(folder / "kubeconfig"), context=cluster))


def left_behind(folder: Path) -> list[str]:
    """Restored namespaces still in the standby: the drill deletes what it restored."""
    names = [n.metadata.name for n in core(folder, STANDBY).list_namespace().items]
    return [n for n in names if "-restore-" in n or n == postgres.NAMESPACE]


def test_the_restored_database_starts_and_holds_the_rows_acknowledged_up_to_the_backup_point(
    pg_velero_fleet: Path, tmp_path: Path
) -> None:
    done, record = run_drill(pg_velero_fleet, tmp_path, DRILL, fleet_file=postgres.FLEET_FILE)
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    verdicts = {v["objective"]: v for v in record["verdicts"]}
    assert set(verdicts) == {"RTO", "RPO at the backup point"}, verdicts
    figures = record["figures"]["orders"]
    assert figures["backup_hooks"] == 1, "the primary's CHECKPOINT hook ran"
    started, completed = figures["backup_window_s"]
    assert started < completed < 0 < figures["rto_s"], figures
    assert figures["lost_writes"] >= 20, "the sentinels acknowledged after the backup are not restored"
    events = {e["name"]: e for e in record["timeline"]["events"]}
    readable = (
        events["restored data readable.end"]["t_mono"] - events["restored data readable.start"]["t_mono"]
    )
    print(
        f"\nhooks {figures['backup_hooks']}; backup {completed - started:.1f} s; {figures['writes']} writes,"
        f" {figures['lost_writes']} lost (after the backup); restored data readable {readable:.1f} s after"
        f" the app answered; {verdicts['RPO at the backup point']['message']}"
    )
    assert not left_behind(pg_velero_fleet)
    assert not Ledger(pg_velero_fleet / "ledger.json").open_entries()


@contextmanager
def pod_annotated(folder: Path, value: str | None) -> Iterator[None]:
    """The primary's server pod with its pre-backup hook command set to `value` (None: no hook), then as it
    was."""
    api = core(folder, PRIMARY)
    pod = f"{postgres.STATEFULSET}-0"
    before = api.read_namespaced_pod(pod, postgres.NAMESPACE).metadata.annotations[HOOK]
    api.patch_namespaced_pod(pod, postgres.NAMESPACE, {"metadata": {"annotations": {HOOK: value}}})
    try:
        yield
    finally:
        api.patch_namespaced_pod(pod, postgres.NAMESPACE, {"metadata": {"annotations": {HOOK: before}}})


def test_a_failing_pre_backup_hook_fails_the_drill_naming_it(pg_velero_fleet: Path, tmp_path: Path) -> None:
    wrong = '["psql", "-XAtq", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", "CHECKPOINT NOW"]'
    with pod_annotated(pg_velero_fleet, wrong):
        done, record = run_drill(pg_velero_fleet, tmp_path, DRILL, fleet_file=postgres.FLEET_FILE)
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    (hooks,) = [v for v in record["verdicts"] if v["objective"] == "backup hooks"]
    assert hooks["status"] == "fail" and hooks["measured"] == "1 of 1 failed", hooks
    named = (
        "1 of 1 backup hooks failed: pre hook <from-annotation> [psql -XAtq -U postgres -v ON_ERROR_STOP=1 -c"
        " CHECKPOINT NOW] in container postgres of pod postgres-0: command terminated with exit code"
    )
    assert named in hooks["message"] and 'syntax error at or near "NOW"' in hooks["message"], hooks
    print(f"\nfailed hook: {hooks['message'][:600]}")
    assert not left_behind(pg_velero_fleet)
    assert not Ledger(pg_velero_fleet / "ledger.json").open_entries()


def test_without_the_hook_the_drill_records_that_none_ran_and_judges_the_restored_data(
    pg_velero_fleet: Path, tmp_path: Path
) -> None:
    with pod_annotated(pg_velero_fleet, None):
        done, record = run_drill(pg_velero_fleet, tmp_path, DRILL, fleet_file=postgres.FLEET_FILE)
    figures = record["figures"]["orders"]
    assert figures["backup_hooks"] == 0, done.stdout[-3000:]
    (data,) = [v for v in record["verdicts"] if v["objective"] == "RPO at the backup point"]
    assert data["status"] in ("pass", "fail"), data
    print(f"\nno hook: drill {record['verdict']}; {data['message']}")
    assert not left_behind(pg_velero_fleet)
