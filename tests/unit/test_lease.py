"""harness.lease: one copy of a drill lease against a fake CoordinationV1Api (conflicts, expiry, MicroTime),
the FleetLease that renews them, and where a faulted cluster's lease is held (LeasePlaces, ClusterLease):
outside the faulted clusters, or in safety.lease_cluster. The lease still needs an integration test."""

from __future__ import annotations

import copy
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes.client import V1Lease
from kubernetes.client.exceptions import ApiException

from harness.config import Fleet, load_fleet
from harness.errors import ConfigError
from harness.faults import FaultStack, KubeContext, Ledger, new_run_id
from harness.faults.ledger import holder_identity
from harness.fleet import FleetAccess
from harness.lease import (
    ClusterLease,
    DrillLease,
    FleetLease,
    LeaseLost,
    LeasePlaces,
    release_runs,
)
from harness.run import DrillRun, RunSettings
from harness.safety import DrillAborted, Guard, SafetyError
from harness.timeline import Timeline
from tests.fakefaults import FileFault, wait_for

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
CLUSTERS = ("east", "west", "south")


class FakeLeaseApi:
    """CoordinationV1Api's lease calls over a dict, with the API server's conflict and MicroTime rules."""

    def __init__(self, namespace_exists: bool = True) -> None:
        self.leases: dict[tuple[str, str], V1Lease] = {}
        self.namespace_exists = namespace_exists
        self.before_write: Callable[[], None] | None = None
        self.unreachable = False
        self.refused = 0
        self.timeouts: set[object] = set()
        self._version = 0
        self._lock = threading.RLock()

    def read_namespaced_lease(self, name: str, namespace: str, **kwargs: object) -> V1Lease:
        self._request(kwargs)
        with self._lock:
            if (namespace, name) not in self.leases:
                raise ApiException(404, "Not Found")
            return copy.deepcopy(self.leases[namespace, name])

    def create_namespaced_lease(self, namespace: str, body: V1Lease, **kwargs: object) -> V1Lease:
        self._request(kwargs)
        with self._lock:
            self._run_hook()
            if not self.namespace_exists:
                raise ApiException(404, "Not Found")
            if (namespace, body.metadata.name) in self.leases:
                raise ApiException(409, "Conflict")
            return self._store(namespace, body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: V1Lease, **kwargs: object) -> V1Lease:
        self._request(kwargs)
        with self._lock:
            self._run_hook()
            current = self.leases.get((namespace, name))
            if current is None:
                raise ApiException(404, "Not Found")
            if body.metadata.resource_version != current.metadata.resource_version:
                raise ApiException(409, "Conflict")
            return self._store(namespace, body)

    def holder(self, of: str = "east") -> str | None:
        """Who holds this cluster's copy of the lease of `of`; KeyError when it has none."""
        return self.spec(of).holder_identity

    def spec(self, of: str = "east") -> Any:
        with self._lock:
            return copy.deepcopy(self.leases["fleetdrill", f"fleetdrill-drill-{of}"].spec)

    def steal(self, of: str, holder: str | None) -> None:
        with self._lock:
            self.leases["fleetdrill", f"fleetdrill-drill-{of}"].spec.holder_identity = holder

    def names(self) -> set[str]:
        with self._lock:
            return {name for _, name in self.leases}

    def _request(self, kwargs: dict[str, object]) -> None:
        self.timeouts.add(kwargs.pop("_request_timeout"))
        assert not kwargs
        if self.unreachable:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connection refused")

    def _run_hook(self) -> None:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()

    def _store(self, namespace: str, body: V1Lease) -> V1Lease:
        stored = copy.deepcopy(body)
        for field in ("acquire_time", "renew_time"):
            value = getattr(stored.spec, field)
            if value is not None:
                if not isinstance(value, str) or not MICRO_TIME.match(value):
                    raise ApiException(400, f"Bad Request: {field} {value!r} is not a MicroTime")
                setattr(stored.spec, field, datetime.fromisoformat(value))
        self._version += 1
        stored.metadata.resource_version = str(self._version)
        self.leases[namespace, stored.metadata.name] = stored
        return copy.deepcopy(stored)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)  # microsecond 0: isoformat() would drop it

    def __call__(self) -> datetime:
        return self.now


def make_fleet(clusters: tuple[str, ...] = CLUSTERS, **safety: Any) -> Fleet:
    found = [{"name": name, "region": f"r{i}"} for i, name in enumerate(clusters)]
    safety = {"allowlist": list(clusters), **safety}
    return Fleet.model_validate({"name": "demo", "clusters": found, "safety": safety})


@pytest.fixture
def api() -> FakeLeaseApi:
    return FakeLeaseApi()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def apis() -> dict[str, FakeLeaseApi]:
    """One fake API server per cluster of the fleet."""
    return {name: FakeLeaseApi() for name in CLUSTERS}


def lease(api: FakeLeaseApi, clock: Clock, holder: str, cluster: str = "east") -> DrillLease:
    return DrillLease(cluster, api, holder, 59.5, now=clock)


def copies(apis: dict[str, FakeLeaseApi], holder: str, duration_s: float = 60) -> Callable[[str, str], Any]:
    """copy_for(cluster, held_in) over the fake API servers."""
    return lambda cluster, held_in: DrillLease(cluster, apis[held_in], holder, duration_s, held_in=held_in)


class Run:
    """A run's fault stack guarded by its leases over the fake API servers (what DrillRun wires)."""

    def __init__(self, apis: dict[str, FakeLeaseApi], holder: str, tmp_path: Path, **places: Any) -> None:
        self.held: list[ClusterLease] = []
        self.lost: list[Exception] = []
        self.leases = FleetLease(renew_every_s=0.02, on_lost=self.lost.append)
        rules, where = Guard(make_fleet()), LeasePlaces(CLUSTERS, **places)
        guard = self.leases.guard(where, copies(apis, holder), rules, self.held.append)
        self.ledger = Ledger(tmp_path / f"{holder}.json")
        self.stack = FaultStack(KubeContext(), self.ledger, Timeline(), holder, guard=guard)
        self.folder = str(tmp_path)

    def fault(self, *targets: str) -> None:
        self.stack.push(FileFault(self.folder, targets=targets))

    def soft_fault(self, *targets: str) -> None:
        """A fault that leaves the targets' API servers up (a scratch namespace, a pod kill)."""
        self.stack.push(SoftFault(self.folder, targets=targets))


@dataclass(frozen=True)
class SoftFault(FileFault, kind="test-lease-soft"):
    cuts_api: ClassVar[bool] = False


@pytest.fixture
def running(apis: dict[str, FakeLeaseApi], tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """running(holder, **places): a Run entered (leases renewed, faults reverted, leases freed on exit)."""
    runs: list[Run] = []

    def start(holder: str, **places: Any) -> Run:
        run = Run(apis, holder, tmp_path, **places)
        run.leases.__enter__()
        runs.append(run)
        return run

    yield start
    for run in reversed(runs):
        run.stack.undo_all()
        run.leases.__exit__(None, None, None)


# --- one copy of a lease ----------------------------------------------------------------------------


def test_acquire_creates_the_lease(api: FakeLeaseApi, clock: Clock) -> None:
    lease(api, clock, "run-1").acquire()
    spec = api.spec()
    assert (spec.holder_identity, spec.lease_duration_seconds, spec.lease_transitions) == ("run-1", 60, 0)
    assert spec.acquire_time == spec.renew_time == clock.now
    assert api.names() == {"fleetdrill-drill-east"}, "named after the cluster it guards"
    lease(api, clock, "run-1").acquire()  # holding it already: fine
    assert api.spec().lease_transitions == 0


def test_a_lease_held_by_another_live_run_refuses(api: FakeLeaseApi, clock: Clock) -> None:
    DrillLease("east", api, "run-other", 60, held_in="west", now=clock).acquire()
    clock.now += timedelta(seconds=20)
    with pytest.raises(SafetyError) as raised:
        DrillLease("east", api, "run-1", 60, held_in="west", now=clock).acquire()
    assert str(raised.value) == (
        "refused: the drill lease of east (fleetdrill/fleetdrill-drill-east in cluster west) is held by run "
        "'run-other' until 2030-01-02 03:05:05 UTC (40 s from now): another drill is faulting east; wait for "
        "it to end (if it died, the lease expires by itself, or delete it in cluster west: kubectl -n "
        "fleetdrill delete lease fleetdrill-drill-east)"
    )
    with pytest.raises(SafetyError, match="held by run 'run-other'"):
        DrillLease("east", api, "run-1", 60, held_in="west", now=clock).check()
    assert api.holder() == "run-other"


def test_an_expired_lease_is_taken_over(api: FakeLeaseApi, clock: Clock) -> None:
    lease(api, clock, "run-dead").acquire()
    clock.now += timedelta(seconds=60, microseconds=1)
    lease(api, clock, "run-1").check()
    lease(api, clock, "run-1").acquire()
    spec = api.spec()
    assert (spec.holder_identity, spec.lease_transitions) == ("run-1", 1)
    assert spec.acquire_time == spec.renew_time == clock.now
    with pytest.raises(LeaseLost, match="lost, held by run 'run-1' now") as lost:
        lease(api, clock, "run-dead").renew()
    assert lost.value.holder == "run-1"


def test_renew_and_release(api: FakeLeaseApi, clock: Clock) -> None:
    mine = lease(api, clock, "run-1")
    mine.acquire()
    clock.now += timedelta(seconds=50)
    mine.renew()
    assert api.spec().renew_time == clock.now
    clock.now += timedelta(seconds=50)  # 100 s after acquiring, 50 after renewing: still held
    with pytest.raises(SafetyError, match="held by run 'run-1'"):
        lease(api, clock, "run-2").acquire()
    lease(api, clock, "run-2").release()  # not its lease: nothing happens
    mine.release()
    assert api.holder() is None
    with pytest.raises(LeaseLost, match="lost, free or deleted now") as lost:
        mine.renew()
    assert lost.value.holder is None
    lease(api, clock, "run-2").acquire()
    assert api.holder() == "run-2"


def test_a_racing_writer_wins_by_resource_version(api: FakeLeaseApi, clock: Clock) -> None:
    lease(api, clock, "run-dead").acquire()
    clock.now += timedelta(minutes=5)
    api.before_write = lease(api, clock, "run-fast").acquire  # writes between our read and our write
    with pytest.raises(SafetyError, match="held by run 'run-fast'"):
        lease(api, clock, "run-1").acquire()
    assert api.holder() == "run-fast"


def test_a_missing_namespace_says_how_to_create_it(clock: Clock) -> None:
    with pytest.raises(SafetyError, match=r"cannot create it: 404 Not Found \(create the namespace: kubectl"):
        lease(FakeLeaseApi(namespace_exists=False), clock, "run-1").acquire()


def test_an_unreachable_api_server_is_one_line(api: FakeLeaseApi, clock: Clock) -> None:
    api.unreachable = True
    with pytest.raises(SafetyError) as raised:
        DrillLease("east", api, "run-1", 60, held_in="west", now=clock, request_timeout_s=2.5).acquire()
    assert str(raised.value) == (
        "drill lease of east (fleetdrill/fleetdrill-drill-east in cluster west): cannot read it: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert api.timeouts == {2.5}


# --- FleetLease: all or nothing, renewed in the background ------------------------------------------


def test_fleet_lease_is_all_or_nothing(api: FakeLeaseApi, clock: Clock) -> None:
    other = FakeLeaseApi()
    lease(other, clock, "run-other", "west").acquire()
    mine = [lease(api, clock, "run-1"), lease(other, clock, "run-1", "west")]
    with pytest.raises(SafetyError, match=r"lease of west .* held by run 'run-other'"), FleetLease(mine):
        pytest.fail("the block ran")
    assert api.holder() is None


def test_fleet_lease_renews_in_the_background_and_releases(api: FakeLeaseApi) -> None:
    other = FakeLeaseApi()
    leases = [DrillLease("east", api, "run-1", 60), DrillLease("west", other, "run-1", 60)]
    with FleetLease(leases, renew_every_s=0.02):
        first = api.spec().renew_time

        def renewed() -> bool:
            renew_time = other.spec("west").renew_time
            return api.spec().renew_time > first < renew_time

        wait_for(renewed, 10, "both leases to be renewed")
        assert api.holder() == other.holder("west") == "run-1"
    assert api.holder() is None and other.holder("west") is None


def test_a_lost_fleet_lease_is_reported(api: FakeLeaseApi) -> None:
    lost: list[Exception] = []
    with FleetLease([DrillLease("east", api, "run-1", 60)], renew_every_s=0.02, on_lost=lost.append):
        api.steal("east", "run-thief")
        wait_for(lambda: lost, 10, "the lost lease to be reported")
    assert [type(e) for e in lost] == [LeaseLost]
    where = "drill lease of east (fleetdrill/fleetdrill-drill-east in cluster east)"
    assert str(lost[0]).startswith(f"{where}: lost, held by run 'run-thief' now")
    assert api.holder() == "run-thief"


def test_a_lost_fleet_lease_aborts_the_drill_by_default(api: FakeLeaseApi, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1")
    with (
        pytest.raises(DrillAborted, match=r"^drill aborted: .* lost, held by run 'run-thief'"),
        FleetLease([DrillLease("east", api, "run-1", 60)], renew_every_s=0.02),
        stack.applied(FileFault(str(tmp_path), targets=("east",))),
    ):
        api.steal("east", "run-thief")
        wait_for(lambda: False, 10, "the lost lease to abort the drill")
    assert not (tmp_path / "east").exists() and ledger.entries() == []


def test_renewals_ride_out_an_outage_but_not_past_the_expiry(api: FakeLeaseApi) -> None:
    lost: list[Exception] = []
    with FleetLease([DrillLease("east", api, "run-1", 60)], renew_every_s=0.02, on_lost=lost.append):
        api.unreachable = True
        wait_for(lambda: api.refused >= 3, 10, "renewals to fail")
        api.unreachable = False
        before = api.spec().renew_time
        wait_for(lambda: api.spec().renew_time > before, 10, "a renewal after the outage")
    assert lost == []

    started = time.monotonic()
    with FleetLease([DrillLease("east", api, "run-2", 1)], renew_every_s=0.02, on_lost=lost.append):
        api.unreachable = True
        wait_for(lambda: lost, 10, "the expiring lease to be reported")
        api.unreachable = False  # to release it
    assert 0.9 < time.monotonic() - started < 5
    assert str(lost[0]).startswith(
        "drill lease of east (fleetdrill/fleetdrill-drill-east in cluster east): renewals failed until it "
        "expires: "
    )


# --- where a faulted cluster's lease is held ---------------------------------------------------------


def test_the_lease_of_a_faulted_cluster_is_held_in_every_cluster_the_drill_does_not_fault(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    run = running("run-1")
    run.fault("east")
    assert apis["west"].holder("east") == apis["south"].holder("east") == "run-1"
    assert apis["east"].names() == set(), "nothing in the cluster the fault can take away"
    run.fault("west")  # east is faulted already: the lease of west goes to south only
    assert apis["south"].holder("west") == "run-1" and apis["east"].names() == set()
    assert "fleetdrill-drill-west" not in apis["west"].names()
    assert [lease.describe() for lease in run.held] == [
        "lease of east held in west, south",
        "lease of west held in south",
    ]
    run.stack.undo_all()
    run.leases.__exit__(None, None, None)
    assert apis["west"].holder("east") is apis["south"].holder("east") is apis["south"].holder("west") is None


def test_a_second_run_is_refused_naming_the_holder(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    first, second = running("run-1 on host-a pid 7"), running("run-2 on host-a pid 8")
    first.fault("east")
    apis["west"].unreachable = True  # one copy is enough to refuse
    with pytest.raises(SafetyError) as refused:
        second.fault("east")
    assert str(refused.value).startswith(
        "refused: the drill lease of east (fleetdrill/fleetdrill-drill-east in cluster south) is held by run "
        "'run-1 on host-a pid 7' until "
    )
    assert second.ledger.entries() == [], "refused before the ledger"
    assert apis["south"].holder("east") == "run-1 on host-a pid 7"
    second.fault("south")  # another cluster: fine, its lease is held where neither faults
    assert apis["east"].holder("south") == "run-2 on host-a pid 8"
    apis["west"].unreachable = False  # to release


def test_copies_in_the_clusters_a_drill_faults_are_read_too(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    """Another run's copy may sit in a cluster this run faults (softly: its API answers): still refused,
    and the copies this run had taken are given back."""
    DrillLease("east", apis["west"], "run-other", 60, held_in="west").acquire()
    run = running("run-1")
    run.soft_fault("west")
    with pytest.raises(SafetyError, match=r"in cluster west\) is held by run 'run-other'"):
        run.fault("east")
    kept = "fleetdrill-drill-east" in apis["south"].names() and apis["south"].holder("east") is not None
    assert not kept, "no copy of east's lease is kept in south (never taken, or given back)"
    assert run.leases.held() == {"west"}


def test_a_drill_that_faults_every_cluster_is_refused_naming_lease_cluster(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    run = running("run-1")
    with pytest.raises(SafetyError) as refused:
        run.fault(*CLUSTERS)
    assert str(refused.value) == (
        "refused: the drill would fault every cluster of the fleet (east, west, south), leaving none to hold "
        "the drill lease of east; name the cluster that holds drill leases in safety.lease_cluster of the "
        "fleet file (one whose API server the drill leaves up)"
    )
    run.fault("east", "west")
    with pytest.raises(SafetyError, match=r"every cluster .* safety\.lease_cluster"):
        run.fault("south")
    assert [entry.fault["targets"] for entry in run.ledger.entries()] == [["east", "west"]]


def test_a_fault_that_leaves_the_api_up_may_hold_its_own_lease(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    """A cluster loss of east and west, and a scratch namespace in south: south's API stays, so its lease
    is held there; the leases of east and west too (no refusal for faulting every cluster)."""
    run = running("run-1")
    run.fault("east", "west")
    run.soft_fault("south")
    assert apis["south"].holder("south") == apis["south"].holder("east") == "run-1"
    assert run.leases.held() == set(CLUSTERS)


def test_lease_cluster_holds_every_lease(apis: dict[str, FakeLeaseApi], running: Callable[..., Run]) -> None:
    run = running("run-1", lease_cluster="south")
    run.fault(*CLUSTERS)
    assert {apis["south"].holder(c) for c in CLUSTERS} == {"run-1"}
    assert apis["east"].names() == apis["west"].names() == set()
    assert [lease.describe() for lease in run.held] == [f"lease of {c} held in south" for c in CLUSTERS]
    with pytest.raises(SafetyError, match=r"in cluster south\) is held by run 'run-1'"):
        running("run-2", lease_cluster="south").fault("east")


def test_lease_cluster_in_the_fleet_file(tmp_path: Path) -> None:
    assert LeasePlaces.of(make_fleet(lease_cluster="west")) == LeasePlaces(CLUSTERS, "west")
    assert LeasePlaces.of(make_fleet()) == LeasePlaces(CLUSTERS, None)
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: demo\nclusters:\n  - {name: east, region: r1}\n  - {name: west, region: r2}\n"
        "safety: {lease_cluster: mars}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_fleet(path)
    assert (
        str(raised.value) == f"{path}: safety.lease_cluster: expected a cluster name (east, west), got 'mars'"
    )


def test_a_holder_that_does_not_answer_is_skipped_but_one_must_hold_it(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    apis["west"].unreachable = True
    run = running("run-1")
    run.fault("east")
    assert apis["south"].holder("east") == "run-1"
    assert run.held[0].describe() == (
        "lease of east held in south; not in west (drill lease of east (fleetdrill/fleetdrill-drill-east in "
        "cluster west): cannot read it: ConnectionRefusedError: [Errno 111] Connection refused)"
    )
    apis["south"].unreachable = True
    with pytest.raises(
        SafetyError, match=r"^refused: no cluster left to hold the drill lease of west: .*south"
    ):
        run.fault("west")  # east is faulted, south does not answer
    assert [entry.fault["targets"] for entry in run.ledger.entries()] == [["east"]]
    apis["south"].unreachable = False


# --- renewals with copies in faulted clusters --------------------------------------------------------


def test_renewals_tolerate_the_clusters_the_drill_itself_faults(
    apis: dict[str, FakeLeaseApi], tmp_path: Path
) -> None:
    lost: list[Exception] = []
    with FleetLease(renew_every_s=0.02, on_lost=lost.append) as leases:
        guard = leases.guard(LeasePlaces(CLUSTERS), copies(apis, "run-1", duration_s=1))
        stack = FaultStack(KubeContext(), Ledger(tmp_path / "ledger.json"), Timeline(), "run-1", guard=guard)
        with stack:
            stack.push(FileFault(str(tmp_path), targets=("east",)))  # lease of east in west and south
            stack.push(FileFault(str(tmp_path), targets=("west",)))  # now the drill faults west too
            apis["west"].unreachable = True  # ... and takes its API server away
            stale = apis["west"].spec("east").renew_time
            past_expiry = stale + timedelta(seconds=1.5)
            wait_for(lambda: apis["south"].spec("east").renew_time > past_expiry, 10, "renewals past expiry")
            assert lost == [], "the copy in south still holds the lease of east"
            apis["west"].unreachable = False
            apis["west"].steal("east", None)  # the faulted cluster came back without it: still tolerated
            renewed = apis["south"].spec("east").renew_time
            wait_for(lambda: apis["south"].spec("east").renew_time > renewed, 10, "a renewal after that")
            assert lost == []
            apis["south"].unreachable = True  # now no copy of the lease of east is renewed
            wait_for(lambda: lost, 10, "the lease of east to be reported lost")
            apis["south"].unreachable = False
    assert str(lost[0]).startswith(
        "drill lease of east: renewals failed until it expires: no copy renewed: drill lease of east "
    )


def test_a_copy_another_run_took_is_lost_even_in_a_faulted_cluster(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    run = running("run-1")
    run.fault("east")
    run.fault("west")
    apis["west"].steal("east", "run-thief")
    wait_for(lambda: run.lost, 10, "the lost lease to be reported")
    assert isinstance(run.lost[0], LeaseLost) and "held by run 'run-thief'" in str(run.lost[0])


def test_a_copy_deleted_outside_the_faulted_clusters_is_lost(
    apis: dict[str, FakeLeaseApi], running: Callable[..., Run]
) -> None:
    run = running("run-1")
    run.fault("east")
    apis["west"].steal("east", None)
    wait_for(lambda: run.lost, 10, "the lost lease to be reported")
    assert "in cluster west): lost, free or deleted now" in str(run.lost[0])


# --- one run id maker; the holder of a run's leases --------------------------------------------------


def test_run_ids_and_lease_holders_are_unique_per_run(
    apis: dict[str, FakeLeaseApi], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two runs in one process (same host, same pid, same second) never share a lease holder."""
    fleet = make_fleet()

    def lease_for(run: DrillRun, cluster: str, held_in: str) -> DrillLease:
        return DrillLease(cluster, apis[held_in], run.holder, 60, held_in=held_in)

    monkeypatch.setattr(DrillRun, "_lease_for", lease_for)
    made = [new_run_id(), new_run_id()]
    assert made[0] != made[1] and all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", r) for r in made)
    runs = [
        DrillRun(
            "drill",
            fleet,
            FleetAccess(fleet),
            RunSettings(r, tmp_path / f"{r}.json", tmp_path, destructive=False),
        )
        for r in made
    ]
    assert [run.holder for run in runs] == [f"{r} on {socket.gethostname()} pid {os.getpid()}" for r in made]
    with runs[0].running() as drill, runs[1].running() as other:
        drill.stack.push(FileFault(str(tmp_path), targets=("east",)))
        with pytest.raises(SafetyError, match=f"held by run '{made[0]} on "):
            other.stack.push(FileFault(str(tmp_path), targets=("east",)))
        (held,) = drill.timeline.events("lease.held")
        assert (held.cluster, held.detail["where"]) == ("east", "lease of east held in west, south")
        assert held.detail["holder"] == runs[0].holder
    assert apis["west"].holder("east") is None, "released when the run ended"


# --- fleetdrill recover ---------------------------------------------------------------------------


def test_recover_frees_a_runs_leases_wherever_they_are_held(
    apis: dict[str, FakeLeaseApi], tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    entry = ledger.add(FileFault(str(tmp_path), targets=("east",)), "run-1")
    assert entry.holder == holder_identity("run-1") == f"run-1 on {socket.gethostname()} pid {os.getpid()}"
    for place in ("west", "south"):
        DrillLease("east", apis[place], entry.holder, 60, held_in=place).acquire()
    DrillLease("west", apis["east"], "run-other", 60, held_in="east").acquire()
    apis["south"].unreachable = True
    problems = release_runs(
        {"east": {entry.holder}}, LeasePlaces(CLUSTERS), lambda place: place, lease_api=apis.__getitem__
    )
    assert apis["west"].holder("east") is None and apis["east"].holder("west") == "run-other"
    assert problems == [
        f"run {entry.holder!r}: drill lease of east (fleetdrill/fleetdrill-drill-east in cluster south): "
        "cannot read it: ConnectionRefusedError: [Errno 111] Connection refused (it expires by itself)"
    ]
    apis["south"].unreachable = False
    assert (
        release_runs({"east": {entry.holder}}, LeasePlaces(CLUSTERS, "south"), str, lease_api=apis.get) == []
    )
    assert apis["south"].holder("east") is None
