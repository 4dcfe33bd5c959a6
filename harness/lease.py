"""The drill lease: a coordination.k8s.io/v1 Lease per cluster, so two drills never fault one cluster at once.

A run holds it (holderIdentity = run id) for leaseDurationSeconds, renews it in the background while the
drill runs and releases it at the end. A lease another run holds and has renewed within its duration
refuses the drill; an expired one (its holder died) is taken over. Expiry is judged, as client-go's leader
election does, from renewTime and this host's clock. Updates use the lease's resourceVersion, so two runs
racing for one lease cannot both win.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

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

from harness.faults.base import Fault, Guard, interrupt_main_thread, signals_as_interrupts
from harness.safety import DrillAborted, SafetyError

NAMESPACE = "fleetdrill"
NAME = "fleetdrill-drill"
_ATTEMPTS = 3  # reads and writes in a row before conflicting writers make us give up


class LeaseLost(SafetyError):
    """Another run holds the lease now, or it was deleted: the drill is no longer protected."""


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


class DrillLease:
    """The drill lease in one cluster, through a CoordinationV1Api (or anything with its lease methods)."""

    def __init__(
        self,
        cluster: str,
        api: Any,
        run_id: str,
        duration_s: float,
        *,
        namespace: str = NAMESPACE,
        name: str = NAME,
        now: Callable[[], datetime] = _utcnow,
        request_timeout_s: float = 10.0,
        namespaces: Any = None,
    ) -> None:
        """`namespaces` (a CoreV1Api), when given, creates the lease's namespace when it is missing."""
        self.cluster, self.run_id, self.namespace, self.name = cluster, run_id, namespace, name
        self.duration_s = max(1, math.ceil(duration_s))
        self._api, self._now, self._timeout = api, now, request_timeout_s
        self._namespaces = namespaces

    @classmethod
    def for_client(
        cls, cluster: str, api_client: ApiClient, run_id: str, duration_s: float, **kwargs: Any
    ) -> DrillLease:
        """The lease of the cluster `api_client` talks to (its namespace is created when missing)."""
        api, namespaces = CoordinationV1Api(api_client), CoreV1Api(api_client)
        return cls(cluster, api, run_id, duration_s, namespaces=namespaces, **kwargs)

    @property
    def where(self) -> str:
        return f"cluster {self.cluster}: drill lease {self.namespace}/{self.name}"

    def acquire(self) -> None:
        """Take the lease: create it, or take it over when free or expired; SafetyError while held."""
        for _ in range(_ATTEMPTS):
            lease, now = self._read(), self._now()
            if lease is None:
                meta = V1ObjectMeta(name=self.name, namespace=self.namespace)
                body = V1Lease(metadata=meta, spec=V1LeaseSpec(acquire_time=now, lease_transitions=0))
                if self._write("create", body, now):
                    return
                continue
            spec, holder = lease.spec, lease.spec.holder_identity
            expiry = _expiry(spec)
            if holder and holder != self.run_id and expiry is not None and expiry > now:
                raise SafetyError(
                    f"refused: {self.where} is held by run {holder!r} until {expiry:%Y-%m-%d %H:%M:%S} UTC "
                    f"({(expiry - now).total_seconds():.0f} s from now): another drill is running there; "
                    "wait for it to end (if it died, the lease expires by itself, or delete it: "
                    f"kubectl -n {self.namespace} delete lease {self.name})"
                )
            if holder != self.run_id:
                spec.acquire_time = now
                spec.lease_transitions = (spec.lease_transitions or 0) + 1
            if self._write("replace", lease, now):
                return
        raise SafetyError(f"{self.where}: not acquired after {_ATTEMPTS} conflicting updates; try again")

    def renew(self) -> None:
        """Push the expiry forward; LeaseLost when this run does not hold the lease any more."""
        for _ in range(_ATTEMPTS):
            lease, now = self._read(), self._now()
            holder = lease.spec.holder_identity if lease else None
            if holder != self.run_id:
                now_held = f"held by run {holder!r}" if holder else "free or deleted"
                raise LeaseLost(f"{self.where}: lost, {now_held} now; the drill is not protected any more")
            if self._write("replace", lease, now):
                return
        raise SafetyError(f"{self.where}: not renewed after {_ATTEMPTS} conflicting updates")

    def release(self) -> None:
        """Give the lease up if this run holds it (it becomes free at once)."""
        for _ in range(_ATTEMPTS):
            lease = self._read()
            if lease is None or lease.spec.holder_identity != self.run_id:
                return
            lease.spec.holder_identity = None
            if self._write("replace", lease, None):
                return
        raise SafetyError(f"{self.where}: not released after {_ATTEMPTS} conflicting updates")

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
            spec.holder_identity, spec.renew_time = self.run_id, now
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


def _abort_drill(exc: SafetyError) -> None:
    interrupt_main_thread(DrillAborted(f"drill aborted: {exc}"))


class FleetLease:
    """Drill leases in several clusters: all acquired or none, renewed in the background, released on exit.

    More leases can be taken while it is entered (`hold`, or the guard from `guard`), as a drill reaches
    more clusters. When a lease is lost (another run holds it, or renewals failed until it expired),
    `on_lost` is called from the renewing thread; by default it raises DrillAborted in the main thread so
    faults are reverted. Enter it in the main thread.
    """

    def __init__(
        self,
        leases: Sequence[DrillLease] = (),
        *,
        renew_every_s: float | None = None,
        on_lost: Callable[[SafetyError], None] | None = None,
    ) -> None:
        self._initial = list(leases)
        self._held: list[DrillLease] = []
        self._renewed: dict[int, float] = {}  # id(lease) -> when it was last acquired or renewed
        self._every = renew_every_s
        self._on_lost = on_lost or _abort_drill
        self._stop = threading.Event()
        self._exits = ExitStack()

    def held(self) -> frozenset[str]:
        """The clusters whose lease this run holds."""
        return frozenset(lease.cluster for lease in self._held)

    def hold(self, lease: DrillLease) -> None:
        """Acquire one more lease (SafetyError when another run holds it); renewed and released with the
        rest."""
        lease.acquire()
        self._renewed[id(lease)] = time.monotonic()
        self._held.append(lease)

    def guard(self, lease_for: Callable[[str], DrillLease], then: Guard | None = None) -> Guard:
        """A FaultStack guard: `then` (the safety rules) first, then the lease of every target cluster not
        held yet, before the fault is in the ledger."""

        def guard(fault: Fault, faulted: frozenset[str]) -> None:
            if then is not None:
                then(fault, faulted)
            for cluster in fault.targets:
                if cluster not in self.held():
                    self.hold(lease_for(cluster))

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
        while self._held:
            self._held.pop().release()

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


def release_runs(holders: dict[str, set[str]], api_client_for: Callable[[str], ApiClient]) -> list[str]:
    """Release the lease of each cluster that one of its runs in `holders` (cluster -> run ids) still holds,
    as `fleetdrill recover` does for the runs whose faults it reverted; one line per cluster that failed."""
    problems = []
    for cluster, runs in sorted(holders.items()):
        for run_id in sorted(runs):
            try:
                DrillLease.for_client(cluster, api_client_for(cluster), run_id, 1).release()
            except Exception as exc:  # reported: the lease expires by itself
                problems.append(f"cluster {cluster}: drill lease of run {run_id} not released: {exc}")
    return problems
