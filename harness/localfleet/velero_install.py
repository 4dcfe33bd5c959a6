"""Velero in every cluster, installed as users install it: `velero install --dry-run -o json`, applied.

Each cluster gets the real Velero Deployment (its pods run by our node agents through the image
catalogue), the AWS object-store plugin as its init container, and the node-agent DaemonSet for
file-system backups with kopia. The storage location points at the fleet's backup store; clusters
that are DR targets (passive, standby) read it ReadOnly. Two server settings are made short for
drills: how often a location is re-validated, and the backup sync period (see SYNC_PERIOD_S, SYNC_TICK_S).
"""

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import each
from harness.localfleet.apps import APP
from harness.localfleet.objectstore import Store
from harness.localfleet.state import FleetState
from harness.velero import BackupSpec, Velero

NAMESPACE = "velero"
VERSION = "v1.18.3"
AWS_PLUGIN_VERSION = "v1.14.3"
IMAGE = f"velero/velero:{VERSION}"
AWS_PLUGIN_IMAGE = f"velero/velero-plugin-for-aws:{AWS_PLUGIN_VERSION}"
SYNC_PERIOD_S = 0.001
"""--backup-sync-period: a pass of the sync controller skips a location synced less than this ago
(locationFilterFunc). Next to nothing: every pass syncs, so a server restarted to sync never skips its first
pass because the server it replaces had just synced (with 5 s, a restart some 60 s after the last one
landed on the old server's tick now and then, and the backup then showed a minute later)."""
VALIDATION_FREQUENCY_S = 5
SYNC_TICK_S = 60
"""Velero's backup sync controller wakes every minute whatever --backup-sync-period says
(backupSyncReconcilePeriod in pkg/controller/backup_sync_controller.go); the period only skips ticks.
The first tick runs as the server starts, before the storage location is validated, so it is skipped:
a fresh server's first sync is a minute after it starts, unless its location was already Available."""
SCHEDULE, SCHEDULE_CRON = f"{APP}-hourly", "@every 1h"
MAX_BACKUP_AGE = "2h"
REQUEST_TIMEOUT_S = 10
"""Of each kubectl call that polls the install: a call against a stopped API server ends within it."""
POLL_S = 0.2
LOGS_HINT = f"; see `kubectl -n {NAMESPACE} logs deployment/velero`"


class VeleroInstallError(FleetDrillError):
    """Velero could not be installed or did not become ready."""


@dataclass(frozen=True)
class Install:
    """How to install Velero in one cluster."""

    velero: Path
    kubectl: Path
    kubeconfig: Path
    context: str
    store: Store
    read_only: bool

    def install_argv(self) -> list[str]:
        """`velero install` as the docs show it for an S3-compatible store, printing instead of applying."""
        config = f"region={self.store.region},s3ForcePathStyle=true,s3Url={self.store.url}"
        return [
            str(self.velero),
            "install",
            "--provider=aws",
            f"--plugins={AWS_PLUGIN_IMAGE}",
            f"--image={IMAGE}",
            f"--bucket={self.store.bucket}",
            f"--backup-location-config={config}",
            f"--secret-file={self.store.credentials_file}",
            "--use-volume-snapshots=false",
            "--use-node-agent",
            "--uploader-type=kopia",
            f"--namespace={NAMESPACE}",
            f"--kubeconfig={self.kubeconfig}",
            f"--kubecontext={self.context}",
            "--dry-run",
            "--output=json",
        ]


def _run(argv: list[str], what: str, stdin: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise VeleroInstallError(f"{what} failed: {done.stderr.strip()[-600:]}")
    return done.stdout


def manifests(install: Install) -> list[dict]:
    """The objects `velero install` prints, tuned for the fleet (location access mode, server timings)."""
    printed = json.loads(_run(install.install_argv(), "velero install --dry-run"))
    objects = printed.get("items", [printed])
    for obj in objects:
        if obj["kind"] == "BackupStorageLocation" and install.read_only:
            obj["spec"]["accessMode"] = "ReadOnly"
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "velero":
            server = obj["spec"]["template"]["spec"]["containers"][0]
            server["args"] = [
                *server.get("args", []),
                f"--backup-sync-period={SYNC_PERIOD_S * 1000:g}ms",
                f"--store-validation-frequency={VALIDATION_FREQUENCY_S}s",
            ]
    return objects


def _apply(install: Install, objects: list[dict], what: str) -> None:
    kubectl = [str(install.kubectl), "--kubeconfig", str(install.kubeconfig), "--context", install.context]
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    _run([*kubectl, "apply", "--server-side", "-f", "-"], f"applying {what} in {install.context}", document)


def apply(install: Install, deadline_s: float, stop: threading.Event) -> None:
    """Apply Velero's CRDs, wait until they serve, then everything else."""
    objects = manifests(install)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    _apply(install, crds, "Velero's CRDs")
    names = [f"crd/{o['metadata']['name']}" for o in crds]
    _wait_for(install, ["get", *names], _established, "Established", deadline_s, stop, "Velero's CRDs")
    _apply(install, [o for o in objects if o["kind"] != "CustomResourceDefinition"], "Velero")


def _established(found: dict) -> str:
    """The state of the CRDs listed: Established when all are, else how many are not."""
    crds = found.get("items", [found])
    waiting = [
        crd
        for crd in crds
        if not any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in crd.get("status", {}).get("conditions", [])
        )
    ]
    return f"{len(waiting)} of {len(crds)} not established" if waiting else "Established"


def _phase(found: dict) -> str:
    return found.get("status", {}).get("phase", "(none)")


def wait_available(install: Install, deadline_s: float, stop: threading.Event) -> None:
    """Poll until the cluster's default storage location is Available (the server runs and reaches the
    store), or until stop is set (`fleet up` ended without it)."""
    get = ["-n", NAMESPACE, "get", "backupstoragelocation", "default"]
    _wait_for(install, get, _phase, "Available", deadline_s, stop, "storage location", LOGS_HINT)


def _wait_for(
    install: Install,
    get: list[str],
    state: Callable[[dict], str],
    wanted: str,
    deadline_s: float,
    stop: threading.Event,
    what: str,
    hint: str = "",
) -> None:
    """Poll `kubectl GET -o json` until `state` of what it prints is `wanted`: VeleroInstallError naming the
    last state at the deadline, or at once when stop is set (`fleet up` ended: an interrupted up does not
    wait out a kubectl call)."""
    kubectl = [str(install.kubectl), "--kubeconfig", str(install.kubeconfig), "--context", install.context]
    argv = [*kubectl, f"--request-timeout={REQUEST_TIMEOUT_S}s", *get, "-o", "json"]
    deadline, seen = time.monotonic() + deadline_s, "(none)"
    while time.monotonic() < deadline and not stop.is_set():
        done = subprocess.run(argv, capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S + 5)
        if done.returncode == 0:
            seen = state(json.loads(done.stdout))
            if seen == wanted:
                return
        stop.wait(POLL_S)
    if stop.is_set():
        raise VeleroInstallError(f"Velero in {install.context}: install stopped, {what} {seen}")
    raise VeleroInstallError(f"Velero in {install.context}: {what} still {seen} after {deadline_s:g} s{hint}")


def installs_for(state: FleetState, binaries: dict[str, Path], store: Store) -> list[Install]:
    """How to install Velero in every cluster: active ones ReadWrite, DR targets ReadOnly, the location the
    fleet's backup store (objectstore.start)."""
    return [
        Install(
            binaries["velero"],
            binaries["kubectl"],
            state.folder / "kubeconfig",
            cluster.name,
            store,
            read_only=cluster.role != "active",
        )
        for cluster in state.clusters
    ]


def install_all(installs: list[Install], deadline_s: float, stop: threading.Event) -> None:
    """Velero in every cluster at once; return once every cluster's storage location is Available. Starts
    no process of the fleet's (kubectl only): it may run in a thread beside other steps of `fleet up`, which
    sets stop when it ends (interrupted: its wait must not keep the program alive)."""

    def install_and_wait(install: Install) -> None:
        apply(install, deadline_s, stop)
        wait_available(install, deadline_s, stop)

    each.at_once(install_and_wait, installs)


def back_up(installs: list[Install], deadline_s: float, data_namespaces: tuple[str, ...] = ()) -> None:
    """The scheduled backups and the first backup in every active cluster (after `install_all`, once the app
    serves: the first backup holds its data), of the app's namespace and `data_namespaces` (its database)."""
    namespaces = (APP, *data_namespaces)
    each.at_once(
        lambda install: schedule_backups(install, deadline_s, namespaces),
        [i for i in installs if not i.read_only],
    )


def fleet_section(binaries: dict[str, Path], store: Store) -> dict:
    """The fleet file's `velero` section."""
    return {
        "binary": str(binaries["velero"]),
        "namespace": NAMESPACE,
        "sync_period": f"{SYNC_PERIOD_S * 1000:g}ms",
        "restart_to_sync": True,
        "store": store.as_fleet_section(),
        "max_backup_age": MAX_BACKUP_AGE,
    }


def schedule_backups(install: Install, deadline_s: float, namespaces: tuple[str, ...]) -> None:
    """Hourly backups of the namespaces (their volumes by file-system backup), as a platform team schedules
    them, and the first one now from the schedule (`@every` waits a whole period first), waited for: backup
    hygiene holds from the start."""
    cli = Velero(install.velero, install.kubeconfig, install.context, NAMESPACE)
    spec = BackupSpec(include_namespaces=namespaces, default_volumes_to_fs_backup=True)
    cli.create_schedule(SCHEDULE, SCHEDULE_CRON, spec)
    first = f"{SCHEDULE}-first"
    cli.create_backup_from_schedule(first, SCHEDULE)
    cli.wait_for_backup(first, deadline_s)
