"""Failover strategies, each step on the timeline: observe (the GSLB moves traffic by itself), promote
(move the k8gb Gslb's primary, then make the app's data primary on the target cluster by the fleet file's
promote call), command (the
user's own failover script), chosen per app in the fleet file (`apps[].failover`); and restore to a
standby (a Velero backup of the app's namespace, restored into another cluster)."""

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubernetes import client

from harness.config import App, PromoteCall, fill_json
from harness.errors import FleetDrillError
from harness.faults import FaultStack
from harness.fleet import ClusterError, FleetAccess
from harness.infra.command import render, run_command
from harness.permissions import APP, VELERO, Permission, verbs
from harness.timeline import Timeline
from harness.velero import BackupSpec, Velero

# The k8gb Gslb resource (v1beta1) and the annotation that orders changes. k8gb's API group is k8gb.io
# since k8gb-io/k8gb#2203; k8gb.absa.oss, the legacy group, is served during the migration (a migrated
# legacy object is read-only), so the canonical group comes first and the legacy one is the fallback.
GSLB_GROUPS, GSLB_VERSION, GSLB_PLURAL = ("k8gb.io", "k8gb.absa.oss"), "v1beta1", "gslbs"
CHANGED_AT = "fleetdrill.io/changed-at"
STRATEGY_PERMISSIONS: dict[str, tuple[Permission, ...]] = {
    # the Gslb in every cluster; the canonical group is always tried first (a denial there stops it), the
    # legacy one is reached only where k8gb.io is not served
    "promote": (Permission("patch", GSLB_PLURAL, GSLB_GROUPS[0], APP),),
    "observe": (),
    "command": (),  # the user's script brings its own credentials
}
"""What each failover strategy (and its fail-back) calls in the clusters' APIs."""
BACKUP_PERMISSIONS = verbs("create get", "backups", "velero.io", VELERO)
"""What `back_up` has the velero CLI call in the cluster backed up."""
RESTORE_PERMISSIONS = (
    Permission("get", "namespaces"),  # restore_namespace: beside the app, or into its own namespace
    Permission("get", "backups", "velero.io", VELERO),  # the synced backup; `velero restore create` too
    *verbs("create get", "restores", "velero.io", VELERO),
)
"""What restoring into a cluster calls there (restore_namespace, and the velero CLI for the rest)."""
POLL_S = 0.05
SYNC_DEADLINE_S = 150.0  # Velero syncs a storage location's backups into a cluster once a minute


class FailoverError(FleetDrillError):
    """A failover step could not be taken."""


def poll(condition: Callable[[], bool], deadline_s: float) -> bool:
    """Poll condition until true (True) or the deadline passes (False)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll condition until true; FailoverError naming `what` at the deadline."""
    if not poll(condition, deadline_s):
        raise FailoverError(f"{what}: not done after {deadline_s:g} s")


def move_gslb_primary(access: FleetAccess, app: App, cluster: str) -> list[str]:
    """Point the app's Gslb at `cluster` in every reachable cluster; return the clusters updated."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {
        "metadata": {"annotations": {CHANGED_AT: stamp}},
        "spec": {"strategy": {"primaryGeoTag": cluster}},
    }

    def update(name: str) -> str:
        patch_gslb(client.CustomObjectsApi(access.api_client(name)), app, patch)
        return name

    results = access.each(update)
    updated = [name for name, result in results.items() if not isinstance(result, ClusterError)]
    if not updated:
        raise FailoverError(f"no cluster took the Gslb change: {'; '.join(map(str, results.values()))}")
    return updated


def patch_gslb(api: client.CustomObjectsApi, app: App, patch: dict) -> str:
    """Patch the app's Gslb in its namespace under k8gb's canonical API group, else the legacy one (a group
    the cluster does not serve, or without the object, answers 404); returns the group patched."""
    for group in GSLB_GROUPS:
        try:
            api.patch_namespaced_custom_object(
                group, GSLB_VERSION, app.namespace, GSLB_PLURAL, app.name, patch, _request_timeout=(1, 3)
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
            continue
        return group
    raise FailoverError(
        f"no Gslb {app.namespace}/{app.name} in API group {' or '.join(GSLB_GROUPS)} ({GSLB_VERSION})"
    )


def newest_epoch(app: App, call: PromoteCall) -> int:
    """The highest epoch any reachable cluster's app reports at its epoch_path (0 when none answers)."""

    def epoch(url: str) -> int:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}{call.epoch_path}", timeout=1) as response:
                return int(json.loads(response.read())[call.epoch_field])
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return 0  # a lost or cut-off cluster: the newer epoch fences it when it returns

    with ThreadPoolExecutor(max_workers=max(1, len(app.endpoints))) as pool:
        return max([0, *pool.map(epoch, app.endpoints.values())])


def promote_data(app: App, call: PromoteCall, cluster: str) -> int | None:
    """Make the app's data primary in `cluster` by the fleet file's promote call, at an epoch above every
    reachable cluster's when it names an epoch_path (so a primary that never stepped down is outranked
    too); return the epoch the app answers (None without an epoch_path)."""
    url = app.endpoints.get(cluster)
    if not url:
        raise FailoverError(f"app {app.name}: no endpoint for cluster {cluster} in the fleet file")
    values = {"epoch": newest_epoch(app, call) + 1} if call.epoch_path else {}
    request = urllib.request.Request(
        f"{url.rstrip('/')}{call.path}",
        data=json.dumps(fill_json(call.body, values)).encode(),
        method=call.method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = response.read()
        return int(json.loads(answer)[call.epoch_field]) if call.epoch_path else None
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as error:
        raise FailoverError(
            f"promoting {app.name} in {cluster} ({call.method} {call.path}): {error}"
        ) from error


def app_serves(app: App, cluster: str) -> bool:
    """The app answers its health path in `cluster`."""
    try:
        with urllib.request.urlopen(
            f"{app.endpoints[cluster].rstrip('/')}{app.health_path}", timeout=1
        ) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def fail_back(access: FleetAccess, app: App, cluster: str, timeline: Timeline, deadline_s: float) -> None:
    """Once the original primary serves again, fail over to it again (promote: at a newer epoch, so never
    two primaries)."""
    with timeline.phase("failback", cluster=cluster):
        wait_until(lambda: app_serves(app, cluster), deadline_s, f"{app.name} serving again in {cluster}")
        fail_over(access, app, cluster, timeline)


def fail_over(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    """Fail the app over to `cluster` by the strategy its fleet file names (`apps[].failover.strategy`)."""
    settings = app.failover
    if settings.strategy == "promote":
        promote(access, app, cluster, timeline)
    elif settings.strategy == "command":
        context = access.fleet.context_for(access.fleet.cluster(cluster))
        values = {"app": app.name, "namespace": app.namespace, "cluster": cluster, "context": context}
        argv = render(settings.command or (), values)
        with timeline.phase("failover command", cluster=cluster):
            run_command(argv, f"apps.{app.name}.failover.command", settings.timeout)
        timeline.record("failover.commanded", cluster=cluster, detail={"program": argv[0]})
    else:
        timeline.record("failover.observed", cluster=cluster, detail={"app": app.name})


def promote(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    """Fail over to `cluster`: traffic switch through the Gslb, then the data primary; each step timed."""
    with timeline.phase("traffic switch", cluster=cluster):
        updated = move_gslb_primary(access, app, cluster)
    timeline.record("gslb.updated", cluster=cluster, detail={"clusters": updated})
    call = app.failover.promote
    if call is None:  # the Gslb moves traffic; the app's data needs no promotion
        return
    with timeline.phase("promote", cluster=cluster):
        epoch = promote_data(app, call, cluster)
    timeline.record("data.promoted", cluster=cluster, detail={"epoch": epoch})


@dataclass(frozen=True)
class BackupPoint:
    """A backup a drill made, and the moments (time.monotonic) between which Velero read its data."""

    name: str
    started: float
    completed: float


def back_up(
    velero: Callable[[str], Velero],
    app: App,
    source: str,
    target: str,
    name: str,
    timeline: Timeline,
    deadline_s: float,
) -> BackupPoint:
    """Back up the app's namespace in `source`, its volumes through Velero's file-system backup, then wait
    until Velero in `target` sees the backup (after a sync of the storage location): a DR cluster cannot
    restore a backup it does not see yet."""
    spec = BackupSpec(include_namespaces=(app.namespace,), default_volumes_to_fs_backup=True)
    with timeline.phase("backup", cluster=source):
        started = time.monotonic()
        velero(source).create_backup(name, spec)
        backup = velero(source).wait_for_backup(name, deadline_s)
        completed = time.monotonic()
    detail = {"backup": name, "items": backup.items_backed_up}
    timeline.record("backup.completed", cluster=source, detail=detail)
    with timeline.phase("backup sync", cluster=target):
        velero(target).wait_for_backup_visible(name, SYNC_DEADLINE_S)
    return BackupPoint(name, started, completed)


def restore_namespace(access: FleetAccess, app: App, cluster: str, suffix: str) -> str:
    """Where a restore of the app goes in `cluster`: its own namespace on a cold standby; beside it,
    `NAMESPACE-restore-SUFFIX`, where the app's namespace exists already (a restore never overwrites)."""
    try:
        client.CoreV1Api(access.api_client(cluster)).read_namespace(app.namespace, _request_timeout=10)
    except client.ApiException as error:
        if error.status == 404:
            return app.namespace
        raise
    return f"{app.namespace}-restore-{suffix}"


def restore_to_standby(
    velero: Velero, app: App, backup: str, cluster: str, into: str, timeline: Timeline, deadline_s: float
) -> None:
    """Restore the app's namespace from `backup` into `cluster` (Velero there) as namespace `into`, and wait
    until the restore Completed; the drill then waits for the restored app's first good answer."""
    restore = f"{backup}-{cluster}"
    mappings = {app.namespace: into} if into != app.namespace else None
    with timeline.phase("restore", cluster=cluster):
        velero.create_restore(
            restore, backup=backup, namespace_mappings=mappings, include_namespaces=(app.namespace,)
        )
        done = velero.wait_for_restore(restore, deadline_s)
    detail = {"restore": restore, "namespace": into, "items": done.items_restored}
    timeline.record("restore.completed", cluster=cluster, detail=detail)


@dataclass(frozen=True)
class Failover:
    """The strategies bound to one drill's fleet access, timeline, fault stack and velero CLIs: the
    `failover` fixture. A failover is in the fault ledger before it acts (`record`: a recovery change the
    stack undoes after every fault, and `fleetdrill recover` after a crash); failing back takes it out."""

    access: FleetAccess
    timeline: Timeline
    velero: Callable[[str], Velero]
    stack: FaultStack

    def fail_over(self, app: App, cluster: str) -> None:
        from harness.faults.failedover import FailedOver  # it fails back through this module

        if app.failover.strategy != "observe":  # observe: the GSLB and the app fail back by themselves
            primary = self.access.fleet.primary().name
            self.stack.push(FailedOver(targets=(cluster,), app=app.name, primary=primary))
        fail_over(self.access, app, cluster, self.timeline)

    def promote(self, app: App, cluster: str) -> None:
        promote(self.access, app, cluster, self.timeline)

    def fail_back(self, app: App, cluster: str, deadline_s: float) -> None:
        """Fail back (timed on the timeline); the failover is then out of the ledger."""
        from harness.faults.failedover import FailedOver

        fail_back(self.access, app, cluster, self.timeline, deadline_s)
        for fault in self.stack.in_force():
            if isinstance(fault, FailedOver) and fault.app == app.name:
                self.stack.forget(fault)

    def back_up(self, app: App, source: str, target: str, name: str, deadline_s: float) -> BackupPoint:
        return back_up(self.velero, app, source, target, name, self.timeline, deadline_s)

    def restore_to_standby(self, app: App, backup: str, cluster: str, into: str, deadline_s: float) -> None:
        restore_to_standby(self.velero(cluster), app, backup, cluster, into, self.timeline, deadline_s)
