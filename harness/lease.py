"""The drill lease: while a run faults a cluster it holds that cluster's lease, so two drills never fault one
cluster at once; and the lease lives where the fault cannot take it away.

The lease of cluster C is a coordination.k8s.io/v1 Lease fleetdrill/fleetdrill-drill-C, held in every cluster
the run does not fault (at least one must answer), or only in the cluster `safety.lease_cluster` names
(LeasePlaces). Each copy names the run as holderIdentity for leaseDurationSeconds; the run renews every copy
in the background and releases them at the end. A copy another run holds and renewed within its duration
refuses the drill (copies in the clusters it will fault are read too); an expired one (its holder died) is
taken over. Expiry is judged, as client-go's leader election does, from renewTime and this host's clock.
Writes carry the lease's resourceVersion, so two runs racing for one copy cannot both win.

Copies in clusters the run itself faults may go stale: the lease of C is lost only when another run holds a
copy, or when no copy at all has been renewed within the lease's duration.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from kubernetes.client import (
    ApiClient,
    CoordinationV1Api,
    CoreV1Api,
    V1Lease,
    V1LeaseSpec,
    V1Namespace,
    V1ObjectMeta,
)
from kubernetes.client.exceptions import ApiException

from harness.config import Fleet
from harness.faults.base import Fault, Guard, interrupt_main_thread, signals_as_interrupts
from harness.permissions import verbs
from harness.safety import DrillAborted, SafetyError

NAMESPACE = "fleetdrill"
NAME = "fleetdrill-drill"
LEASE_PERMISSIONS = verbs("get create update", "leases", "coordination.k8s.io", NAMESPACE)
"""What holding, renewing and releasing a copy of a drill lease calls where it is held (the namespace is made
when missing, if the identity may: not asked, since it is made once)."""
_ATTEMPTS = 3  # reads and writes in a row before conflicting writers make us give up


class LeaseHeld(SafetyError):
    """Another run holds the lease and renewed it within its duration: the drill is refused."""


class LeaseLost(SafetyError):
    """Another run holds the lease now, or it was deleted: the drill is no longer protected."""

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder
        """Who holds it now; None when it is free or deleted."""


def lease_name(cluster: str) -> str:
    """The name of the Lease that stands for the drill lease of `cluster`, wherever a copy of it is held."""
    return f"{NAME}-{cluster}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _micro_time(moment: datetime | None) -> str | None:
    """A MicroTime as the API server parses it: RFC 3339 with exactly six fractional digits."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expiry(spec: V1LeaseSpec) -> datetime | None:
    """When the lease expires: last renewal (or acquisition) plus its duration; None when it says neither."""
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None or not spec.lease_duration_seconds:
        return None
    renewed = renewed.astimezone(UTC) if renewed.tzinfo else renewed.replace(tzinfo=UTC)
    return renewed + timedelta(seconds=spec.lease_duration_seconds)


class Lease(Protocol):
    """One copy of a cluster's drill lease, as ClusterLease uses it (DrillLease, or a test's fake)."""

    @property
    def duration_s(self) -> float: ...

    def acquire(self) -> None: ...
    def check(self) -> None: ...
    def renew(self) -> None: ...
    def release(self) -> None: ...


class DrillLease:
    """The copy, in cluster `held_in` (default: `cluster` itself), of the drill lease of `cluster`, through a
    CoordinationV1Api of `held_in` (or anything with its lease methods). `holder` names the run holding it."""

    def __init__(
        self,
        cluster: str,
        api: Any,
        holder: str,
        duration_s: float,
        *,
        held_in: str | None = None,
        namespace: str = NAMESPACE,
        name: str | None = None,
        now: Callable[[], datetime] = _utcnow,
        request_timeout_s: float = 10.0,
        namespaces: Any = None,
    ) -> None:
        """`namespaces` (a CoreV1Api), when given, creates the lease's namespace when it is missing."""
        self.cluster, self.held_in, self.holder = cluster, held_in or cluster, holder
        self.namespace, self.name = namespace, name or lease_name(cluster)
        self.duration_s = max(1, math.ceil(duration_s))
        self._api, self._now, self._timeout = api, now, request_timeout_s
        self._namespaces = namespaces

    @classmethod
    def for_client(
        cls, cluster: str, api_client: ApiClient, holder: str, duration_s: float, **kwargs: Any
    ) -> DrillLease:
        """The copy in the cluster `api_client` talks to (pass it as held_in); its namespace is created when
        missing."""
        api, namespaces = CoordinationV1Api(api_client), CoreV1Api(api_client)
        return cls(cluster, api, holder, duration_s, namespaces=namespaces, **kwargs)

    @property
    def where(self) -> str:
        return f"drill lease of {self.cluster} ({self.namespace}/{self.name} in cluster {self.held_in})"

    def acquire(self) -> None:
        """Take the copy: create it, or take it over when free or expired; LeaseHeld while another run holds
        it, SafetyError when the cluster does not answer."""
        for _ in range(_ATTEMPTS):
            lease, now = self._read(), self._now()
            if lease is None:
                meta = V1ObjectMeta(name=self.name, namespace=self.namespace)
                body = V1Lease(metadata=meta, spec=V1LeaseSpec(acquire_time=now, lease_transitions=0))
                if self._write("create", body, now):
                    return
                continue
            self._refuse_if_held(lease, now)
            spec = lease.spec
            if spec.holder_identity != self.holder:
                spec.acquire_time = now
                spec.lease_transitions = (spec.lease_transitions or 0) + 1
            if self._write("replace", lease, now):
                return
        raise SafetyError(f"{self.where}: not acquired after {_ATTEMPTS} conflicting updates; try again")

    def check(self) -> None:
        """Read the copy without taking it: LeaseHeld when another run holds it."""
        lease = self._read()
        if lease is not None:
            self._refuse_if_held(lease, self._now())

    def renew(self) -> None:
        """Push the expiry forward; LeaseLost when this run does not hold the copy any more."""
        for _ in range(_ATTEMPTS):
            lease, now = self._read(), self._now()
            holder = lease.spec.holder_identity if lease else None
            if holder != self.holder:
                now_held = f"held by run {holder!r}" if holder else "free or deleted"
                message = f"{self.where}: lost, {now_held} now; the drill is not protected any more"
                raise LeaseLost(message, holder or None)
            if self._write("replace", lease, now):
                return
        raise SafetyError(f"{self.where}: not renewed after {_ATTEMPTS} conflicting updates")

    def release(self) -> None:
        """Give the copy up if this run holds it (it becomes free at once)."""
        for _ in range(_ATTEMPTS):
            lease = self._read()
            if lease is None or lease.spec.holder_identity != self.holder:
                return
            lease.spec.holder_identity = None
            if self._write("replace", lease, None):
                return
        raise SafetyError(f"{self.where}: not released after {_ATTEMPTS} conflicting updates")

    def _refuse_if_held(self, lease: V1Lease, now: datetime) -> None:
        holder, expiry = lease.spec.holder_identity, _expiry(lease.spec)
        if holder and holder != self.holder and expiry is not None and expiry > now:
            raise LeaseHeld(
                f"refused: the {self.where} is held by run {holder!r} until {expiry:%Y-%m-%d %H:%M:%S} UTC "
                f"({(expiry - now).total_seconds():.0f} s from now): another drill is faulting "
                f"{self.cluster}; wait for it to end (if it died, the lease expires by itself, or delete it "
                f"in cluster {self.held_in}: kubectl -n {self.namespace} delete lease {self.name})"
            )

    def _read(self) -> V1Lease | None:
        try:
            return self._call("read", self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise SafetyError(f"{self.where}: cannot read it: {exc.status} {exc.reason}") from None

    def _write(self, verb: str, lease: V1Lease, now: datetime | None) -> bool:
        """Create or replace `lease` as held by this run (renewed `now`; None releases it); False on a
        conflict (someone else wrote it first)."""
        spec = lease.spec
        if now is not None:
            spec.holder_identity, spec.renew_time = self.holder, now
            spec.lease_duration_seconds = self.duration_s
        spec.acquire_time, spec.renew_time = _micro_time(spec.acquire_time), _micro_time(spec.renew_time)
        try:
            if verb == "create":
                self._call(verb, self._api.create_namespaced_lease, self.namespace, lease)
            else:
                self._call(verb, self._api.replace_namespaced_lease, self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            missing = exc.status == 404 and verb == "create"
            if missing and self._namespaces is not None:
                self._create_namespace()
                return False
            hint = f" (create the namespace: kubectl create namespace {self.namespace})" if missing else ""
            raise SafetyError(f"{self.where}: cannot {verb} it: {exc.status} {exc.reason}{hint}") from None
        return True

    def _create_namespace(self) -> None:
        body = V1Namespace(metadata=V1ObjectMeta(name=self.namespace))
        try:
            self._call("create the namespace of", self._namespaces.create_namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise SafetyError(
                    f"{self.where}: cannot create namespace {self.namespace}: {exc.status} {exc.reason}"
                ) from None

    def _call(self, verb: str, method: Callable[..., Any], *args: Any) -> Any:
        """Call the API with a timeout; an API error passes, any other (network) becomes a SafetyError."""
        try:
            return method(*args, _request_timeout=self._timeout)
        except ApiException:
            raise
        except Exception as exc:
            raise SafetyError(f"{self.where}: cannot {verb} it: {type(exc).__name__}: {exc}") from None


CopyFor = Callable[[str, str], Lease]
"""copy_for(cluster, held_in): the copy, in cluster held_in, of the drill lease of cluster."""


@dataclass(frozen=True)
class LeasePlaces:
    """Where the drill lease of a faulted cluster is held: every cluster of the fleet the run does not fault,
    or only `lease_cluster` (safety.lease_cluster)."""

    clusters: tuple[str, ...]
    lease_cluster: str | None = None

    @classmethod
    def of(cls, fleet: Fleet) -> LeasePlaces:
        return cls(tuple(cluster.name for cluster in fleet.clusters), fleet.safety.lease_cluster)

    def holders(self, cluster: str, faulting: frozenset[str]) -> tuple[str, ...]:
        """Where to hold the lease of `cluster` while the run faults `faulting`; SafetyError when that is
        every cluster and no lease_cluster is set."""
        if self.lease_cluster is not None:
            return (self.lease_cluster,)
        holders = tuple(place for place in self.clusters if place not in faulting)
        if not holders:
            raise SafetyError(
                f"refused: the drill would fault every cluster of the fleet ({', '.join(self.clusters)}), "
                f"leaving none to hold the drill lease of {cluster}; name the cluster that holds drill "
                "leases in safety.lease_cluster of the fleet file (one whose API server the drill leaves up)"
            )
        return holders

    def lease(
        self, cluster: str, faulting: frozenset[str], copy_for: CopyFor, faulted: Callable[[], frozenset[str]]
    ) -> ClusterLease:
        """The lease of `cluster` for a run about to fault `faulting` (not acquired yet)."""
        holders = self.holders(cluster, faulting)
        cut_off = faulted()  # already out of reach by this run's own faults: nothing to read there
        others = (
            () if self.lease_cluster else tuple(p for p in self.clusters if p not in {*holders, *cut_off})
        )
        return ClusterLease(cluster, holders, others, copy_for, faulted)

    def anywhere(self, cluster: str) -> tuple[str, ...]:
        """Every cluster a run may have held the lease of `cluster` in (its own too: a fault that leaves its
        API up holds the lease there as well)."""
        if self.lease_cluster is not None:
            return (self.lease_cluster,)
        return tuple(self.clusters)


class ClusterLease:
    """The drill lease of one cluster: a copy in each of `holders` that answers (at least one), after the
    copies in `others` (the clusters being faulted) were read and found free. `faulted()` says which clusters
    the run faults: their copies may go stale or vanish without the lease being lost."""

    def __init__(
        self,
        cluster: str,
        holders: Sequence[str],
        others: Sequence[str],
        copy_for: CopyFor,
        faulted: Callable[[], frozenset[str]],
    ) -> None:
        self.cluster, self._holders, self._others = cluster, tuple(holders), tuple(others)
        self._copy_for, self._faulted = copy_for, faulted
        self._copies: dict[str, Lease] = {}
        self.missed: dict[str, str] = {}
        """Holders no copy could be taken in, and why."""
        self.duration_s = 0.0

    @property
    def held_in(self) -> tuple[str, ...]:
        return tuple(self._copies)

    @property
    def where(self) -> str:
        return f"drill lease of {self.cluster}"

    def describe(self) -> str:
        """Where the lease is held, for the drill's timeline: "lease of a held in b, c; not in d (why)"."""
        text = f"lease of {self.cluster} held in {', '.join(self.held_in) or 'no cluster'}"
        missed = "; ".join(f"{place} ({why})" for place, why in self.missed.items())
        return f"{text}; not in {missed}" if missed else text

    def acquire(self) -> None:
        """Take a copy in each holder that answers, then read the others; LeaseHeld (every copy taken given
        back) when another run holds any copy, SafetyError when no holder answered."""
        try:
            for place in self._holders:
                try:
                    copy = self._copy_for(self.cluster, place)
                    copy.acquire()
                except LeaseHeld:
                    raise
                except Exception as exc:  # a holder that does not answer: the others hold the lease
                    self.missed[place] = str(exc)
                else:
                    self._copies[place] = copy
            if not self._copies:
                why = "; ".join(self.missed.values())
                raise SafetyError(f"refused: no cluster left to hold the {self.where}: {why}")
            for place in self._others:
                try:
                    self._copy_for(self.cluster, place).check()
                except LeaseHeld:
                    raise
                except Exception:  # a cluster being faulted may not answer; the copies taken stand
                    continue
        except BaseException:
            self._give_back()
            raise
        self.duration_s = max(copy.duration_s for copy in self._copies.values())

    def renew(self) -> None:
        """Renew every copy, those outside the faulted clusters first. LeaseLost when another run holds a copy
        (or one outside the faulted clusters vanished); SafetyError when no copy was renewed."""
        faulted, renewed, failed = self._faulted(), False, []
        for place, copy in sorted(self._copies.items(), key=lambda item: item[0] in faulted):
            try:
                copy.renew()
                renewed = True
            except LeaseLost as exc:
                if exc.holder is not None or place not in faulted:
                    raise
                failed.append(str(exc))
            except Exception as exc:  # the lease stands while one copy is renewed
                failed.append(str(exc))
        if not renewed:
            raise SafetyError(f"no copy renewed: {'; '.join(failed)}")

    def release(self) -> None:
        """Give every copy up; SafetyError naming those outside the faulted clusters that did not answer
        (they expire by themselves)."""
        faulted, failed = self._faulted(), []
        while self._copies:
            place, copy = self._copies.popitem()
            try:
                copy.release()
            except Exception as exc:
                if place not in faulted:
                    failed.append(str(exc))
        if failed:
            raise SafetyError(f"{self.where}: not released (it expires by itself): {'; '.join(failed)}")

    def _give_back(self) -> None:
        """Release the copies taken so far, after a refusal: the refusal is what the caller must see."""
        try:
            self.release()
        except SafetyError:
            return


def _abort_drill(exc: SafetyError) -> None:
    interrupt_main_thread(DrillAborted(f"drill aborted: {exc}"))


class FleetLease:
    """Drill leases of several clusters: all acquired or none, renewed in the background, released on exit.

    More leases can be taken while it is entered (`hold`, or the guard from `guard`), as a drill reaches
    more clusters. When a lease is lost (another run holds it, or renewals failed until it expired),
    `on_lost` is called from the renewing thread; by default it raises DrillAborted in the main thread so
    faults are reverted. Enter it in the main thread.
    """

    def __init__(
        self,
        leases: Sequence[Any] = (),
        *,
        renew_every_s: float | None = None,
        on_lost: Callable[[SafetyError], None] | None = None,
    ) -> None:
        """`leases`: each with cluster, where, duration_s, acquire, renew and release (a ClusterLease or a
        DrillLease)."""
        self._initial = list(leases)
        self._held: list[Any] = []
        self._renewed: dict[int, float] = {}  # id(lease) -> when it was last acquired or renewed
        self._faulted: frozenset[str] = frozenset()
        self._every = renew_every_s
        self._on_lost = on_lost or _abort_drill
        self._stop = threading.Event()
        self._exits = ExitStack()

    def held(self) -> frozenset[str]:
        """The clusters whose lease this run holds."""
        return frozenset(lease.cluster for lease in self._held)

    def faulted(self) -> frozenset[str]:
        """The clusters whose API server a fault this guard let through may take away (Fault.cuts_api),
        over the whole run: no lease is held there."""
        return self._faulted

    def hold(self, lease: Any) -> None:
        """Acquire one more lease (SafetyError when another run holds it); renewed and released with the
        rest."""
        lease.acquire()
        self._renewed[id(lease)] = time.monotonic()
        self._held.append(lease)

    def guard(
        self,
        places: LeasePlaces,
        copy_for: CopyFor,
        then: Guard | None = None,
        on_held: Callable[[ClusterLease], None] | None = None,
    ) -> Guard:
        """A FaultStack guard: `then` (the safety rules) first, then the lease of every target cluster not
        held yet, held in `places` (copies made by `copy_for`), before the fault is in the ledger; `on_held`
        hears of each lease taken."""

        def guard(fault: Fault, faulted: frozenset[str]) -> None:
            if then is not None:
                then(fault, faulted)
            faulting = self._faulted | (frozenset(fault.targets) if fault.cuts_api else frozenset())
            for cluster in fault.targets:
                if cluster not in self.held():
                    lease = places.lease(cluster, faulting, copy_for, self.faulted)
                    self.hold(lease)
                    if on_held is not None:
                        on_held(lease)
            self._faulted |= faulting

        return guard

    def __enter__(self) -> FleetLease:
        with ExitStack() as undo:
            undo.enter_context(signals_as_interrupts())
            undo.callback(self._release_all)
            for lease in self._initial:
                self.hold(lease)
            thread = threading.Thread(target=self._renew, name="fleetdrill-lease-renewal", daemon=True)
            thread.start()
            undo.callback(thread.join)
            undo.callback(self._stop.set)
            self._exits = undo.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exits.close()

    def _release_all(self) -> None:
        """Release every lease, newest first; SafetyError naming those not released, after trying all."""
        failed = []
        while self._held:
            try:
                self._held.pop().release()
            except SafetyError as exc:
                failed.append(str(exc))
        if failed:
            raise SafetyError("; ".join(failed))

    def _interval(self) -> float:
        if self._every is not None:
            return self._every
        return min((lease.duration_s for lease in self._held), default=3.0) / 3

    def _renew(self) -> None:
        while not self._stop.wait(self._interval()):
            for lease in list(self._held):
                since = self._renewed[id(lease)]
                try:
                    lease.renew()
                    self._renewed[id(lease)] = time.monotonic()
                except LeaseLost as exc:
                    self._on_lost(exc)
                    return
                except Exception as exc:
                    if time.monotonic() + self._interval() >= since + lease.duration_s:
                        self._on_lost(SafetyError(f"{lease.where}: renewals failed until it expires: {exc}"))
                        return


def release_runs(
    holders: Mapping[str, set[str]],
    places: LeasePlaces,
    api_client_for: Callable[[str], Any],
    *,
    lease_api: Callable[[Any], Any] = CoordinationV1Api,
) -> list[str]:
    """Release, wherever `places` may have held it, the lease of each cluster that one of its holders in
    `holders` (cluster -> holder identities) still holds, as `fleetdrill recover` does for the runs whose
    faults it reverted; one line per copy not released (it expires by itself)."""
    problems = []
    for cluster, ids in sorted(holders.items()):
        for place in places.anywhere(cluster):
            for holder in sorted(ids):
                try:
                    api = lease_api(api_client_for(place))
                    DrillLease(cluster, api, holder, 1, held_in=place).release()
                except Exception as exc:  # reported: the lease expires by itself
                    problems.append(f"run {holder!r}: {exc} (it expires by itself)")
    return problems
