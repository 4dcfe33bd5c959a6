"""Failing an app over and back by the strategy its fleet file names (`apps[].failover`; the strategies are
in harness.strategies), each step on the timeline; and restore to a standby (a Velero backup of the app's
namespace, restored into another cluster)."""

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kubernetes import client

from harness.config import App
from harness.errors import FleetDrillError
from harness.faults import FaultStack
from harness.fleet import FleetAccess
from harness.permissions import VELERO, Permission, verbs
from harness.strategies import strategy
from harness.strategies.promote import promote
from harness.timeline import Timeline
from harness.velero import BackupSpec, Velero, VeleroError, restart_server

BACKUP_PERMISSIONS = verbs("create get", "backups", "velero.io", VELERO)
"""What `back_up` has the velero CLI call in the cluster backed up."""
RESTORE_PERMISSIONS = (
    Permission("get", "namespaces"),  # restore_namespace: beside the app, or into its own namespace
    Permission("get", "backups", "velero.io", VELERO),  # the synced backup; `velero restore create` too
    *verbs("create get", "restores", "velero.io", VELERO),
)
"""What restoring into a cluster calls there (restore_namespace, and the velero CLI for the rest)."""
SYNC_RESTART_PERMISSIONS = (Permission("patch", "deployments", "apps", VELERO),)
"""What restarting the restore target's Velero server to sync calls there (velero.restart_to_sync)."""
POLL_S = 0.05
SYNC_DEADLINE_S = 150.0  # Velero syncs a storage location's backups into a cluster once a minute


class FailoverError(FleetDrillError):
    """A failover step could not be taken."""


class BackupHooksFailed(FleetDrillError):
    """A backup ended short of Completed because backup hooks failed (their errors named in the message)."""

    def __init__(self, message: str, attempted: int, failed: int) -> None:
        super().__init__(message)
        self.attempted, self.failed = attempted, failed


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
    strategy(app.failover.strategy).run(access, app, cluster, timeline)


@dataclass(frozen=True)
class BackupPoint:
    """A backup a drill made, and the moments (time.monotonic) between which Velero read its data."""

    name: str
    started: float
    completed: float
    hooks_attempted: int = 0
    """Backup hooks Velero ran (the pods' pre/post backup hook annotations, or the spec's), all succeeded."""


def hook_errors(velero: Velero, name: str) -> list[str]:
    """The failed hooks of a backup as Velero's log tells them (`velero backup logs`: the hook's command and
    container, its error and what it printed on stderr, the pod), else the lines of `velero backup describe
    --details` that tell of a hook."""
    try:
        failed = _failed_hooks(velero.backup_logs(name))
    except VeleroError:
        failed = []
    if failed:
        return failed
    try:
        text = velero.describe_backup(name, details=True)
    except VeleroError:
        return []
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if "hook" in line.lower() and not line.startswith("Hooks")]


_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _fields(line: str) -> dict[str, str]:
    """The key=value fields of a logrus text line (quoted values unquoted)."""
    return {k: v[1:-1].replace('\\"', '"') if v.startswith('"') else v for k, v in _LOGFMT.findall(line)}


def _failed_hooks(logs: str) -> list[str]:
    """Velero logs a hook's command and container as it runs it ("running exec hook"), then its output
    ("stderr: ..."), then "Error executing hook" with the error, then "Error running pre hooks for pod" with
    the pod's name: each failure in a line."""
    failures: list[dict[str, str]] = []
    ran: dict[str, str] = {}
    for line in logs.splitlines():
        fields = _fields(line)
        message = fields.get("msg", "")
        if message == "running exec hook":
            ran = fields
        elif message.startswith("stderr: ") and "hookCommand" in fields:
            ran = ran | {"stderr": " ".join(message.removeprefix("stderr: ").replace("\\n", " ").split())}
        elif message == "Error executing hook":
            failures.append(
                ran | {"error": fields.get("error", ""), "hookPhase": fields.get("hookPhase", "")}
            )
        elif message.startswith("Error running") and failures and "pod" not in failures[-1]:
            failures[-1]["pod"] = fields.get("name", "?")
    return list(dict.fromkeys(_hook_failure(f) for f in failures))


def _hook_failure(fields: dict[str, str]) -> str:
    """One failed hook as a line: its phase, name and command, the container and pod, the error."""
    hook = " ".join(
        filter(None, (fields.get("hookPhase"), "hook", fields.get("hookName"), fields.get("hookCommand")))
    )
    where = f"in container {fields.get('hookContainer', '?')} of pod {fields.get('pod', '?')}"
    said = f" ({fields['stderr']})" if fields.get("stderr") else ""
    return f"{hook} {where}: {fields.get('error', '')}{said}"


def back_up(
    velero: Callable[[str], Velero],
    app: App,
    source: str,
    target: str,
    name: str,
    timeline: Timeline,
    deadline_s: float,
    restart_target: Callable[[], None] | None = None,
) -> BackupPoint:
    """Back up the app's namespace in `source`, its volumes through Velero's file-system backup, then wait
    until Velero in `target` sees the backup (after a sync of the storage location): a DR cluster cannot
    restore a backup it does not see yet. With `restart_target`, the target's Velero server is restarted
    first: its first pass syncs the location (else the next sync can be a minute away)."""
    spec = BackupSpec(include_namespaces=app.backed_up_namespaces, default_volumes_to_fs_backup=True)
    with timeline.phase("backup", cluster=source):
        started = time.monotonic()
        velero(source).create_backup(name, spec)
        try:
            backup = velero(source).wait_for_backup(name, deadline_s)
        except VeleroError as error:
            ended = velero(source).get_backup(name)
            if not ended.hooks_failed:
                raise
            timeline.record("backup.hooks-failed", cluster=source, detail={"backup": name})
            errors = "; ".join(hook_errors(velero(source), name)) or "(see `velero backup logs`)"
            raise BackupHooksFailed(
                f"backup {name} in {source}: {ended.hooks_failed} of {ended.hooks_attempted} backup hooks"
                f" failed: {errors}. {error}",
                ended.hooks_attempted,
                ended.hooks_failed,
            ) from None
        completed = time.monotonic()
    detail = {"backup": name, "items": backup.items_backed_up, "hooks": backup.hooks_attempted}
    timeline.record("backup.completed", cluster=source, detail=detail)
    with timeline.phase("backup sync", cluster=target):
        if restart_target is not None:
            restart_target()
            timeline.record("velero.restarted", cluster=target, detail={"why": "to sync the backup"})
        velero(target).wait_for_backup_visible(name, SYNC_DEADLINE_S)
    return BackupPoint(name, started, completed, backup.hooks_attempted)


def restore_namespace(access: FleetAccess, namespace: str, cluster: str, suffix: str) -> str:
    """Where a restore of `namespace` goes in `cluster`: that namespace on a cold standby; beside it,
    `NAMESPACE-restore-SUFFIX`, where the namespace exists already (a restore never overwrites)."""
    try:
        client.CoreV1Api(access.api_client(cluster)).read_namespace(namespace, _request_timeout=10)
    except client.ApiException as error:
        if error.status == 404:
            return namespace
        raise
    return f"{namespace}-restore-{suffix}"


def restore_namespaces(access: FleetAccess, app: App, cluster: str, suffix: str) -> dict[str, str]:
    """Where each namespace a backup of the app holds goes in `cluster` (restore_namespace's rule)."""
    return {
        namespace: restore_namespace(access, namespace, cluster, suffix)
        for namespace in app.backed_up_namespaces
    }


def restore_to_standby(
    velero: Velero,
    app: App,
    backup: str,
    cluster: str,
    into: Mapping[str, str],
    timeline: Timeline,
    deadline_s: float,
) -> None:
    """Restore the namespaces `backup` holds into `cluster` (Velero there), each as the namespace `into` maps
    it to, and wait until the restore Completed; the drill then waits for the restored app's first good
    answer."""
    restore = f"{backup}-{cluster}"
    mappings = {old: new for old, new in into.items() if old != new} or None
    with timeline.phase("restore", cluster=cluster):
        velero.create_restore(
            restore, backup=backup, namespace_mappings=mappings, include_namespaces=tuple(into)
        )
        done = velero.wait_for_restore(restore, deadline_s)
    detail = {"restore": restore, "namespace": into[app.namespace], "items": done.items_restored}
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

    @classmethod
    def prepared(
        cls, access: FleetAccess, timeline: Timeline, velero: Callable[[str], Velero], stack: FaultStack
    ) -> "Failover":
        """The failover of a drill that has injected nothing yet: each app's strategy looks up what it
        needs from the clusters now, while every cluster answers."""
        for app in access.fleet.apps:
            prepare = strategy(app.failover.strategy).prepare
            if prepare is not None:
                prepare(access, app)
        return cls(access, timeline, velero, stack)

    def fail_over(self, app: App, cluster: str) -> None:
        from harness.faults.failedover import FailedOver  # it fails back through this module

        if strategy(
            app.failover.strategy
        ).changes_fleet:  # observe: the GSLB and the app fail back by themselves
            primary = self.access.fleet.primary().name
            self.stack.push(FailedOver(targets=(cluster,), app=app.name, primary=primary))
        fail_over(self.access, app, cluster, self.timeline)

    def promote(self, app: App, cluster: str) -> None:
        """Fail over as the promote strategy does, whatever the app's strategy (for game days)."""
        promote(self.access, app, cluster, self.timeline)

    def fail_back(self, app: App, cluster: str, deadline_s: float) -> None:
        """Fail back (timed on the timeline); the failover is then out of the ledger."""
        from harness.faults.failedover import FailedOver

        fail_back(self.access, app, cluster, self.timeline, deadline_s)
        for fault in self.stack.in_force():
            if isinstance(fault, FailedOver) and fault.app == app.name:
                self.stack.forget(fault)

    def back_up(self, app: App, source: str, target: str, name: str, deadline_s: float) -> BackupPoint:
        settings = self.access.fleet.velero
        restart = (
            (lambda: restart_server(self.access.api_client(target), settings.namespace))
            if settings.restart_to_sync
            else None
        )
        return back_up(self.velero, app, source, target, name, self.timeline, deadline_s, restart)

    def restore_to_standby(
        self, app: App, backup: str, cluster: str, into: Mapping[str, str], deadline_s: float
    ) -> None:
        restore_to_standby(self.velero(cluster), app, backup, cluster, into, self.timeline, deadline_s)
