"""What the selected drills need from each cluster's API: the permissions of the parts each uses (its drill
marker's `uses`, harness.catalogue), in the clusters it uses them in, and which drills need each.

A part is a fault kind (its `permissions`) or one of PARTS: the app's failover strategy (with its fail-back;
in every cluster, as the promote strategy moves the Gslb everywhere), a Velero backup, a restore, probes
through the API server's service proxy, the load drill's reads, what the gate drills read (DR
readiness, configuration parity, backup hygiene: what their code reads in a cluster of its role). A
destructive drill also holds drill leases (wherever harness.lease may hold them) and reads the fleet as it
found it (the app's pods where it has endpoints).
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from harness import parity, preflight
from harness.burst import BURST_PERMISSIONS
from harness.catalogue import SelectedDrill
from harness.config import App, Cluster, Fleet
from harness.failover import BACKUP_PERMISSIONS, RESTORE_PERMISSIONS, SYNC_RESTART_PERMISSIONS
from harness.faults import all_kinds
from harness.fleet import SERVICE_PROXY_PERMISSIONS
from harness.lease import LEASE_PERMISSIONS, LeasePlaces
from harness.permissions import Permission
from harness.steadystate import AS_FOUND_PERMISSIONS
from harness.strategies import strategy


@dataclass(frozen=True)
class Part:
    """Something a drill does through the Kubernetes API: its name in lines, what it needs in a cluster of the
    fleet for the drill's app, and whether it acts on every cluster whatever the drill names."""

    label: str
    permissions: Callable[[Fleet, App, Cluster], tuple[Permission, ...]]
    everywhere: bool = False


PARTS = {
    "failover": Part(
        "failover", lambda fleet, app, cluster: strategy(app.failover.strategy).permissions, everywhere=True
    ),
    "velero-backup": Part("velero backup", lambda fleet, app, cluster: BACKUP_PERMISSIONS),
    "velero-restore": Part(
        "velero restore",
        lambda fleet, app, cluster: (
            RESTORE_PERMISSIONS + (SYNC_RESTART_PERMISSIONS if fleet.velero.restart_to_sync else ())
        ),
    ),
    "service-proxy": Part("service proxy", lambda fleet, app, cluster: SERVICE_PROXY_PERMISSIONS),
    "load": Part("load", lambda fleet, app, cluster: BURST_PERMISSIONS),
    "readiness-read": Part(
        "dr readiness", lambda fleet, app, cluster: preflight.readiness_permissions(app, cluster.role)
    ),
    "parity-read": Part(
        "configuration parity", lambda fleet, app, cluster: parity.permissions(app, cluster.role)
    ),
    "backup-hygiene-read": Part(
        "backup hygiene", lambda fleet, app, cluster: preflight.hygiene_permissions(app)
    ),
}
"""The parts that are not fault kinds, by the name drills use in their marker."""
LEASE = Part("drill lease", lambda fleet, app, cluster: LEASE_PERMISSIONS)
AS_FOUND = Part("as-found check", lambda fleet, app, cluster: AS_FOUND_PERMISSIONS)


def parts() -> dict[str, Part]:
    """Every part a drill may use, by name: the fault kinds a drill injects (not recovery changes: its
    failover is the `failover` part) and PARTS."""
    faults = {
        kind: Part(kind, lambda fleet, app, cluster, declared=cls.permissions: declared)
        for kind, cls in all_kinds().items()
        if not cls.recovery
    }
    return faults | PARTS


@dataclass(frozen=True)
class Need:
    """A permission one cluster must grant (its namespace resolved), and who needs it: (part, drill) pairs."""

    cluster: str
    permission: Permission
    needed_by: tuple[tuple[str, str], ...]

    def why(self) -> str:
        """Who needs it, by part: "velero restore in test_a; drill lease in test_a and 4 more"."""
        drills: dict[str, list[str]] = {}
        for label, drill in self.needed_by:
            drills.setdefault(label, []).append(drill)
        said = [
            f"{label} in {names[0]}" + (f" and {len(names) - 1} more" if names[1:] else "")
            for label, names in drills.items()
        ]
        return "; ".join(said)


def needs(fleet: Fleet, drills: Sequence[SelectedDrill]) -> list[Need]:
    """Every permission the drills need, per cluster (in the fleet's order), each once; the drills' apps
    must be in the fleet."""
    known = parts()
    wanted: dict[tuple[str, Permission], list[tuple[str, str]]] = {}

    def want(part: Part, clusters: Iterable[str], app: App, drill: SelectedDrill) -> None:
        for cluster in clusters:
            for permission in part.permissions(fleet, app, fleet.cluster(cluster)):
                resolved = permission.resolved(app.namespace, fleet.velero.namespace)
                users = wanted.setdefault((cluster, resolved), [])
                if (part.label, drill.short) not in users:
                    users.append((part.label, drill.short))

    everywhere = [cluster.name for cluster in fleet.clusters]
    places = LeasePlaces.of(fleet)
    for drill in drills:
        app = fleet.app(drill.app or "")
        for use in drill.uses:
            part = known[use.part]
            want(part, everywhere if part.everywhere else use.clusters(fleet), app, drill)
        if drill.destructive:
            faulted = {cluster for use in drill.uses for cluster in use.clusters(fleet)}
            want(LEASE, {place for cluster in faulted for place in places.anywhere(cluster)}, app, drill)
            want(AS_FOUND, app.endpoints, app, drill)
    order = {name: index for index, name in enumerate(everywhere)}
    ranked = sorted(wanted.items(), key=lambda item: order[item[0][0]])
    return [Need(cluster, permission, tuple(users)) for (cluster, permission), users in ranked]
