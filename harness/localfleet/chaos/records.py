"""The status Chaos Mesh writes, as pure functions: desired phase, records and their events, conditions.

A record is one injection target: `namespace/pod` (or `namespace/pod/container`) with phase "Injected"
or "Not Injected", counts of injections and recoveries, and events (Succeeded/Failed, Apply/Recover,
message, timestamp). Conditions follow from the records: Selected when there are records, AllInjected
when every one is injected, AllRecovered when none is, Paused from the pause annotation.
"""

import re
from datetime import UTC, datetime

INJECTED, NOT_INJECTED = "Injected", "Not Injected"
RUN, STOP = "Run", "Stop"
PAUSE_ANNOTATION = "experiment.chaos-mesh.org/pause"
GO_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_EVENTS = 10


def parse_duration(text: str) -> float:
    """Seconds from a Go duration ("30s", "1m30s", "500ms"); ValueError naming the text otherwise."""
    parts = GO_DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"duration {text!r} is not a Go duration such as 30s, 1m30s or 500ms")
    return sum(float(n) * UNITS[u] for n, u in parts)


def timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 in UTC with microseconds (metav1.Time readers accept the fraction)."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ends_at(obj: dict) -> datetime | None:
    """When the chaos's duration runs out (from its creationTimestamp, as Chaos Mesh counts); None
    without a duration."""
    duration = (obj.get("spec") or {}).get("duration")
    if not duration:
        return None
    start = parse_time(obj["metadata"]["creationTimestamp"]).timestamp()
    return datetime.fromtimestamp(start + parse_duration(duration), UTC)


def paused(obj: dict) -> bool:
    return (obj["metadata"].get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"


def desired_phase(obj: dict, now: datetime) -> str:
    """Stop when the object is being deleted, is paused, or its duration ran out; Run otherwise."""
    end = ends_at(obj)
    stopping = obj["metadata"].get("deletionTimestamp") or paused(obj) or (end is not None and now >= end)
    return STOP if stopping else RUN


def new_record(record_id: str, selector_key: str = ".") -> dict:
    return {
        "id": record_id,
        "selectorKey": selector_key,
        "phase": NOT_INJECTED,
        "injectedCount": 0,
        "recoveredCount": 0,
        "events": [],
    }


def note(record: dict, operation: str, ok: bool, message: str, now: datetime) -> None:
    """Add an event to a record, and on success move it to the operation's phase and count it."""
    event = {"type": "Succeeded" if ok else "Failed", "operation": operation, "timestamp": timestamp(now)}
    if message:
        event["message"] = message
    record["events"] = [*(record.get("events") or []), event][-MAX_EVENTS:]
    if ok and operation == "Apply":
        record["phase"], record["injectedCount"] = INJECTED, record["injectedCount"] + 1
    elif ok:
        record["phase"], record["recoveredCount"] = NOT_INJECTED, record["recoveredCount"] + 1


def conditions(records: list[dict] | None, is_paused: bool, reason: str = "") -> list[dict]:
    """Selected, AllInjected, AllRecovered and Paused, from the records (Chaos Mesh's rules)."""
    phases = [r["phase"] for r in records or []]

    def condition(kind: str, holds: bool, why: str = "") -> dict:
        return {"type": kind, "status": "True" if holds else "False", **({"reason": why} if why else {})}

    return [
        condition("Selected", records is not None, "" if records is not None else reason),
        condition("AllInjected", all(p == INJECTED for p in phases)),
        condition("AllRecovered", all(p == NOT_INJECTED for p in phases)),
        condition("Paused", is_paused),
    ]


def status(records: list[dict] | None, desired: str, is_paused: bool, reason: str = "") -> dict:
    """The whole status subresource of a chaos object."""
    experiment: dict = {"desiredPhase": desired}
    if records is not None:
        experiment["containerRecords"] = records
    return {"conditions": conditions(records, is_paused, reason), "experiment": experiment}
