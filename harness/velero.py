"""Velero CLI wrapper: deadline-bound subprocess calls, typed `-o json` results, and polling waits.

`--wait` is never used: it exits 0 on Failed/PartiallyFailed and has no deadline of its own.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from kubernetes import client

from harness.config import Fleet
from harness.errors import FleetDrillError

TERMINAL_PHASES = frozenset({"Completed", "PartiallyFailed", "Failed", "FailedValidation"})
_STDERR_LIMIT = 2000
_SYNC_HINT = (
    ". A cluster that did not create a backup sees it only after velero's backup sync copies it from "
    "the storage location (every --backup-sync-period, default 1m, or the BSL's spec.backupSyncPeriod): "
    "check that a BSL here is Available and points at the same bucket and prefix, or raise the deadline."
)


class VeleroError(FleetDrillError):
    """A velero command failed, or a backup or restore ended in a phase other than Completed."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr

    @property
    def not_found(self) -> bool:
        """True when velero said the object does not exist (`backups.velero.io "x" not found`)."""
        return '" not found' in self.stderr


class VeleroTimeout(VeleroError):
    """A velero command or a wait did not finish before its deadline."""


def _trim(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _STDERR_LIMIT else "..." + text[-_STDERR_LIMIT:]


def _items(data: dict[str, Any]) -> list[dict[str, Any]]:
    """velero prints a bare object when exactly one item matches and a List wrapper otherwise."""
    return list(data["items"] or []) if "items" in data else [data]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _at(path: str, default: Any, convert: Callable[[Any], Any] = lambda v: v) -> dict[str, Any]:
    """Field metadata: read from a dotted JSON path ("" is the whole object); missing or "" is the default."""
    return {"path": path, "default": default, "convert": convert}


class _Record:
    """Builds a frozen dataclass from a velero.io/v1 object, reading each field from its JSON path."""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Self:
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            node: Any = obj
            for key in f.metadata["path"].split(".") if f.metadata["path"] else ():
                node = node.get(key) if isinstance(node, dict) else None
            values[f.name] = f.metadata["convert"](f.metadata["default"] if node in (None, "") else node)
        return cls(**values)


@dataclass(frozen=True)
class Operation(_Record):
    """What Backup and Restore share: a phase that ends in Completed or a failure."""

    name: str = field(metadata=_at("metadata.name", ""))
    phase: str = field(metadata=_at("status.phase", "New"))  # controllers treat an empty phase as New
    labels: dict[str, str] = field(metadata=_at("metadata.labels", {}, dict))
    start: datetime | None = field(metadata=_at("status.startTimestamp", None, _time))
    completion: datetime | None = field(metadata=_at("status.completionTimestamp", None, _time))
    errors: int = field(metadata=_at("status.errors", 0))
    warnings: int = field(metadata=_at("status.warnings", 0))
    total_items: int = field(metadata=_at("status.progress.totalItems", 0))
    failure_reason: str = field(metadata=_at("status.failureReason", ""))
    validation_errors: tuple[str, ...] = field(metadata=_at("status.validationErrors", (), tuple))
    raw: dict[str, Any] = field(repr=False, compare=False, metadata=_at("", None))


@dataclass(frozen=True)
class Backup(Operation):
    """A velero.io/v1 Backup as `velero backup get -o json` prints it."""

    storage_location: str = field(metadata=_at("spec.storageLocation", ""))
    expiration: datetime | None = field(metadata=_at("status.expiration", None, _time))
    items_backed_up: int = field(metadata=_at("status.progress.itemsBackedUp", 0))
    hooks_attempted: int = field(metadata=_at("status.hookStatus.hooksAttempted", 0))
    """Backup hooks Velero ran (pre and post, from pod annotations or the spec)."""
    hooks_failed: int = field(metadata=_at("status.hookStatus.hooksFailed", 0))


@dataclass(frozen=True)
class Restore(Operation):
    """A velero.io/v1 Restore as `velero restore get -o json` prints it."""

    backup_name: str = field(metadata=_at("spec.backupName", ""))
    schedule_name: str = field(metadata=_at("spec.scheduleName", ""))
    items_restored: int = field(metadata=_at("status.progress.itemsRestored", 0))


@dataclass(frozen=True)
class Schedule(_Record):
    """A velero.io/v1 Schedule: a cron expression and a Backup template."""

    name: str = field(metadata=_at("metadata.name", ""))
    phase: str = field(metadata=_at("status.phase", "New"))
    cron: str = field(metadata=_at("spec.schedule", ""))
    paused: bool = field(metadata=_at("spec.paused", False))
    last_backup: datetime | None = field(metadata=_at("status.lastBackup", None, _time))
    validation_errors: tuple[str, ...] = field(metadata=_at("status.validationErrors", (), tuple))
    labels: dict[str, str] = field(metadata=_at("metadata.labels", {}, dict))
    raw: dict[str, Any] = field(repr=False, compare=False, metadata=_at("", None))


@dataclass(frozen=True)
class BackupStorageLocation(_Record):
    """A velero.io/v1 BackupStorageLocation; a DR cluster should read the primary's ReadOnly."""

    name: str = field(metadata=_at("metadata.name", ""))
    # Available | Unavailable; "" before the first validation
    phase: str = field(metadata=_at("status.phase", ""))
    provider: str = field(metadata=_at("spec.provider", ""))
    bucket: str = field(metadata=_at("spec.objectStorage.bucket", ""))
    prefix: str = field(metadata=_at("spec.objectStorage.prefix", ""))
    config: dict[str, str] = field(metadata=_at("spec.config", {}, dict))  # region, s3Url, ...
    access_mode: str = field(metadata=_at("spec.accessMode", "ReadWrite"))
    default: bool = field(metadata=_at("spec.default", False))
    last_validation_time: datetime | None = field(metadata=_at("status.lastValidationTime", None, _time))
    last_synced_time: datetime | None = field(metadata=_at("status.lastSyncedTime", None, _time))
    message: str = field(metadata=_at("status.message", ""))
    raw: dict[str, Any] = field(repr=False, compare=False, metadata=_at("", None))


@dataclass(frozen=True)
class BackupSpec:
    """What to back up; used by `backup create` and as the template of `schedule create`."""

    include_namespaces: tuple[str, ...] = ()
    include_resources: tuple[str, ...] = ()
    selector: str | None = None
    storage_location: str | None = None
    ttl: timedelta | None = None
    default_volumes_to_fs_backup: bool | None = None
    snapshot_volumes: bool | None = None

    def flags(self) -> list[str]:
        """The velero flags for this spec; unset fields are left to velero's defaults."""
        ttl = f"{int(self.ttl.total_seconds())}s" if self.ttl is not None else ""
        valued = {
            "--include-namespaces": ",".join(self.include_namespaces),
            "--include-resources": ",".join(self.include_resources),
            "--selector": self.selector or "",
            "--storage-location": self.storage_location or "",
            "--ttl": ttl,
        }
        out = [part for flag, value in valued.items() if value for part in (flag, value)]
        optional = {  # optional bools: false needs the `=` form
            "--default-volumes-to-fs-backup": self.default_volumes_to_fs_backup,
            "--snapshot-volumes": self.snapshot_volumes,
        }
        return out + [f"{flag}={str(on).lower()}" for flag, on in optional.items() if on is not None]


T = TypeVar("T")
Op = TypeVar("Op", bound=Operation)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class Velero:
    """The velero CLI against one cluster; every call carries kubeconfig, context, namespace, deadline."""

    def __init__(
        self,
        binary: str | Path,
        kubeconfig: Path,
        context: str,
        namespace: str = "velero",
        timeout: float = 60,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.binary, self.kubeconfig, self.context = str(binary), Path(kubeconfig), context
        self.namespace, self.timeout = namespace, timeout
        self._clock, self._sleep = clock, sleep
        self.where = f"context {context!r} (kubeconfig {self.kubeconfig}, namespace {namespace})"

    @classmethod
    def for_cluster(cls, fleet: Fleet, cluster: str, timeout: float = 60) -> Velero:
        """The velero CLI the fleet file names (`velero.binary`), against one of its clusters."""
        found = fleet.cluster(cluster)
        return cls(
            fleet.velero.binary,
            fleet.kubeconfig_for(found),
            fleet.context_for(found),
            fleet.velero.namespace,
            timeout,
        )

    def run(self, *args: str, timeout: float | None = None) -> str:
        """Run `velero ARGS` plus the global flags; return stdout, or raise VeleroError/VeleroTimeout."""
        argv = [self.binary, *args, "--kubeconfig", str(self.kubeconfig)]
        argv += ["--kubecontext", self.context, "--namespace", self.namespace]
        limit, cmd = self.timeout if timeout is None else timeout, shlex.join(argv)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, so a deadline kills its children too
            )
        except OSError as exc:
            raise VeleroError(f"cannot run velero {self.binary!r}: {exc.strerror}; check its path") from exc
        with proc:
            try:
                out, err = proc.communicate(timeout=limit)
            except BaseException as exc:  # deadline, Ctrl-C, anything: never leave velero running
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                if isinstance(exc, subprocess.TimeoutExpired):
                    raise VeleroTimeout(
                        f"`{cmd}` on {self.where} did not finish within {limit:g}s; killed its process group"
                    ) from None
                raise
        if proc.returncode != 0:
            raise VeleroError(
                f"`{cmd}` on {self.where} exited {proc.returncode}: {_trim(err) or '(no stderr)'}", stderr=err
            )
        return out

    def _get(self, kind: str, names: tuple[str, ...], timeout: float | None = None) -> list[dict[str, Any]]:
        out = self.run(kind, "get", *names, "-o", "json", timeout=timeout)
        with suppress(json.JSONDecodeError):
            data = json.loads(out)
            if isinstance(data, dict):
                return _items(data)
        raise VeleroError(f"`velero {kind} get` on {self.where} printed no JSON object: {_trim(out)}")

    def _one(self, kind: str, name: str, parse: Callable[[dict[str, Any]], T], timeout: float | None) -> T:
        items = self._get(kind, (name,), timeout)
        if len(items) != 1:
            raise VeleroError(f"`velero {kind} get {name}` on {self.where} gave {len(items)} items, not 1")
        return parse(items[0])

    # backups
    def create_backup(self, name: str, spec: BackupSpec = BackupSpec()) -> None:
        self.run("backup", "create", name, *spec.flags())

    def create_backup_from_schedule(self, name: str, schedule: str) -> None:
        """A backup now from a schedule's template, labelled with the schedule's name as its own are."""
        self.run("backup", "create", name, "--from-schedule", schedule)

    def get_backup(self, name: str, *, timeout: float | None = None) -> Backup:
        return self._one("backup", name, Backup.from_json, timeout)

    def get_backups(self) -> list[Backup]:
        return [Backup.from_json(o) for o in self._get("backup", ())]

    def describe_backup(self, name: str, *, details: bool = False) -> str:
        return self.run("backup", "describe", name, *(["--details"] if details else []))

    def download_backup(self, name: str, path: Path) -> Path:
        """The backup's tarball (its objects as JSON under resources/), written to `path`."""
        self.run("backup", "download", name, "-o", str(path))
        return path

    def backup_logs(self, name: str) -> str:
        return self.run("backup", "logs", name)

    # restores
    def create_restore(
        self,
        name: str,
        *,
        backup: str | None = None,
        schedule: str | None = None,
        namespace_mappings: Mapping[str, str] | None = None,
        include_namespaces: tuple[str, ...] = (),
        existing_resource_policy: Literal["none", "update"] | None = None,
    ) -> None:
        """Restore a backup or a schedule's newest; on a DR cluster, wait_for_backup_visible first."""
        if (backup is None) == (schedule is None):
            raise VeleroError(f"restore {name}: give exactly one of backup= or schedule=")
        args = ["restore", "create", name]
        args += ["--from-backup", backup] if backup is not None else ["--from-schedule", str(schedule)]
        if namespace_mappings:
            args += ["--namespace-mappings", ",".join(f"{k}:{v}" for k, v in namespace_mappings.items())]
        if include_namespaces:
            args += ["--include-namespaces", ",".join(include_namespaces)]
        if existing_resource_policy:
            args += ["--existing-resource-policy", existing_resource_policy]
        self.run(*args)

    def get_restore(self, name: str, *, timeout: float | None = None) -> Restore:
        return self._one("restore", name, Restore.from_json, timeout)

    # schedules and storage locations
    def create_schedule(
        self, name: str, cron: str, spec: BackupSpec = BackupSpec(), paused: bool = False
    ) -> None:
        args = ["schedule", "create", name, "--schedule", cron, *spec.flags()]
        self.run(*args, *(["--paused"] if paused else []))

    def get_schedule(self, name: str) -> Schedule:
        return self._one("schedule", name, Schedule.from_json, None)

    def delete_schedule(self, name: str) -> None:
        self.run("schedule", "delete", name, "--confirm")

    def get_backup_locations(self, *names: str) -> list[BackupStorageLocation]:
        return [BackupStorageLocation.from_json(o) for o in self._get("backup-location", names)]

    # waits
    def wait_for_backup(self, name: str, deadline_s: float, poll: float = 0.5) -> Backup:
        """Poll until the backup is terminal; return it if Completed, else raise VeleroError."""
        return self._wait("backup", name, self.get_backup, deadline_s, poll)

    def wait_for_restore(self, name: str, deadline_s: float, poll: float = 0.5) -> Restore:
        """Poll until the restore is terminal; return it if Completed, else raise VeleroError."""
        return self._wait("restore", name, self.get_restore, deadline_s, poll)

    def wait_for_backup_visible(self, name: str, deadline_s: float, poll: float = 0.5) -> Backup:
        """Poll until a backup made by another cluster appears here, in any phase (after a backup sync)."""
        return self._wait("backup", name, self.get_backup, deadline_s, poll, visible_only=True)

    def _wait(
        self,
        kind: str,
        name: str,
        get: Callable[..., Op],
        deadline_s: float,
        poll: float,
        *,
        visible_only: bool = False,
    ) -> Op:
        start, phase = self._clock(), "(never read)"
        while (left := start + deadline_s - self._clock()) > 0:
            try:
                op = get(name, timeout=min(self.timeout, left))
            except VeleroError as exc:
                if not (visible_only and exc.not_found):
                    raise
                phase = "not found"
            else:
                if visible_only or op.phase == "Completed":
                    return op
                phase = op.phase
                if phase in TERMINAL_PHASES:
                    raise VeleroError(
                        f"{kind} {name} on {self.where} ended {phase}: failure reason "
                        f"{op.failure_reason or '(none)'}; {op.errors} errors, {op.warnings} warnings; "
                        f"validation errors: {'; '.join(op.validation_errors) or '(none)'}. "
                        f"See `velero {kind} describe {name} --details` and `velero {kind} logs {name}`."
                    )
            self._sleep(max(0.0, min(poll, start + deadline_s - self._clock())))
        raise VeleroTimeout(
            f"{kind} {name} on {self.where}: still {phase} after {self._clock() - start:.1f}s "
            f"(deadline {deadline_s:g}s)" + (_SYNC_HINT if visible_only else "")
        )


def restart_server(api: client.ApiClient, namespace: str = "velero") -> None:
    """Restart the Velero Deployment's pods as `kubectl rollout restart` does (a pod template annotation).

    Velero's backup sync wakes once a minute whatever its period; its first pass runs as the server
    starts. A DR cluster whose storage location is already Available so sees backups made elsewhere as
    soon as its new server is up, instead of at the next minute's pass.
    """
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    client.AppsV1Api(api).patch_namespaced_deployment("velero", namespace, patch)
