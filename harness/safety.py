"""Safety rules for destructive drills: allowlist, prod guard, blast radius, dry-run plan, abort monitor.

The rules are pure functions of the fleet file; `Guard` applies them to each fault the FaultStack is about
to apply, knowing what is already faulted. The drill lease is in harness.lease.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from harness.config import Abort, Fleet
from harness.errors import FleetDrillError
from harness.faults.base import Fault, interrupt_main_thread, signals_as_interrupts
from harness.timeline import Timeline
from harness.units import format_duration


class SafetyError(FleetDrillError):
    """A safety rule refused (or stopped) a drill; the message names the rule and how to change it."""


class DrillAborted(SafetyError):
    """The drill was stopped on purpose (abort condition, lost lease); its faults are reverted."""


def check_allowed(fleet: Fleet, cluster: str, *, allow_prod: bool = False) -> None:
    """Refuse a destructive drill on `cluster` unless its context is allowlisted (and prod is allowed)."""
    found = fleet.cluster(cluster)
    context = fleet.context_for(found)
    where = f"cluster {found.name} (context {context})"
    if context not in fleet.safety.allowlist:
        raise SafetyError(
            f"refused: {where} is not in safety.allowlist of fleet {fleet.name}; "
            f"add {context!r} to safety.allowlist in the fleet file to allow destructive drills on it"
        )
    if found.environment == "prod" and not (allow_prod or fleet.safety.allow_prod):
        raise SafetyError(
            f"refused: {where} is a prod cluster; pass --allow-prod "
            "(or set safety.allow_prod: true in the fleet file) to drill it"
        )


def check_blast_radius(fleet: Fleet, faulted: Iterable[str]) -> None:
    """Refuse faulting the clusters `faulted` at once when that is more than the blast radius allows."""
    clusters = sorted(set(faulted))
    limits, total = fleet.safety.blast_radius, len(fleet.clusters)
    named = ", ".join(clusters)
    if limits.max_clusters is not None and len(clusters) > limits.max_clusters:
        raise SafetyError(
            f"refused: {named} faulted at once would be {len(clusters)} clusters, above "
            f"safety.blast_radius.max_clusters {limits.max_clusters}; fault fewer clusters or raise the limit"
        )
    if limits.max_percent is not None and len(clusters) * 100 > limits.max_percent * total:
        share = len(clusters) * 100 / total
        raise SafetyError(
            f"refused: {named} faulted at once would be {len(clusters)} of {total} clusters ({share:.0f}%), "
            f"above safety.blast_radius.max_percent {limits.max_percent}%; fault fewer clusters or raise it"
        )


@dataclass(frozen=True)
class Guard:
    """The FaultStack's guard for a fleet: every target allowed, the blast radius kept.

    `allow_prod` is the --allow-prod option; the fleet file's safety.allow_prod allows prod as well.
    """

    fleet: Fleet
    allow_prod: bool = False

    def __call__(self, fault: Fault, faulted: frozenset[str]) -> None:
        for cluster in fault.targets:
            self.check_cluster(cluster)
        check_blast_radius(self.fleet, faulted | set(fault.targets))

    def check_cluster(self, cluster: str) -> None:
        """The allowlist and the prod guard for `cluster`."""
        check_allowed(self.fleet, cluster, allow_prod=self.allow_prod)


@dataclass(frozen=True)
class Plan:
    """What a drill would do: its faults in order (a dry run's FaultStack.planned)."""

    faults: tuple[Fault, ...]

    def lines(self) -> list[str]:
        """One numbered line per fault, for the terminal."""
        return [f"{i}. {fault.describe()}" for i, fault in enumerate(self.faults, 1)] or ["(no faults)"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the drill record."""
        return {"faults": [fault.to_record() for fault in self.faults]}


Availability = Callable[[float], float | None]
"""Global availability (0..1) over the last `window_s` seconds, or None while there are no samples."""


@dataclass(frozen=True)
class Trip:
    """Why an abort condition stops the drill, and the figures that tripped it (for the timeline)."""

    reason: str
    detail: dict[str, Any]


class AbortCheck(Protocol):
    """One abort condition, checked again and again while the drill observes: a Trip when it holds."""

    def __call__(self) -> Trip | None: ...


@dataclass(frozen=True)
class AvailabilityBelow:
    """safety.abort.availability_below: global availability over the rule's `for` (or one check interval
    when that is 0) below the threshold; None (no samples yet) never trips."""

    rule: Abort
    availability: Availability
    interval_s: float

    def __call__(self) -> Trip | None:
        window, threshold = self.rule.for_ or self.interval_s, self.rule.availability_below
        assert threshold is not None
        value = self.availability(window)
        if value is None or value >= threshold:
            return None
        reason = (
            f"global availability {value:.2%} over the last {format_duration(window)} fell below "
            f"safety.abort.availability_below {threshold:.2%}"
        )
        return Trip(reason, {"availability": value, "threshold": threshold, "window_s": window})


class AbortMonitor:
    """Abort the drill when one of the fleet file's abort conditions holds (safety.abort: availability,
    PromQL conditions, firing alerts).

    While the `with` block runs, a thread runs every check every `interval_s`; a failing check always
    trips. On a trip, "drill.aborted" is recorded with the reason and DrillAborted is raised in the main
    thread, so fault stacks unwind and revert. Enter it in the main thread.
    """

    def __init__(self, checks: Sequence[AbortCheck], timeline: Timeline, *, interval_s: float = 1.0) -> None:
        self._checks, self._timeline = tuple(checks), timeline
        self._interval = interval_s
        self._stop = threading.Event()
        self._exits = ExitStack()
        self.reason: str | None = None

    def check(self) -> str | None:
        """Evaluate every condition once; on the first trip, record "drill.aborted" and return the reason."""
        for check in self._checks:
            try:
                trip = check()
            except Exception as exc:
                why = f"the abort check failed ({type(exc).__name__}: {exc}), so the drill stops to be safe"
                trip = Trip(why, {})
            if trip is not None:
                self.reason = trip.reason
                self._timeline.record("drill.aborted", detail={"reason": trip.reason, **trip.detail})
                return trip.reason
        return None

    def __enter__(self) -> AbortMonitor:
        self._exits.enter_context(signals_as_interrupts())
        thread = threading.Thread(target=self._watch, name="fleetdrill-abort-monitor", daemon=True)
        thread.start()
        self._exits.callback(thread.join)
        self._exits.callback(self._stop.set)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exits.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            reason = self.check()
            if reason is not None:
                interrupt_main_thread(DrillAborted(f"drill aborted: {reason}; its faults are reverted"))
                return
