"""harness.safety: allowlist, prod guard, blast radius, dry-run plan and abort monitor (the drill lease is in
test_lease)."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.config import Abort, App, Fleet
from harness.drill import Drill, DrillSettings
from harness.faults import FaultStack, KubeContext, Ledger
from harness.fleet import FleetAccess
from harness.safety import (
    AbortMonitor,
    AvailabilityBelow,
    DrillAborted,
    Guard,
    Plan,
    SafetyError,
    check_allowed,
    check_blast_radius,
)
from harness.timeline import Timeline
from tests.fakefaults import FileFault, wait_for


def make_fleet(**safety: Any) -> Fleet:
    clusters = [
        {"name": "east", "context": "ctx-east", "region": "r1", "environment": "dev"},
        {"name": "west", "region": "r2", "environment": "staging"},
        {"name": "prod-eu", "context": "ctx-prod", "region": "r3", "environment": "prod"},
        {"name": "lab", "context": "ctx-lab", "region": "r4"},
    ]
    safety = {"allowlist": ["ctx-east", "west", "ctx-prod"], **safety}
    return Fleet.model_validate({"name": "demo", "clusters": clusters, "safety": safety})


# --- allowlist and prod ---------------------------------------------------------------------------


def test_allowlisted_clusters_are_allowed() -> None:
    fleet = make_fleet()
    check_allowed(fleet, "east")
    check_allowed(fleet, "west")  # its context defaults to its name


def test_a_cluster_outside_the_allowlist_is_refused() -> None:
    with pytest.raises(SafetyError) as raised:
        check_allowed(make_fleet(), "lab", allow_prod=True)
    assert str(raised.value) == (
        "refused: cluster lab (context ctx-lab) is not in safety.allowlist of fleet demo; "
        "add 'ctx-lab' to safety.allowlist in the fleet file to allow destructive drills on it"
    )


def test_prod_needs_the_flag_or_the_fleet_setting() -> None:
    with pytest.raises(SafetyError) as raised:
        check_allowed(make_fleet(), "prod-eu")
    assert str(raised.value) == (
        "refused: cluster prod-eu (context ctx-prod) is a prod cluster; pass --allow-prod "
        "(or set safety.allow_prod: true in the fleet file) to drill it"
    )
    check_allowed(make_fleet(), "prod-eu", allow_prod=True)
    check_allowed(make_fleet(allow_prod=True), "prod-eu")


def test_an_unknown_cluster_is_a_config_error() -> None:
    with pytest.raises(Exception, match="expected a cluster name"):
        check_allowed(make_fleet(), "mars")


# --- blast radius ---------------------------------------------------------------------------------


def test_blast_radius_by_count() -> None:
    fleet = make_fleet(blast_radius={"max_clusters": 2})
    check_blast_radius(fleet, ["east", "west", "east"])
    with pytest.raises(SafetyError) as raised:
        check_blast_radius(fleet, ["west", "east", "lab"])
    assert str(raised.value) == (
        "refused: east, lab, west faulted at once would be 3 clusters, above "
        "safety.blast_radius.max_clusters 2; fault fewer clusters or raise the limit"
    )


def test_blast_radius_by_percent_of_the_fleet() -> None:
    fleet = make_fleet(blast_radius={"max_percent": 50})
    check_blast_radius(fleet, ["east", "west"])  # 2 of 4: exactly 50%
    with pytest.raises(SafetyError, match=r"would be 3 of 4 clusters \(75%\), above .*max_percent 50%"):
        check_blast_radius(fleet, ["east", "west", "lab"])
    check_blast_radius(make_fleet(), ["east", "west", "lab", "prod-eu"])  # no limits


def test_the_guard_checks_each_fault_against_what_is_in_force(tmp_path: Path) -> None:
    fleet = make_fleet(blast_radius={"max_clusters": 2})
    ledger = Ledger(tmp_path / "ledger.json")
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1", guard=Guard(fleet, allow_prod=True))
    with stack.applied(FileFault(str(tmp_path), targets=("east",))):
        with stack.applied(FileFault(str(tmp_path), targets=("west", "east"))):
            with pytest.raises(SafetyError, match=r"refused: east, prod-eu, west .* would be 3 clusters"):
                stack.push(FileFault(str(tmp_path), targets=("prod-eu",)))
            stack.push(FileFault(str(tmp_path), targets=("east",)))  # already faulted: no wider
            assert len(ledger.entries()) == 3
        with pytest.raises(SafetyError, match=r"not in safety\.allowlist"):
            stack.push(FileFault(str(tmp_path), targets=("lab",)))
    stack.undo_all()
    assert not (tmp_path / "prod-eu").exists() and not (tmp_path / "lab").exists()
    assert ledger.entries() == []
    prod = FileFault(str(tmp_path), targets=("prod-eu",))
    Guard(fleet, allow_prod=True)(prod, frozenset({"east"}))
    with pytest.raises(SafetyError, match="is a prod cluster"):
        Guard(fleet)(prod, frozenset())


def test_a_drill_that_injects_several_faults_is_refused_before_the_first(tmp_path: Path) -> None:
    fleet = make_fleet(blast_radius={"max_clusters": 2})
    ledger = Ledger(tmp_path / "ledger.json")
    east, west, prod = (FileFault(str(tmp_path), targets=(c,)) for c in ("east", "west", "prod-eu"))
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1", guard=Guard(fleet), rules=Guard(fleet))
    with pytest.raises(SafetyError, match=r"prod-eu .* is a prod cluster"):
        stack.check([east, prod])
    assert ledger.entries() == [] and not (tmp_path / "east").exists()
    stack.check([east, west])
    rules = Guard(fleet, allow_prod=True)
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1", guard=rules, rules=rules)
    stack.check([west, prod])
    with stack.applied(east):  # what is in force counts too
        with pytest.raises(SafetyError, match=r"east, prod-eu, west .* would be 3 clusters"):
            stack.check([west, prod])
        assert len(ledger.entries()) == 1
    FaultStack(KubeContext(), ledger, Timeline(), "run-1").check([prod])  # no rules: nothing to hold them to


def test_what_a_drill_does_that_is_no_fault_is_held_to_the_allowlist_and_allow_prod(tmp_path: Path) -> None:
    """The load a burst drill makes on a cluster: refused outside the allowlist, on prod unless allowed."""
    fleet, ledger = make_fleet(), Ledger(tmp_path / "ledger.json")
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1", rules=Guard(fleet))
    with pytest.raises(SafetyError, match=r"prod-eu .* is a prod cluster; pass --allow-prod"):
        stack.check_cluster("prod-eu")
    with pytest.raises(SafetyError, match=r"not in safety\.allowlist"):
        stack.check_cluster("lab")
    stack.check_cluster("east")
    FaultStack(KubeContext(), ledger, Timeline(), "run-1", rules=Guard(fleet, allow_prod=True)).check_cluster(
        "prod-eu"
    )
    assert ledger.entries() == []


# --- dry run ----------------------------------------------------------------------------------------


def test_a_dry_run_gives_the_plan_changes_nothing_and_is_still_guarded(tmp_path: Path) -> None:
    fleet = make_fleet(blast_radius={"max_clusters": 1})
    ledger = Ledger(tmp_path / "state" / "ledger.json")
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1", guard=Guard(fleet), dry_run=True)
    with (
        stack.applied(FileFault(str(tmp_path), targets=("east",))),
        pytest.raises(SafetyError, match="max_clusters 1"),
    ):
        stack.push(FileFault(str(tmp_path), targets=("west",)))
    with stack.applied(FileFault(str(tmp_path), targets=("west",))):
        pass
    plan = Plan(tuple(stack.planned))
    folder = repr(str(tmp_path))
    assert plan.lines() == [
        f"1. test-file on east (folder={folder})",
        f"2. test-file on west (folder={folder})",
    ]
    assert plan.to_dict() == {"faults": [f.to_record() for f in stack.planned]}
    assert Plan(()).lines() == ["(no faults)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- abort monitor ----------------------------------------------------------------------------------


def test_abort_check_trips_below_the_threshold_only() -> None:
    windows: list[float] = []
    values = iter([None, 0.95, 0.9, 0.899])
    timeline = Timeline()
    rule = Abort.model_validate({"availability_below": "90%", "for": "30s"})

    def availability(window_s: float) -> float | None:
        windows.append(window_s)
        return next(values)

    monitor = AbortMonitor([AvailabilityBelow(rule, availability, 1.0)], timeline)
    assert [monitor.check() for _ in range(3)] == [None, None, None]
    reason = monitor.check()
    assert reason == (
        "global availability 89.90% over the last 30s fell below safety.abort.availability_below 90.00%"
    )
    assert windows == [30.0] * 4 and monitor.reason == reason
    (aborted,) = timeline.events()
    assert aborted.name == "drill.aborted"
    assert aborted.detail == {"reason": reason, "availability": 0.899, "threshold": 0.9, "window_s": 30.0}


def test_a_failing_abort_check_aborts_and_for_0_uses_the_interval() -> None:
    windows: list[float] = []

    def broken(window_s: float) -> float:
        windows.append(window_s)
        raise ConnectionError("probe store gone")

    rule = Abort.model_validate({"availability_below": 0.5})
    monitor = AbortMonitor([AvailabilityBelow(rule, broken, 0.25)], Timeline(), interval_s=0.25)
    assert monitor.check() == (
        "the abort check failed (ConnectionError: probe store gone), so the drill stops to be safe"
    )
    assert windows == [0.25]


def test_the_abort_monitor_interrupts_the_drill_and_faults_are_reverted(tmp_path: Path) -> None:
    calls: list[float] = []
    timeline = Timeline()
    before = signal.getsignal(signal.SIGTERM)

    def availability(window_s: float) -> float:
        """Healthy until the fault is in place (the monitor starts before it: on a busy runner, checks
        may run while it is still being injected), then 20%."""
        calls.append(window_s)
        return 0.2 if any(e.name == "fault.injected" for e in timeline.events()) else 1.0

    rule = Abort.model_validate({"availability_below": 0.9, "for": "1m"})
    ledger = Ledger(tmp_path / "ledger.json")
    stack = FaultStack(KubeContext(), ledger, timeline, "run-1")
    with (
        pytest.raises(DrillAborted, match=r"^drill aborted: global availability 20\.00% over the last 1m"),
        stack,
        AbortMonitor([AvailabilityBelow(rule, availability, 0.02)], timeline, interval_s=0.02),
        stack.applied(FileFault(str(tmp_path), targets=("east",))),
    ):
        wait_for(lambda: False, 10, "the abort monitor to interrupt the drill")
    assert not (tmp_path / "east").exists() and ledger.entries() == []
    assert [e.name for e in timeline.events()] == [
        "fault.injecting",
        "fault.injected",
        "drill.aborted",
        "fault.reverted",
    ]
    assert calls and set(calls) == {60.0}
    assert sum(1 for e in timeline.events() if e.name == "drill.aborted") == 1, (
        "one trip, then no more checks"
    )
    assert signal.getsignal(signal.SIGTERM) == before


# --- the abort rule wired into a drill's observation ------------------------------------------------


class Flaky(BaseHTTPRequestHandler):
    """Answers 200 until the server's `failing` is set, then 503."""

    def _answer(self) -> None:
        self.send_response(503 if getattr(self.server, "failing", False) else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_a_drill_stops_and_reverts_when_availability_stays_below_the_abort_rule(
    flaky: ThreadingHTTPServer, tmp_path: Path
) -> None:
    port = flaky.server_address[1]
    app = {"name": "shop", "namespace": "shop", "workload": "deployment/shop"}
    app["global_endpoint"] = f"http://127.0.0.1:{port}/"
    fleet = make_fleet(abort={"availability_below": "90%", "for": "1s"}).model_copy(
        update={"apps": (App.model_validate(app),)}
    )
    ledger, timeline = Ledger(tmp_path / "ledger.json"), Timeline()
    stack = FaultStack(KubeContext(), ledger, timeline, "run-1", guard=Guard(fleet))
    drill = Drill("abort", fleet, FleetAccess(fleet), stack, timeline, DrillSettings(abort_check_s=0.1))
    with pytest.raises(DrillAborted) as aborted, stack, drill.observe(fleet.app("shop")) as observation:
        drill.inject(FileFault(str(tmp_path), targets=("east",)))
        wait_for(lambda: sum(s.ok for s in drill._live["shop"].samples("global")) >= 50, 20, "healthy probes")
        time.sleep(1.5)  # healthy for longer than the rule's window: the rule must not trip on it
        flipped = time.monotonic()
        flaky.failing = True  # type: ignore[attr-defined]
        wait_for(lambda: False, 20, "the abort rule to stop the drill")
    assert re.fullmatch(
        r"drill aborted: global availability \d+\.\d\d% over the last 1s fell below "
        r"safety\.abort\.availability_below 90\.00%; its faults are reverted",
        str(aborted.value),
    )
    (event,) = [e for e in timeline.events() if e.name == "drill.aborted"]
    assert event.t_mono > flipped and event.detail["availability"] < 0.9
    assert not (tmp_path / "east").exists() and ledger.entries() == [], "the fault was reverted"
    assert observation.end > 0 and "fault.reverted" in [e.name for e in timeline.events()]
