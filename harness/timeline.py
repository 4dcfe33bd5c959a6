"""The drill's event log: what happened (fault injected, failover triggered, restored, ...), when and where.

Each event carries a monotonic time (to measure with, comparable to probe samples) and the wall-clock time
read at the same moment (to show and to line up with other logs). Phases are pairs of events
`<name>.start` / `<name>.end`, written by `Timeline.phase`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], tuple[float, float]]
"""Returns (monotonic seconds, wall-clock seconds since the epoch) for one moment."""


def system_clock() -> tuple[float, float]:
    """time.monotonic() and time.time(), read back to back."""
    return time.monotonic(), time.time()


@dataclass(frozen=True)
class Event:
    """One thing that happened; detail holds JSON-able values only."""

    name: str
    t_mono: float
    t_wall: float
    cluster: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "t_mono": self.t_mono,
            "t_wall": self.t_wall,
            "cluster": self.cluster,
            "detail": dict(self.detail),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            data["name"], data["t_mono"], data["t_wall"], data.get("cluster"), dict(data.get("detail", {}))
        )


@dataclass(frozen=True)
class PhaseSpan:
    """A phase read back from events: end is None while (or because) its `.end` event is missing."""

    name: str
    cluster: str | None
    start: float
    end: float | None

    @property
    def key(self) -> str:
        """`name`, or `name@cluster` for a phase in one cluster."""
        return self.name if self.cluster is None else f"{self.name}@{self.cluster}"


class Timeline:
    """A thread-safe, append-only event log; events stay in the order they were recorded."""

    def __init__(self, clock: Clock = system_clock, events: Iterable[Event] = ()) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._events = list(events)
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call listener(event) after each event is recorded (from the recording thread)."""
        self._listeners.append(listener)

    def record(self, name: str, cluster: str | None = None, detail: Mapping[str, Any] | None = None) -> Event:
        """Append an event stamped now; the clock is read under the lock so times never go backwards."""
        with self._lock:
            t_mono, t_wall = self._clock()
            event = Event(name, t_mono, t_wall, cluster, dict(detail or {}))
            self._events.append(event)
        for listener in self._listeners:
            listener(event)
        return event

    def events(self, name: str | None = None) -> list[Event]:
        """All events, or those with this name, in recorded order."""
        with self._lock:
            return [e for e in self._events if name is None or e.name == name]

    def first(self, name: str) -> Event | None:
        """The earliest event with this name, or None."""
        found = self.events(name)
        return found[0] if found else None

    def last(self, name: str) -> Event | None:
        """The latest event with this name, or None."""
        found = self.events(name)
        return found[-1] if found else None

    @contextmanager
    def phase(
        self, name: str, cluster: str | None = None, detail: Mapping[str, Any] | None = None
    ) -> Iterator[Event]:
        """Record `<name>.start`, run the block, record `<name>.end` on every exit path.

        The end event's detail says {"outcome": "ok"}, or {"outcome": "error", "error": "Type: message"}
        when the block raised (the exception propagates).
        """
        start = self.record(f"{name}.start", cluster, detail)
        try:
            yield start
        except BaseException as exc:
            self.record(f"{name}.end", cluster, {"outcome": "error", "error": f"{type(exc).__name__}: {exc}"})
            raise
        self.record(f"{name}.end", cluster, {"outcome": "ok"})

    def to_dict(self) -> dict[str, Any]:
        return {"events": [e.to_dict() for e in self.events()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], clock: Clock = system_clock) -> Timeline:
        return cls(clock, (Event.from_dict(e) for e in data["events"]))


def phase_spans(events: Iterable[Event]) -> list[PhaseSpan]:
    """Pair `<name>.start` with `<name>.end` events of the same cluster, ordered by start.

    Events are taken in monotonic-time order (stable, so ties keep recorded order). An end closes the most
    recent open start of the same name and cluster (so nested phases of one name pair up properly). A start
    without an end gives a span with end None; an end without a start is an error.
    """
    spans: list[PhaseSpan] = []
    open_starts: dict[tuple[str, str | None], list[int]] = {}
    for event in sorted(events, key=lambda e: e.t_mono):
        base, _, suffix = event.name.rpartition(".")
        if not base or suffix not in ("start", "end"):
            continue
        stack = open_starts.setdefault((base, event.cluster), [])
        if suffix == "start":
            stack.append(len(spans))
            spans.append(PhaseSpan(base, event.cluster, event.t_mono, None))
        elif stack:
            i = stack.pop()
            spans[i] = PhaseSpan(base, event.cluster, spans[i].start, event.t_mono)
        else:
            where = "" if event.cluster is None else f" in cluster {event.cluster}"
            raise ValueError(f"timeline: {event.name!r}{where} at {event.t_mono} has no matching start event")
    return spans
