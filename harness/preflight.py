"""The pre-flight DR readiness check: could this app fail over or be restored right now?

It checks what real drills keep finding broken only during the disaster: the newest Completed backup is
younger than the RPO objective; the storage location is Available (and, for the cluster backing up, in
another region); every passive cluster runs the app's workload Ready (a warm standby that runs nothing
takes over nothing); the clusters that take over have the CRDs, namespace, secrets and spare capacity the
failed-over load needs; every credential and certificate on the DR path is present and valid for longer
than a margin. Each check is one line naming the cluster, what, and expected vs found. A role that takes
over (passive, standby) with no cluster is an error, as is a readiness with no check at all: nothing
checked is never ready, unless the fleet file lists the role in absent_roles (absent by design).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client

from harness import integrity
from harness.capacity import Resources, free_capacity, workload_requests
from harness.config import App, Cluster, Fleet
from harness.credentials import Expiry, kubeconfig_entry, serving_certificate
from harness.fleet import NETWORK_ERRORS, FleetAccess, UnreachableError, cause
from harness.kubeconfig import KubeconfigError
from harness.parity import read_workload, referenced, workload_permission
from harness.permissions import APP, CUSTOM, EVERY, LISTED, VELERO, Permission, verbs
from harness.samples import Verdict
from harness.velero import Backup, BackupStorageLocation, Velero, VeleroError

VELERO_CRD = "backups.velero.io"
DEFAULT_CREDENTIAL = ("cloud-credentials", "cloud")  # what `velero install --secret-file` creates
TIMEOUT_S = 10

CRDS = "customresourcedefinitions"
EXTENSIONS = "apiextensions.k8s.io"
VELERO_PERMISSIONS = (
    Permission("get", CRDS, EXTENSIONS),  # velero: is it installed
    Permission("list", "backupstoragelocations", "velero.io", VELERO),  # velero backup-location get
    Permission("get", "secrets", namespace=VELERO),  # location_secret
)
"""What `Preflight.velero` reads in a cluster that backs up or is restored into."""
BACKUPS_PERMISSIONS = (
    *verbs("list get", "backups", "velero.io", VELERO),  # velero backup get; velero backup download
    *verbs("create get", "downloadrequests", "velero.io", VELERO),  # velero backup download
)
"""What `Preflight.velero` reads besides in the cluster backing up: its backups."""
SOURCE_PERMISSIONS = (
    Permission("list", CRDS, EXTENSIONS),  # used_crds
    Permission("list", CUSTOM, namespace=APP),
    Permission("get", "secrets", namespace=APP),  # an optional reference: does the app have it here
)
"""What `Preflight.takeover` reads in the active cluster besides the workload."""


def backups_permissions(app: App) -> tuple[Permission, ...]:
    """What `Preflight.velero` reads besides in the cluster backing up: its backups, and the restore dry
    run's listing (integrity.object_inventory) of each namespace the app's backups hold."""
    dry_run = tuple(Permission("list", LISTED, namespace=n) for n in app.backed_up_namespaces)
    return BACKUPS_PERMISSIONS + dry_run


TARGET_PERMISSIONS = (
    Permission("get", CRDS, EXTENSIONS),  # _crd_check
    Permission("get", "namespaces"),
    Permission("get", "secrets", namespace=APP),
    Permission("list", "nodes"),  # capacity.free_capacity
    Permission("list", "pods", namespace=EVERY),
)
"""What `Preflight.takeover` reads in the cluster taking over besides the workload."""


def readiness_permissions(app: App, role: str) -> tuple[Permission, ...]:
    """What `Preflight.run` reads in a cluster of `role` (Prometheus aside: it is not the clusters' API)."""
    if role == "active":
        return (
            VELERO_PERMISSIONS + backups_permissions(app) + SOURCE_PERMISSIONS + (workload_permission(app),)
        )
    velero = VELERO_PERMISSIONS if role == "standby" else ()
    return velero + TARGET_PERMISSIONS + (workload_permission(app),)


def hygiene_permissions(app: App) -> tuple[Permission, ...]:
    """What `Preflight.backups` reads in the (active) cluster backing up."""
    return VELERO_PERMISSIONS + backups_permissions(app)


@dataclass(frozen=True)
class Check:
    """One readiness check: where, what, what was expected and what was found (error: there was nothing
    to check, which is never a pass)."""

    cluster: str
    what: str
    expected: str
    found: str
    ok: bool
    error: bool = False

    def text(self) -> str:
        return f"{self.cluster}: {self.what}: expected {self.expected}, found {self.found}"

    def line(self) -> str:
        mark = "ok  " if self.ok else "ERR " if self.error else "FAIL"
        return f"{mark} {self.text()}"

    def verdict(self, objective: str) -> Verdict:
        """This check alone as a drill verdict."""
        status = "pass" if self.ok else "error" if self.error else "fail"
        return Verdict(status, objective, self.expected, self.found, self.text(), {})


@dataclass(frozen=True)
class Readiness:
    """Every check of one app's DR path; ok when none failed."""

    app: str
    checks: tuple[Check, ...]

    @property
    def problems(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]

    def verdict(self, objective: str = "dr readiness") -> Verdict:
        """The readiness as a drill verdict: pass only when every check passed, an error when there was
        nothing to check."""
        if not self.checks:
            why = f"no readiness check ran for app {self.app}"
            return Verdict("error", objective, "every check passes", "no checks", why, {})
        problems = [c.text() for c in self.problems]
        message = "; ".join(problems) or f"{len(self.checks)} readiness checks passed"
        measured = f"{len(problems)} of {len(self.checks)} checks failed"
        status = "error" if any(c.error for c in self.problems) else "fail" if problems else "pass"
        return Verdict(status, objective, "every check passes", measured, message, {})


class VeleroLike(Protocol):
    """What the readiness check asks of harness.velero.Velero (a fake in unit tests)."""

    def get_backups(self) -> list[Backup]: ...

    def get_backup_locations(self, *names: str) -> list[BackupStorageLocation]: ...

    def download_backup(self, name: str, path: Path) -> Path: ...


SPANS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def human(seconds: float) -> str:
    """A rounded duration for people, in its two largest units: 1d23h, 2h, 5m30s, 12s, 250ms."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    total = round(seconds)
    index = next(i for i, (_, size) in enumerate(SPANS) if total >= size)
    (unit, size), rest = SPANS[index], total % SPANS[index][1]
    text = f"{total // size}{unit}"
    if index + 1 < len(SPANS) and rest // SPANS[index + 1][1]:
        text += f"{rest // SPANS[index + 1][1]}{SPANS[index + 1][0]}"
    return text


def _ago(now: datetime, then: datetime) -> str:
    return f"{human(max(0.0, (now - then).total_seconds()))} old"


def covers(backup: Backup, namespace: str) -> bool:
    """True when the backup includes `namespace` (an empty list or "*" means every namespace)."""
    spec = backup.raw.get("spec", {}) if backup.raw else {}
    included, excluded = spec.get("includedNamespaces") or ["*"], spec.get("excludedNamespaces") or []
    return ("*" in included or namespace in included) and namespace not in excluded


def newest_backup(backups: Sequence[Backup], namespace: str) -> Backup | None:
    """The newest Completed backup that holds `namespace`, or None."""
    done = [
        b for b in backups if b.phase == "Completed" and covers(b, namespace) and (b.completion or b.start)
    ]
    return max(done, key=lambda b: b.completion or b.start, default=None)  # type: ignore[arg-type,return-value]


def check_backups(
    cluster: str,
    backups: Sequence[Backup],
    namespace: str,
    rpo_s: float | None,
    now: datetime,
    limit_name: str = "the RPO",
) -> Check:
    """The newest Completed backup of `namespace` is younger than the RPO objective (or another limit)."""
    limit = "no RPO objective set" if rpo_s is None else f"younger than {limit_name} {human(rpo_s)}"
    expected = f"a Completed backup of namespace {namespace} {limit}"
    newest = newest_backup(backups, namespace)
    if newest is None:
        phases = ", ".join(sorted({b.phase for b in backups if covers(b, namespace)})) or "no backups"
        return Check(cluster, "latest backup", expected, f"none Completed ({phases})", False)
    taken = newest.completion or newest.start
    assert taken is not None
    found = f"{newest.name}, {_ago(now, taken)}"
    ok = rpo_s is not None and (now - taken).total_seconds() < rpo_s
    return Check(cluster, "latest backup", expected, found, ok)


def check_location(
    cluster: Cluster, locations: Sequence[BackupStorageLocation], name: str, other_region: bool
) -> list[Check]:
    """The storage location exists and is Available; when other_region, its region is not the cluster's."""
    what = f"storage location {name}"
    found = next((loc for loc in locations if loc.name == name), None)
    if found is None:
        return [Check(cluster.name, what, "present", "missing", False)]
    checks = [
        Check(
            cluster.name,
            what,
            "phase Available",
            f"phase {found.phase or '(none yet)'}",
            found.phase == "Available",
        )
    ]
    if other_region:
        region = found.config.get("region")
        checks.append(
            Check(
                cluster.name,
                f"{what} region",
                f"a region other than the cluster's ({cluster.region})",
                f"spec.config.region {region!r}" if region else "no spec.config.region",
                bool(region) and region != cluster.region,
            )
        )
    return checks


def check_expiry(cluster: str, expiry: Expiry, now: datetime, margin: timedelta) -> Check:
    """A credential is present and valid for longer than `margin`."""
    expected = f"present and valid for more than {human(margin.total_seconds())}"
    if expiry.problem is not None:
        return Check(cluster, expiry.what, expected, expiry.problem, False)
    if expiry.not_after is None:
        return Check(cluster, expiry.what, expected, "present, no expiry stated", True)
    left = (expiry.not_after - now).total_seconds()
    until = f"until {expiry.not_after:%Y-%m-%d %H:%M:%S} UTC"
    found = f"expired {human(-left)} ago" if left <= 0 else (f"valid {until} ({human(left)} left)")
    return Check(cluster, expiry.what, expected, found, left > margin.total_seconds())


def check_capacity(cluster: str, free: Resources, need: Resources) -> list[Check]:
    """Spare requests on Ready nodes cover the load moving in, per resource."""
    return [
        Check(
            cluster,
            f"spare {name}",
            f"at least {wanted:g} (failed-over requests)",
            f"{spare:g} free",
            spare >= wanted,
        )
        for name, wanted, spare in (("cpu", need.cpu, free.cpu), ("memory bytes", need.memory, free.memory))
    ]


def velero_checks(
    cluster: Cluster,
    velero: VeleroLike,
    location: str,
    app: App,
    now: datetime,
    *,
    other_region: bool,
    max_backup_age: float | None = None,
) -> tuple[list[Check], BackupStorageLocation | None]:
    """The storage location (and, on the active cluster, the newest backup of each namespace the app's
    backups hold, younger than max_backup_age or else the RPO objective) as velero reports them, and the
    location found; a velero failure is one finding."""
    try:
        locations = velero.get_backup_locations()
        checks = check_location(cluster, locations, location, other_region)
        if cluster.role == "active":  # each namespace a restore needs: the app's and its data's
            backups = velero.get_backups()
            for namespace in app.backed_up_namespaces:
                if max_backup_age is None:
                    check = check_backups(cluster.name, backups, namespace, app.objectives.rpo, now)
                else:
                    limit = "velero.max_backup_age"
                    check = check_backups(cluster.name, backups, namespace, max_backup_age, now, limit)
                checks.append(check)
    except VeleroError as error:
        return [Check(cluster.name, "velero CLI", "answers", " ".join(str(error).split()), False)], None
    return checks, next((loc for loc in locations if loc.name == location), None)


def role_check(fleet: Fleet, role: str) -> Check | None:
    """None when the fleet has a cluster of `role`; else a passing check when the fleet file lists the role
    in absent_roles (absent by design: nothing to check), an error when it does not."""
    if any(c.role == role for c in fleet.clusters):
        return None
    where, what = f"fleet {fleet.name}", f"{role} cluster"
    expected = f"a {role} cluster, or {role} in absent_roles"
    if role in fleet.absent_roles:
        return Check(where, what, expected, "none, absent by design (absent_roles): nothing to check", True)
    return Check(where, what, expected, "none: nothing to check", False, error=True)


def replica_counts(workload: Any) -> tuple[int, int]:
    """(desired, available) replicas of a Deployment, StatefulSet or DaemonSet, as its status says."""
    status = workload.status
    if isinstance(workload, client.V1DaemonSet):
        return (status.desired_number_scheduled, status.number_available or 0) if status else (0, 0)
    desired = 1 if workload.spec.replicas is None else workload.spec.replicas  # the API's default
    return desired, (status.available_replicas or 0) if status else 0


def check_serving(cluster: str, label: str, workload: Any | None) -> Check:
    """A passive cluster runs the workload Ready: every desired replica available, and more than none."""
    what, expected = f"workload {label}", "running with every replica available (desired > 0)"
    if workload is None:
        return Check(cluster, what, expected, "missing", False)
    desired, available = replica_counts(workload)
    found = f"{available} of {desired} replicas available"
    return Check(cluster, what, expected, found, desired > 0 and available == desired)


def presence(cluster: str, what: str, there: bool, expected: str = "present") -> Check:
    return Check(cluster, what, expected, "present" if there else "missing", there)


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _answered(cluster: str, checks: Callable[[], list[Check]]) -> list[Check]:
    """The checks, or one finding when an API server did not answer them (an unreachable cluster is not
    ready; it is not a crash)."""
    try:
        return checks()
    except (client.ApiException, *NETWORK_ERRORS) as error:
        return [Check(cluster, "Kubernetes API", "answers", cause(error)[0], False)]


def reach_check(cluster: str, problem: KubeconfigError | UnreachableError) -> Check:
    """A cluster whose kubeconfig context cannot be used, or whose API server does not answer."""
    if isinstance(problem, KubeconfigError):
        return Check(cluster, "kubeconfig context", "usable", str(problem), False)
    return Check(cluster, "API server", "reachable with the context's credentials", str(problem), False)


class Preflight:
    """Runs every readiness check of one app across the fleet."""

    def __init__(
        self,
        fleet: Fleet,
        access: FleetAccess,
        app: App,
        *,
        margin: timedelta = timedelta(days=7),
        velero_for: Callable[[Cluster], VeleroLike] | None = None,
        now: datetime | None = None,
    ) -> None:
        self.fleet, self.access, self.app, self.margin = fleet, access, app, margin
        self.now = now or datetime.now(UTC)
        self.velero_for = velero_for or self._velero

    def _velero(self, cluster: Cluster) -> Velero:
        settings = self.fleet.velero
        return Velero(
            settings.binary,
            self.fleet.kubeconfig_for(cluster),
            self.fleet.context_for(cluster),
            settings.namespace,
            timeout=30,
        )

    def run(self) -> Readiness:
        """Every check; a cluster whose kubeconfig context cannot be used or whose API server does not
        answer is one line, and nothing that needs its API is asked of it (nor of others, when it is the
        primary)."""
        primary = self.fleet.primary()
        checks = [c for role in ("passive", "standby") if (c := role_check(self.fleet, role)) is not None]
        down = self.access.unreachable()
        for cluster in self.fleet.clusters:
            problem = down.get(cluster.name)
            if problem is not None:
                checks.append(reach_check(cluster.name, problem))
            if not isinstance(problem, KubeconfigError):  # else its credentials are the same problem
                checks += self.credentials(cluster, serving=problem is None)
            if problem is not None:
                continue
            if cluster.role in ("active", "standby"):  # those that back up, and those restored into
                checks += _answered(cluster.name, lambda c=cluster: self.velero(c, other_region=c is primary))
            if cluster.role != "active" and primary.name not in down:
                checks += _answered(cluster.name, lambda c=cluster: self.takeover(primary, c))
        return Readiness(self.app.name, tuple(checks))

    def backups(self, cluster: Cluster) -> Readiness:
        """Backup hygiene of one cluster: its newest backup of the app and its storage location, in
        another region than the cluster."""
        return Readiness(self.app.name, tuple(_answered(cluster.name, lambda: self.velero(cluster, True))))

    def credentials(self, cluster: Cluster, serving: bool = True) -> list[Check]:
        """Every context of the cluster: its kubeconfig credentials and (when `serving`: not for a server
        known not to answer, already one line) the API server's certificate."""
        checks, servers = [], set()
        kubeconfig = self.fleet.kubeconfig_for(cluster)
        for context in filter(None, (self.fleet.context_for(cluster), cluster.readonly_context)):
            try:
                entry = kubeconfig_entry(kubeconfig, context)
            except ValueError as error:
                checks.append(
                    Check(cluster.name, f"context {context}", "in the kubeconfig", str(error), False)
                )
                continue
            checks += [
                check_expiry(
                    cluster.name, replace(e, what=f"context {context} {e.what}"), self.now, self.margin
                )
                for e in entry.credentials
            ]
            servers.add(entry.server)
        for server in sorted(servers) if serving else ():
            checks.append(check_expiry(cluster.name, serving_certificate(server), self.now, self.margin))
        return checks

    def velero(self, cluster: Cluster, other_region: bool) -> list[Check]:
        """Backups and the storage location through the velero CLI; "velero not installed" when it is not."""
        api = client.ApiextensionsV1Api(self.access.api_client(cluster.name))
        if not _exists(lambda: api.read_custom_resource_definition(VELERO_CRD, _request_timeout=TIMEOUT_S)):
            return [
                Check(cluster.name, "velero", f"installed (CRD {VELERO_CRD})", "velero not installed", False)
            ]
        settings = self.fleet.velero
        checks, location = velero_checks(
            cluster,
            self.velero_for(cluster),
            settings.storage_location,
            self.app,
            self.now,
            other_region=other_region,
            max_backup_age=settings.max_backup_age,
        )
        if location is not None:
            checks.append(self.location_secret(cluster, location))
        if cluster.role == "active":
            velero = self.velero_for(cluster)
            checks += [self.restore_dry_run(cluster, velero, n) for n in self.app.backed_up_namespaces]
        return checks

    def restore_dry_run(self, cluster: Cluster, velero: VeleroLike, namespace: str) -> Check:
        """What restoring the newest backup of `namespace` (the app's, or its data's) would bring back,
        against what runs now: every object of the namespace must be in it (those changed since the backup
        are named, not failed)."""
        what = "restore dry run"
        try:
            newest = newest_backup(velero.get_backups(), namespace)
            if newest is None:
                expected = f"a Completed backup of namespace {namespace}"
                return Check(cluster.name, what, expected, "none", False)
            with tempfile.TemporaryDirectory() as folder:
                archive = velero.download_backup(newest.name, Path(folder) / "backup.tar.gz")
                backed_up = integrity.backup_inventory(archive, namespace)
            live = integrity.object_inventory(self.access.api_client(cluster.name), namespace)
        except (VeleroError, integrity.IntegrityError) as error:
            found = " ".join(str(error).split())
            return Check(cluster.name, what, "the newest backup readable", found, False)
        missing = sorted(set(live) - set(backed_up))
        changed = sorted(k for k in set(live) & set(backed_up) if live[k].digest != backed_up[k].digest)
        found = f"{len(live) - len(missing)} of {len(live)} objects"
        found += f"; missing {', '.join(missing)}" if missing else ""
        found += f"; changed since: {', '.join(changed)}" if changed else ""
        expected = f"every object of namespace {namespace} in backup {newest.name}"
        return Check(cluster.name, what, expected, found, not missing)

    def location_secret(self, cluster: Cluster, location: BackupStorageLocation) -> Check:
        """The storage location's credential secret exists and holds its key (the value is never read out)."""
        ref = (location.raw or {}).get("spec", {}).get("credential") or {}
        name, key = ref.get("name") or DEFAULT_CREDENTIAL[0], ref.get("key") or DEFAULT_CREDENTIAL[1]
        what = f"storage location {location.name} credential secret {self.fleet.velero.namespace}/{name}"
        core = client.CoreV1Api(self.access.api_client(cluster.name))
        try:
            secret = core.read_namespaced_secret(
                name, self.fleet.velero.namespace, _request_timeout=TIMEOUT_S
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
            return Check(cluster.name, what, f"present with key {key!r}", "missing", False)
        has_key = bool((secret.data or {}).get(key))
        return Check(
            cluster.name,
            what,
            f"present with key {key!r}",
            "present with the key" if has_key else "present without the key",
            has_key,
        )

    def takeover(self, primary: Cluster, standby: Cluster) -> list[Check]:
        """What the cluster taking over needs: the app's CRDs, namespace, secrets and spare capacity; and a
        passive cluster runs the app's workload Ready."""
        source, target = self.access.api_client(primary.name), self.access.api_client(standby.name)
        name, namespace = standby.name, self.app.namespace
        core = client.CoreV1Api(target)
        checks = [
            self._crd_check(name, crd, client.ApiextensionsV1Api(target)) for crd in self.used_crds(source)
        ]
        present = _exists(lambda: core.read_namespace(namespace, _request_timeout=TIMEOUT_S))
        checks.append(presence(name, f"namespace {namespace}", present))
        running = read_workload(self.access, self.app, standby.name)
        if standby.role == "passive":
            checks.append(check_serving(name, self.app.workload, running))
        workload = read_workload(self.access, self.app, primary.name)
        if workload is None:
            return [
                *checks,
                Check(primary.name, self.app.workload, "present (the load to fail over)", "missing", False),
            ]
        required, source_core = referenced(workload, required_only=True)[1], client.CoreV1Api(source)
        for secret in sorted(referenced(workload)[1]):
            if secret not in required and not _exists(  # optional, and the app runs without it now
                lambda s=secret: source_core.read_namespaced_secret(s, namespace, _request_timeout=TIMEOUT_S)
            ):
                continue
            there = present and _exists(
                lambda s=secret: core.read_namespaced_secret(s, namespace, _request_timeout=TIMEOUT_S)
            )
            checks.append(presence(name, f"secret {namespace}/{secret}", there))
        need = workload_requests(workload) - (
            workload_requests(running) if running is not None else Resources()
        )
        return checks + check_capacity(name, free_capacity(core), need.at_least_zero())

    def used_crds(self, api: client.ApiClient) -> list[str]:
        """CRDs with objects in the app's namespace on the active cluster."""
        used = []
        for crd in (
            client.ApiextensionsV1Api(api).list_custom_resource_definition(_request_timeout=TIMEOUT_S).items
        ):
            version = next((v.name for v in crd.spec.versions if v.storage), None)
            if crd.spec.scope != "Namespaced" or version is None:
                continue
            found = client.CustomObjectsApi(api).list_namespaced_custom_object(
                crd.spec.group,
                version,
                self.app.namespace,
                crd.spec.names.plural,
                limit=1,
                _request_timeout=TIMEOUT_S,
            )
            if found.get("items"):
                used.append(crd.metadata.name)
        return used

    @staticmethod
    def _crd_check(cluster: str, crd: str, api: client.ApiextensionsV1Api) -> Check:
        there = _exists(lambda: api.read_custom_resource_definition(crd, _request_timeout=TIMEOUT_S))
        return presence(cluster, f"CRD {crd}", there, "present (the app has objects of it)")


def preflight(
    fleet: Fleet, access: FleetAccess, app: str, margin: timedelta = timedelta(days=7)
) -> Readiness:
    """Every readiness check of the app called `app`."""
    return Preflight(fleet, access, fleet.app(app), margin=margin).run()
