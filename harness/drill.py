"""One drill's run: its timeline, faults, probes and sentinels, and the verdicts measured from them.

The pytest plugin makes one Drill per test; drills call `observe`, `inject`, the failover strategies
and `judge`, and the plugin writes the record whatever happened.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

from harness import measure
from harness.config import App, Fleet
from harness.data import SentinelWriter, read_present
from harness.faults import Fault, FaultStack
from harness.fleet import FleetAccess
from harness.samples import ProbeSample, SentinelWrite, Verdict
from harness.timeline import Event, Timeline
from harness.traffic import Prober

GLOBAL = "global"


@dataclass(frozen=True)
class DrillSettings:
    """How densely a drill measures and what counts as stable recovery."""

    probe_rate_hz: float = 50.0
    probe_timeout_s: float = 1.0
    sentinel_rate_hz: float = 20.0
    stable_count: int = 20
    stable_seconds: float = 1.0
    max_quiet_s: float = 1.0


@dataclass
class Observation:
    """What one app's probes and sentinel recorded during the drill."""

    app: App
    samples: dict[str, list[ProbeSample]] = field(default_factory=dict)
    writes: list[SentinelWrite] = field(default_factory=list)
    stream: str = ""
    seq_base: int = 0
    start: float = 0.0
    end: float = 0.0


class Drill:
    """The state of one running drill."""

    def __init__(
        self,
        name: str,
        fleet: Fleet,
        access: FleetAccess,
        stack: FaultStack,
        timeline: Timeline,
        settings: DrillSettings | None = None,
    ) -> None:
        self.name, self.fleet, self.access, self.stack, self.timeline = name, fleet, access, stack, timeline
        self.settings = settings or DrillSettings()
        self.observations: dict[str, Observation] = {}
        self.verdicts: list[Verdict] = []
        self.figures: dict[str, object] = {}
        self._live: dict[str, Prober] = {}

    def app(self, name: str) -> App:
        return self.fleet.app(name)

    @contextmanager
    def observe(self, app: App) -> Iterator[Observation]:
        """Probe the app's global and per-cluster endpoints and write sentinels for the block."""
        targets = {GLOBAL: urljoin(app.global_endpoint or "", app.health_path)}
        targets |= {cluster: urljoin(url, app.health_path) for cluster, url in app.endpoints.items()}
        bound = app.objectives.latency
        observation = Observation(app)
        self.observations[app.name] = observation
        prober = Prober(
            targets,
            rate_hz=self.settings.probe_rate_hz,
            timeout_s=self.settings.probe_timeout_s,
            latency_bound_s=bound,
        )
        writer = SentinelWriter(self._write_url(app), rate_hz=self.settings.sentinel_rate_hz)
        observation.stream, observation.seq_base = writer.stream, writer.seq_base
        self.timeline.record("probes.started", detail={"app": app.name, "targets": sorted(targets)})
        observation.start = time.monotonic()
        with prober, writer:
            self._live[app.name] = prober
            try:
                yield observation
            finally:
                observation.end = time.monotonic()
                self._live.pop(app.name, None)
        observation.samples = {target: prober.samples(target) for target in targets}
        observation.writes = writer.writes()
        self.timeline.record("probes.stopped", detail={"app": app.name})

    def _write_url(self, app: App) -> str:
        path = app.write_endpoint or "/orders"
        return path if "://" in path else urljoin(app.global_endpoint or "", path)

    def inject(self, fault: Fault) -> Event:
        """Apply a fault until the drill ends (reverted on every exit path); its event's time is t0."""
        return self.stack.push(fault)

    def revert_all(self) -> None:
        self.stack.undo_all()

    def served_by(self, app: App, cluster: str) -> bool:
        """The global endpoint has answered well from `cluster` for the last stable_seconds (live probes)."""
        since = time.monotonic() - self.settings.stable_seconds
        recent = [s for s in self._live[app.name].samples(GLOBAL) if s.sent >= since]
        return len(recent) >= self.settings.stable_count and all(
            s.ok and (s.status or 0) < 500 and (s.served_by or "").startswith(f"{cluster}/") for s in recent
        )

    def steady(self, app: App, cluster: str, hold_s: float, deadline_s: float) -> bool:
        """Steady state: the app served from `cluster`, then held for hold_s so the sentinel has a history."""
        deadline = time.monotonic() + deadline_s
        while not self.served_by(app, cluster) and time.monotonic() < deadline:
            time.sleep(0.05)
        held = time.monotonic() + hold_s
        while time.monotonic() < held:
            time.sleep(0.05)
        self.timeline.record("steady.checked", cluster=cluster, detail={"ok": self.served_by(app, cluster)})
        return self.served_by(app, cluster)

    def wait_served_by(self, app: App, cluster: str, deadline_s: float) -> None:
        """Wait (at most deadline_s: a drill never hangs) until `cluster` serves the app stably."""
        deadline = time.monotonic() + deadline_s
        with self.timeline.phase("first good request", cluster=cluster):
            while not self.served_by(app, cluster) and time.monotonic() < deadline:
                time.sleep(0.05)

    def judge(self, app: App, t0: float, survivor: str) -> list[Verdict]:
        """RTO, availability and RPO of the app against its objectives, from what was measured."""
        observation = self.observations[app.name]
        samples = observation.samples[GLOBAL]
        objectives, interval = app.objectives, 1 / self.settings.probe_rate_hz
        coverage = measure.check_coverage(samples, observation.start, observation.end, interval)
        result = measure.rto(
            samples, t0, self.settings.stable_count, self.settings.stable_seconds, objectives.latency
        )
        present = read_present(app.endpoints[survivor], observation.seq_base - 1, stream=observation.stream)
        loss = measure.rpo(observation.writes, present, t0)
        verdicts = []
        if objectives.rto is not None:
            verdicts.append(measure.judge_rto(result, objectives.rto, coverage))
        if objectives.availability is not None:
            verdicts.append(
                measure.judge_availability(samples, objectives.availability, coverage, objectives.latency)
            )
        if objectives.rpo is not None:
            verdicts.append(measure.judge_rpo(loss, objectives.rpo, max_quiet_s=self.settings.max_quiet_s))
        windows = measure.outage_windows(samples, objectives.latency)
        self.figures[app.name] = {
            "rto_s": result.rto,
            "rto_outcome": result.outcome,
            "rpo_s": loss.rpo,
            "lost_writes": loss.lost_count,
            "availability": measure.availability(samples, latency_bound=objectives.latency),
            "longest_outage_s": max((w.duration for w in windows), default=0.0),
            "latency_s": measure.latency_percentiles(samples),
            "probes": len(samples),
            "writes": len(observation.writes),
            "rto_phases": measure.rto_phases(self.timeline.events(), t0, t0 + (result.rto or 0)).to_dict(),
        }
        self.verdicts += verdicts
        return verdicts
