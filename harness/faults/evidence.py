"""Evidence that a fault took effect, observed from outside the faulted part: what fault kinds share.

A fault's `effect` says what shows it; these helpers read the drill's probes of a cluster's endpoints and
the cluster's API server. Nothing here injects or reverts anything.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubernetes.client import VersionApi

from harness.errors import FleetDrillError
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.fleet import MID_DRILL_TIMEOUT
from harness.timeline import Event, Timeline

if TYPE_CHECKING:
    from harness.samples import ProbeSample

DOWN_PROBES = 5
"""Consecutive failed probes of a cluster's endpoints, all sent after injection began, that show it down."""
API_TIMEOUT_S = 2.0
API_TIMEOUT = (MID_DRILL_TIMEOUT[0], API_TIMEOUT_S)
"""(connect, read) seconds of the question whether an API server answers: a lost one drops the connection's
first packet, so each of the client's attempts costs the connect timeout (see harness.fleet)."""
POLL_S = 0.2


class FaultNotEffective(FleetDrillError):
    """A fault whose effect was not seen in time: the drill is an error, and no recovery figure is judged."""


@dataclass(frozen=True)
class Injection:
    """One fault in force: when injection began (t0) and returned, and when and how its effect showed."""

    fault: Fault
    started: float
    completed: float
    effective: float
    evidence: str


def await_effect(
    fault: Fault, ctx: FaultContext, observed: Observed, started: Event, completed: Event, timeline: Timeline
) -> Injection:
    """Poll the fault's evidence until it shows (recorded as "fault.effective") or its effect deadline after
    injection began passes (recorded as "fault.not_effective"; FaultNotEffective)."""
    allowed = fault.effect_deadline(ctx)
    deadline = started.t_mono + allowed
    cluster = fault.targets[0] if len(fault.targets) == 1 else None
    while True:
        try:
            evidence = fault.effect(ctx, observed, started)
        except Exception as exc:  # an API that does not answer while the fault holds is no evidence
            evidence = Evidence(False, f"evidence not readable: {type(exc).__name__}: {exc}")
        if evidence.effective:
            event = timeline.record(
                "fault.effective", cluster, {"kind": fault.kind, "evidence": evidence.detail}
            )
            return Injection(fault, started.t_mono, completed.t_mono, event.t_mono, evidence.detail)
        if time.monotonic() > deadline:
            timeline.record("fault.not_effective", cluster, {"kind": fault.kind, "evidence": evidence.detail})
            raise FaultNotEffective(
                f"{fault.describe()} did not take effect within {allowed:g} s: {evidence.detail}"
            )
        time.sleep(POLL_S)


def endpoint_down(observed: Observed, cluster: str, since: float) -> Evidence | None:
    """The cluster's app endpoints failed their last DOWN_PROBES probes since `since`; None when none of
    its endpoints is probed."""
    probes = observed.endpoint_probes(cluster, since)
    if probes is None:
        return None
    failed = trailing_failures(probes)
    answered = sum(1 for probe in probes if probe.ok)
    if failed >= DOWN_PROBES:
        return Evidence(True, f"{cluster}'s endpoint failed its last {failed} probes ({_last_error(probes)})")
    return Evidence(False, f"{cluster}'s endpoint answered {answered:,} of {len(probes):,} probes")


def endpoint_answers(observed: Observed, cluster: str, since: float) -> Evidence | None:
    """The cluster's app endpoints answered their last DOWN_PROBES probes since `since` (it still serves
    locally); None when none of its endpoints is probed."""
    probes = observed.endpoint_probes(cluster, since)
    if probes is None:
        return None
    recent = probes[-DOWN_PROBES:]
    if len(recent) == DOWN_PROBES and all(probe.ok for probe in recent):
        return Evidence(True, f"{cluster}'s endpoint still answers")
    return Evidence(False, f"{cluster}'s endpoint does not answer ({_last_error(probes)})")


def all_of(evidence: list[Evidence]) -> Evidence:
    """Effective when every part is."""
    return Evidence(all(e.effective for e in evidence), "; ".join(e.detail for e in evidence))


def trailing_failures(probes: Iterable[ProbeSample]) -> int:
    """How many probes at the end of the series failed, in a row."""
    count = 0
    for probe in reversed(list(probes)):
        if probe.ok:
            break
        count += 1
    return count


def _last_error(probes: list[ProbeSample]) -> str:
    failed = [probe for probe in probes if not probe.ok]
    if not failed:
        return "no failed probe"
    last = failed[-1]
    return last.error or (f"HTTP {last.status}" if last.status is not None else "no answer")


def api_unreachable(ctx: FaultContext, cluster: str) -> str | None:
    """Why the cluster's API server did not answer GET /version, or None when it answered."""
    try:
        VersionApi(ctx.api_client(cluster)).get_code(_request_timeout=API_TIMEOUT)
    except Exception as exc:  # any failure to answer is the evidence: connection, timeout, TLS, HTTP
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}".rstrip(": ")
    return None


def after(moment: dt.datetime | None, started_wall: float) -> bool:
    """An API timestamp (second precision) at or after the wall-clock moment injection began."""
    return moment is not None and moment.timestamp() >= int(started_wall)
