"""Backup and restore: back up the app with Velero, write more, lose the primary cluster, restore the backup
into the standby cluster. Judged: the restored app answers within the RTO objective, and the data it holds
ends at the backup point (everything acknowledged before the backup is there, nothing after it).

On a standby that runs the app's namespace already (a warm one, like the local fleet's), the restore goes
beside it into a scratch namespace the drill deletes when it ends, and is reached through the API server's
service proxy; traffic stays where the GSLB sends it. The app's data services' namespaces
(apps[].data_namespaces: its database) are backed up and restored with it, each by the same rule; the
sentinels are read back once the restored copy answers.

Backup hooks (the pods' pre/post backup hook annotations, e.g. a database CHECKPOINT before Velero's
file-system backup copies its files): how many ran is a figure (backup_hooks); a backup that failed because a
hook failed fails the drill on the objective "backup hooks", naming the hooks' errors. Without hooks the drill
still judges what the restored copy holds: a copy that is not consistent shows as missing data or a restored
database that never answers.
"""

import uuid

import pytest

from harness.config import App, Fleet
from harness.drill import Drill
from harness.failover import BackupHooksFailed, Failover, poll, restore_namespaces
from harness.faults.cluster import ClusterLoss
from harness.faults.scratch import ScratchNamespace
from harness.fleet import service_port, service_proxy

BASELINE_S = 2.0
MORE_WRITES = 20
"""Sentinel writes acknowledged after the backup and before the fault: the data the restore must not hold."""
BACKUP_DEADLINE_S = 300.0
"""How long the drill's backup may take: it comes before the fault, so the RTO does not bound it (on a busy
runner a database's backup with its hooks outlasted twice a 20 s RTO); Velero's own timeouts are minutes."""
RESTORE_TARGET = ("standby", "passive")
"""The roles restored into: the first that has clusters."""


def restore_target(fleet: Fleet) -> str:
    """The first standby cluster, else the passive one."""
    for role in RESTORE_TARGET:
        found = [c.name for c in fleet.clusters if c.role == role]
        if found:
            return found[0]
    pytest.fail(f"fleet {fleet.name} has no standby or passive cluster to restore into", pytrace=False)


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.gameday
@pytest.mark.drill(
    uses={
        "velero-backup": "active",
        "cluster-loss": "active",
        "scratch-namespace": RESTORE_TARGET,
        "velero-restore": RESTORE_TARGET,
        "service-proxy": RESTORE_TARGET,
    },
)
def test_restore_the_backup_into_the_standby(drill: Drill, app: App, failover: Failover) -> None:
    if not app.service:
        pytest.fail(f"app {app.name} names no service in the fleet file: the restore is reached through it")
    primary, target = drill.fleet.primary().name, restore_target(drill.fleet)
    deadline = 2 * (app.objectives.rto or 30.0)
    run = uuid.uuid4().hex[:8]
    namespaces = restore_namespaces(drill.access, app, target, run)
    into = namespaces[app.namespace]
    port = service_port(drill.access.api_client(primary), app.namespace, app.service)
    proxy = service_proxy(drill.access.auth(target), into, app.service, port)
    loss = ClusterLoss(targets=(primary,))
    scratch = ScratchNamespace(targets=(target,), namespaces=tuple(namespaces.values()))
    drill.check_faults(loss, scratch)  # before the backup: a refusal comes before any change
    with drill.observe(app):
        assert drill.steady(app, primary, BASELINE_S, deadline), (
            f"steady state: {primary} does not serve {app.name}: {drill.why_not_steady(app, primary)}"
        )
        try:
            point = failover.back_up(app, primary, target, f"{app.name}-drill-{run}", BACKUP_DEADLINE_S)
        except BackupHooksFailed as failure:
            pytest.fail(drill.backup_hooks_failed(app, failure).message, pytrace=False)
        assert poll(lambda: drill.writes_acked_since(app, point.completed) >= MORE_WRITES, deadline), (
            f"{app.name} acknowledged fewer than {MORE_WRITES} writes after the backup"
        )
        # the restored app is probed from before t0: every probe until it serves is part of the RTO
        with drill.observe_restored(app, proxy):
            t0 = drill.inject(loss).started
            # pushed after the loss, so reverted before it: the restored copy is gone when the primary returns
            drill.inject(scratch)
            failover.restore_to_standby(app, point.name, target, namespaces, deadline)
            drill.wait_restored_serves(app, deadline)
            drill.wait_restored_data(app, proxy, target, deadline)
            drill.soak()
    verdicts = drill.judge_restore(app, t0, point, proxy, target)
    drill.revert_all()
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
