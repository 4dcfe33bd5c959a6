"""harness.velero against fake velero binaries: argv, both JSON shapes, errors, deadlines, waits."""

from __future__ import annotations

import copy
import json
import os
import select
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.errors import FleetDrillError
from harness.velero import (
    Backup,
    BackupSpec,
    BackupStorageLocation,
    Restore,
    Velero,
    VeleroError,
    VeleroTimeout,
)

# The fake logs its argv, then answers from replies.json, keyed by the leading positional words
# ("backup get nightly"); the n-th call of a key gets the n-th reply (the last one repeats).
FAKE = """
import json, os, subprocess, sys, time
from pathlib import Path

here = Path(__file__).parent
args = sys.argv[1:]
with (here / "argv.jsonl").open("a") as log:
    log.write(json.dumps(args) + "\\n")
words = []
for arg in args:
    if arg.startswith("-"):
        break
    words.append(arg)
key = " ".join(words)
replies = json.loads((here / "replies.json").read_text())[key]
counts_file = here / "counts.json"
counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
n = counts.get(key, 0)
counts[key] = n + 1
counts_file.write_text(json.dumps(counts))
reply = replies[min(n, len(replies) - 1)]
if reply.get("hang"):
    child = subprocess.Popen(["sleep", "60"])
    (here / "pids").write_text(f"{os.getpid()} {child.pid}")
    time.sleep(60)
sys.stdout.write(reply.get("stdout", ""))
sys.stderr.write(reply.get("stderr", ""))
sys.exit(reply.get("rc", 0))
"""

NOT_FOUND = 'An error occurred: backups.velero.io "nightly" not found\n'


def backup_json(name: str = "nightly", phase: str = "Completed", **status: Any) -> dict[str, Any]:
    """A Backup as velero v1.18 prints it with `backup get NAME -o json`."""
    return {
        "kind": "Backup",
        "apiVersion": "velero.io/v1",
        "metadata": {
            "name": name,
            "namespace": "velero",
            "uid": "0b9c5e7e-4a43-4d51-9a0f-3f3f0b8f6a11",
            "resourceVersion": "48211",
            "generation": 5,
            "creationTimestamp": "2026-05-20T10:00:00Z",
            "labels": {"velero.io/storage-location": "primary"},
            "annotations": {
                "velero.io/resource-timeout": "10m0s",
                "velero.io/source-cluster-k8s-gitversion": "v1.33.1",
                "velero.io/source-cluster-k8s-major-version": "1",
                "velero.io/source-cluster-k8s-minor-version": "33",
            },
        },
        "spec": {
            "metadata": {},
            "includedNamespaces": ["shop"],
            "ttl": "720h0m0s",
            "hooks": {},
            "storageLocation": "primary",
            "defaultVolumesToFsBackup": False,
            "csiSnapshotTimeout": "10m0s",
            "itemOperationTimeout": "4h0m0s",
            "snapshotMoveData": False,
        },
        "status": {
            "version": 1,
            "formatVersion": "1.1.0",
            "expiration": "2026-06-19T10:00:00Z",
            "phase": phase,
            "startTimestamp": "2026-05-20T10:00:00Z",
            **({"completionTimestamp": "2026-05-20T10:00:07Z"} if phase != "InProgress" else {}),
            "progress": {"totalItems": 42, "itemsBackedUp": 42 if phase != "InProgress" else 17},
            "hookStatus": {},
            **status,
        },
    }


def restore_json(name: str = "shop-dr", phase: str = "Completed", **status: Any) -> dict[str, Any]:
    """A Restore as velero v1.18 prints it with `restore get NAME -o json`."""
    return {
        "kind": "Restore",
        "apiVersion": "velero.io/v1",
        "metadata": {
            "name": name,
            "namespace": "velero",
            "uid": "5d0e7a43-9b61-4c1a-8d5e-2b8e4f0c9d22",
            "resourceVersion": "50102",
            "generation": 6,
            "creationTimestamp": "2026-05-20T10:05:00Z",
        },
        "spec": {
            "backupName": "nightly",
            "includedNamespaces": ["shop"],
            "excludedResources": ["nodes", "events", "events.events.k8s.io", "backups.velero.io"],
            "namespaceMapping": {"shop": "shop-dr"},
            "existingResourcePolicy": "update",
            "hooks": {},
            "itemOperationTimeout": "4h0m0s",
            "uploaderConfig": {},
        },
        "status": {
            "phase": phase,
            "startTimestamp": "2026-05-20T10:05:01Z",
            "completionTimestamp": "2026-05-20T10:05:09Z",
            "progress": {"totalItems": 40, "itemsRestored": 40},
            "warnings": 2,
            "hookStatus": {},
            **status,
        },
    }


BSL = {
    "kind": "BackupStorageLocation",
    "apiVersion": "velero.io/v1",
    "metadata": {"name": "primary", "namespace": "velero", "resourceVersion": "812", "generation": 3},
    "spec": {
        "provider": "aws",
        "objectStorage": {"bucket": "fleet-backups", "prefix": "eu"},
        "config": {"region": "minio", "s3ForcePathStyle": "true", "s3Url": "http://10.90.0.2:9000"},
        "default": True,
        "accessMode": "ReadOnly",
    },
    "status": {
        "phase": "Available",
        "lastSyncedTime": "2026-05-20T10:01:00Z",
        "lastValidationTime": "2026-05-20T10:01:30Z",
    },
}


SCHEDULE = {
    "kind": "Schedule",
    "apiVersion": "velero.io/v1",
    "metadata": {"name": "hourly", "namespace": "velero", "labels": {"team": "shop"}, "generation": 2},
    "spec": {
        "template": {"includedNamespaces": ["shop"], "ttl": "720h0m0s", "hooks": {}, "metadata": {}},
        "schedule": "0 * * * *",
        "useOwnerReferencesInBackup": False,
        "paused": True,
        "skipImmediately": False,
    },
    "status": {"phase": "Enabled", "lastBackup": "2026-05-20T10:00:00Z"},
}


def as_list(kind: str, *objs: dict[str, Any]) -> dict[str, Any]:
    """The List wrapper velero prints when not exactly one item matches (list items carry no kind)."""
    items = [{k: v for k, v in copy.deepcopy(o).items() if k not in ("kind", "apiVersion")} for o in objs]
    return {
        "kind": f"{kind}List",
        "apiVersion": "velero.io/v1",
        "metadata": {"resourceVersion": "9"},
        "items": items,
    }


def ok(obj: Any = None, text: str = "") -> dict[str, Any]:
    return {"stdout": json.dumps(obj, indent=4) + "\n" if obj is not None else text}


@dataclass
class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Fake:
    binary: Path
    kubeconfig: Path
    clock: FakeClock

    def reply(self, key: str, *replies: dict[str, Any]) -> None:
        path = self.binary.parent / "replies.json"
        table = json.loads(path.read_text()) if path.exists() else {}
        table[key] = list(replies)
        path.write_text(json.dumps(table))

    def velero(self, timeout: float = 10) -> Velero:
        return Velero(
            self.binary, self.kubeconfig, "dr", timeout=timeout, clock=self.clock, sleep=self.clock.sleep
        )

    @property
    def calls(self) -> list[list[str]]:
        log = self.binary.parent / "argv.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def globals(self) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig), "--kubecontext", "dr", "--namespace", "velero"]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    binary = tmp_path / "bin" / "velero"
    binary.parent.mkdir()
    binary.write_text(f"#!{sys.executable}\n{FAKE}")
    binary.chmod(0o755)
    return Fake(binary, tmp_path / "kubeconfig", FakeClock())


def assert_dies(pid: int) -> None:
    """The process has exited (or exits within 5 s of being killed): a pidfd turns readable on exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], 5)[0], f"process {pid} survived the deadline kill"
    finally:
        os.close(fd)


def test_get_backup_parses_the_bare_object_and_passes_global_flags(fake: Fake) -> None:
    fake.reply("backup get nightly", ok(backup_json()))
    backup = fake.velero().get_backup("nightly")
    assert fake.calls == [["backup", "get", "nightly", "-o", "json", *fake.globals()]]
    assert backup == Backup.from_json(backup_json())
    assert (backup.name, backup.phase, backup.storage_location) == ("nightly", "Completed", "primary")
    assert backup.start == datetime(2026, 5, 20, 10, 0, 0, tzinfo=UTC)
    assert backup.completion == datetime(2026, 5, 20, 10, 0, 7, tzinfo=UTC)
    assert backup.expiration == datetime(2026, 6, 19, 10, 0, 0, tzinfo=UTC)
    assert (backup.total_items, backup.items_backed_up, backup.errors, backup.warnings) == (42, 42, 0, 0)
    assert (backup.failure_reason, backup.validation_errors) == ("", ())
    assert backup.labels == {"velero.io/storage-location": "primary"}
    assert backup.raw["metadata"]["uid"] == "0b9c5e7e-4a43-4d51-9a0f-3f3f0b8f6a11"


def test_list_wrapper_and_single_item_list_both_parse(fake: Fake) -> None:
    fake.reply("backup get", ok(as_list("Backup", backup_json("a"), backup_json("b", "InProgress"))))
    fake.reply("backup-location get", ok(BSL))  # exactly one BSL: velero prints it bare
    fake.reply("restore get shop-dr", ok(as_list("Restore", restore_json())))
    velero = fake.velero()
    assert [(b.name, b.phase) for b in velero.get_backups()] == [("a", "Completed"), ("b", "InProgress")]
    [bsl] = velero.get_backup_locations()
    assert bsl == BackupStorageLocation.from_json(BSL)
    assert (bsl.phase, bsl.provider, bsl.bucket, bsl.prefix) == ("Available", "aws", "fleet-backups", "eu")
    assert (bsl.access_mode, bsl.default, bsl.config["region"]) == ("ReadOnly", True, "minio")
    assert bsl.last_validation_time == datetime(2026, 5, 20, 10, 1, 30, tzinfo=UTC)
    restore = velero.get_restore("shop-dr")
    assert restore == Restore.from_json(restore_json())
    assert (restore.backup_name, restore.items_restored, restore.warnings) == ("nightly", 40, 2)


def test_get_schedule_and_named_backup_location(fake: Fake) -> None:
    fake.reply("schedule get hourly", ok(SCHEDULE))
    fake.reply("backup-location get primary", ok(BSL))
    schedule = fake.velero().get_schedule("hourly")
    assert (schedule.name, schedule.phase, schedule.cron, schedule.paused) == (
        "hourly",
        "Enabled",
        "0 * * * *",
        True,
    )
    assert schedule.last_backup == datetime(2026, 5, 20, 10, 0, tzinfo=UTC)
    assert (schedule.labels, schedule.validation_errors, schedule.raw) == ({"team": "shop"}, (), SCHEDULE)
    assert [b.name for b in fake.velero().get_backup_locations("primary")] == ["primary"]
    assert fake.calls[1] == ["backup-location", "get", "primary", "-o", "json", *fake.globals()]


def test_absent_status_reads_as_new_with_defaults() -> None:
    backup = Backup.from_json({"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": {"name": "b"}})
    assert backup.phase == "New"
    assert (backup.start, backup.errors, backup.labels, backup.validation_errors) == (None, 0, {}, ())
    assert BackupStorageLocation.from_json({"metadata": {"name": "x"}}).access_mode == "ReadWrite"


def test_empty_list_is_no_items(fake: Fake) -> None:
    fake.reply(
        "backup get", ok({"kind": "BackupList", "apiVersion": "velero.io/v1", "metadata": {}, "items": None})
    )
    assert fake.velero().get_backups() == []


def test_commands_build_the_exact_argv_and_never_wait(fake: Fake) -> None:
    for key in ("backup create nightly", "restore create shop-dr", "schedule create hourly"):
        fake.reply(key, ok(text=f'Request "{key.split()[-1]}" submitted successfully.\n'))
    fake.reply("schedule delete hourly", ok(text="Schedule deleted: hourly\n"))
    fake.reply("backup describe nightly", ok(text="Name:         nightly\nPhase:  Completed\n"))
    fake.reply("backup logs nightly", ok(text='level=info msg="Backup completed"\n'))
    spec = BackupSpec(
        include_namespaces=("shop", "payments"),
        include_resources=("deployments.apps", "configmaps"),
        selector="app=shop",
        storage_location="primary",
        ttl=timedelta(hours=72),
        default_volumes_to_fs_backup=True,
        snapshot_volumes=False,
    )
    velero = fake.velero()
    velero.create_backup("nightly", spec)
    velero.create_restore(
        "shop-dr",
        backup="nightly",
        namespace_mappings={"shop": "shop-dr", "payments": "payments-dr"},
        include_namespaces=("shop", "payments"),
        existing_resource_policy="update",
    )
    velero.create_schedule("hourly", "0 * * * *", BackupSpec(include_namespaces=("shop",)), paused=True)
    velero.delete_schedule("hourly")
    assert "Phase:  Completed" in velero.describe_backup("nightly", details=True)
    assert "Backup completed" in velero.backup_logs("nightly")
    expected = [
        "backup create nightly --include-namespaces shop,payments"
        " --include-resources deployments.apps,configmaps --selector app=shop --storage-location primary"
        " --ttl 259200s --default-volumes-to-fs-backup=true --snapshot-volumes=false",
        "restore create shop-dr --from-backup nightly --namespace-mappings shop:shop-dr,payments:payments-dr"
        " --include-namespaces shop,payments --existing-resource-policy update",
        "schedule create hourly --schedule '0 * * * *' --include-namespaces shop --paused",
        "schedule delete hourly --confirm",
        "backup describe nightly --details",
        "backup logs nightly",
    ]
    assert fake.calls == [[*shlex.split(line), *fake.globals()] for line in expected]
    assert not any(a in ("--wait", "-w") or a.startswith("--wait=") for call in fake.calls for a in call)


def test_restore_from_schedule_and_a_default_backup(fake: Fake) -> None:
    fake.reply("restore create r1", ok(text="submitted\n"))
    fake.reply("backup create b1", ok(text="submitted\n"))
    fake.velero().create_restore("r1", schedule="hourly")
    fake.velero().create_backup("b1")
    assert fake.calls == [
        ["restore", "create", "r1", "--from-schedule", "hourly", *fake.globals()],
        ["backup", "create", "b1", *fake.globals()],
    ]


@pytest.mark.parametrize("sources", [{}, {"backup": "nightly", "schedule": "hourly"}])
def test_restore_needs_exactly_one_source(fake: Fake, sources: dict[str, str]) -> None:
    with pytest.raises(VeleroError, match="exactly one of backup= or schedule="):
        fake.velero().create_restore("r1", **sources)
    assert fake.calls == []


def test_failure_quotes_stderr_and_command(fake: Fake) -> None:
    fake.reply("backup get nightly", {"stderr": NOT_FOUND, "rc": 1})
    with pytest.raises(VeleroError) as info:
        fake.velero().get_backup("nightly")
    message = str(info.value)
    assert NOT_FOUND.strip() in message
    assert "backup get nightly -o json" in message and "context 'dr'" in message
    assert info.value.not_found
    assert isinstance(info.value, FleetDrillError) and not isinstance(info.value, VeleroTimeout)


def test_long_stderr_is_trimmed_to_its_tail(fake: Fake) -> None:
    fake.reply("backup get nightly", {"stderr": "noise\n" * 5000 + "An error occurred: boom\n", "rc": 1})
    with pytest.raises(VeleroError, match="boom") as info:
        fake.velero().get_backup("nightly")
    assert len(str(info.value)) < 3000
    assert not info.value.not_found


def test_output_that_is_not_json_is_an_error(fake: Fake) -> None:
    fake.reply("backup get nightly", ok(text="NAME  STATUS\nnightly Completed\n"))
    with pytest.raises(VeleroError, match="printed no JSON object"):
        fake.velero().get_backup("nightly")


def test_missing_binary_is_a_velero_error(tmp_path: Path) -> None:
    velero = Velero(tmp_path / "no-velero", tmp_path / "kubeconfig", "dr")
    with pytest.raises(VeleroError, match="cannot run velero"):
        velero.get_backups()


def test_hanging_velero_is_killed_with_its_children_at_the_deadline(fake: Fake) -> None:
    fake.reply("backup get nightly", {"hang": True})
    began = time.monotonic()
    with pytest.raises(VeleroTimeout, match=r"backup get nightly .* context 'dr'.* within 1s") as info:
        fake.velero(timeout=1).get_backup("nightly")
    assert time.monotonic() - began < 4
    assert "kubeconfig" in str(info.value)
    for pid in (fake.binary.parent / "pids").read_text().split():
        assert_dies(int(pid))


def test_wait_for_backup_polls_until_completed(fake: Fake) -> None:
    fake.reply("backup get nightly", ok(backup_json(phase="InProgress")), ok(backup_json()))
    backup = fake.velero().wait_for_backup("nightly", deadline_s=30, poll=0.5)
    assert backup.phase == "Completed"
    assert fake.clock.sleeps == [0.5]
    assert [c[:3] for c in fake.calls] == [["backup", "get", "nightly"]] * 2


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            {"phase": "PartiallyFailed", "errors": 3},
            "ended PartiallyFailed: failure reason \\(none\\); 3 errors",
        ),
        ({"phase": "Failed", "failureReason": "BSL primary is unavailable"}, "BSL primary is unavailable"),
        ({"phase": "FailedValidation", "validationErrors": ["no such ns"]}, "validation errors: no such ns"),
    ],
)
def test_wait_for_backup_raises_on_a_failed_terminal_phase(
    fake: Fake, status: dict[str, Any], expected: str
) -> None:
    fake.reply("backup get nightly", ok(backup_json(phase="InProgress")), ok(backup_json(**status)))
    with pytest.raises(VeleroError, match=expected) as info:
        fake.velero().wait_for_backup("nightly", deadline_s=30)
    assert not isinstance(info.value, VeleroTimeout)
    assert "velero backup describe nightly --details" in str(info.value)


def test_wait_for_restore_completes_and_raises_on_partial_failure(fake: Fake) -> None:
    fake.reply("restore get shop-dr", ok(restore_json(phase="InProgress")), ok(restore_json()))
    assert fake.velero().wait_for_restore("shop-dr", deadline_s=30).items_restored == 40
    fake.reply("restore get bad", ok(restore_json("bad", "PartiallyFailed", errors=1)))
    with pytest.raises(VeleroError, match=r"restore bad .* ended PartiallyFailed"):
        fake.velero().wait_for_restore("bad", deadline_s=30)


def test_wait_deadline_names_the_last_phase_and_the_time_waited(fake: Fake) -> None:
    fake.reply("backup get nightly", ok(backup_json(phase="InProgress")))
    with pytest.raises(VeleroTimeout, match=r"still InProgress after 3\.0s \(deadline 3s\)"):
        fake.velero().wait_for_backup("nightly", deadline_s=3, poll=1)
    assert fake.clock.now == 3
    assert len(fake.calls) == 3


def test_wait_does_not_hide_a_missing_backup(fake: Fake) -> None:
    fake.reply("backup get nightly", {"stderr": NOT_FOUND, "rc": 1})
    with pytest.raises(VeleroError, match="not found"):
        fake.velero().wait_for_backup("nightly", deadline_s=30)
    assert len(fake.calls) == 1


def test_backup_becomes_visible_after_a_sync(fake: Fake) -> None:
    missing = {"stderr": NOT_FOUND, "rc": 1}
    fake.reply("backup get nightly", missing, missing, ok(backup_json()))
    backup = fake.velero().wait_for_backup_visible("nightly", deadline_s=120, poll=2)
    assert backup.phase == "Completed"
    assert fake.clock.sleeps == [2, 2]


def test_backup_never_visible_mentions_the_sync_period(fake: Fake) -> None:
    fake.reply("backup get nightly", {"stderr": NOT_FOUND, "rc": 1})
    with pytest.raises(VeleroTimeout, match=r"still not found after 4\.0s.*backup-sync-period"):
        fake.velero().wait_for_backup_visible("nightly", deadline_s=4, poll=2)


def test_visible_wait_propagates_other_errors(fake: Fake) -> None:
    refused = 'An error occurred: Get "https://10.90.1.1:6443/apis": dial tcp: connection refused\n'
    fake.reply("backup get nightly", {"stderr": refused, "rc": 1})
    with pytest.raises(VeleroError, match="connection refused"):
        fake.velero().wait_for_backup_visible("nightly", deadline_s=60)
    assert len(fake.calls) == 1
