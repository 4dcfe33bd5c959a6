"""One drill's run: its timeline, faults, probes and sentinels, and the verdicts measured from them.

The pytest plugin makes one Drill per test; drills call `observe`, `inject`, the failover strategies
and `judge`, and the plugin writes the record whatever happened.
"""

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

from harness import measure
from harness.config import App, Fleet
from harness.data import SentinelWriter, read_present
from harness.errors import FleetDrillError
from harness.failover import BackupPoint
from harness.faults import Fault, FaultStack
from harness.fleet import FleetAccess, ServiceProxy
from harness.gameday import Operators
from harness.safety import AbortMonitor
from harness.samples import ProbeSample, SentinelWrite, Verdict
from harness.timeline import Event, Timeline
from harness.traffic import Prober

GLOBAL = "global"
RESTORED = "restored"
STEADY_WRITES = 5  # sentinel writes in a row acknowledged: the data path is part of the steady state


@dataclass(frozen=True)
class DrillSettings:
    """How densely a drill measures and what counts as stable recovery."""

    probe_rate_hz: float = 50.0
    probe_timeout_s: float = 1.0
    sentinel_rate_hz: float = 20.0
    stable_count: int = 20
    stable_seconds: float = 1.0
    max_quiet_s: float = 1.0
    soak_s: float = 10.0
    max_probe_gap_s: float = 1.0  # a longer stretch without probes makes the verdicts errors, not passes
    abort_check_s: float = 0.5  # how often the fleet file's safety.abort rule is checked while observing


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
        operators: Operators | None = None,
    ) -> None:
        self.name, self.fleet, self.access, self.stack, self.timeline = name, fleet, access, stack, timeline
        self.settings = settings or DrillSettings()
        self.operators = operators  # on game days: pause before each fault and before the verdicts
        self.observations: dict[str, Observation] = {}
        self.verdicts: list[Verdict] = []
        self.figures: dict[str, object] = {}
        self._live: dict[str, Prober] = {}
        self._restored: dict[str, Prober] = {}
        self._writers: dict[str, SentinelWriter] = {}

    def app(self, name: str) -> App:
        return self.fleet.app(name)

    @contextmanager
    def observe(self, app: App) -> Iterator[Observation]:
        """Probe the app's global and per-cluster endpoints and write sentinels for the block.

        With safety.abort in the fleet file, global availability is watched meanwhile: below the threshold
        over the rule's window, "drill.aborted" is recorded and DrillAborted stops the drill (its faults are
        then reverted as on any exit).
        """
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
        try:
            with prober, writer, ExitStack() as abort:
                self._live[app.name], self._writers[app.name] = prober, writer
                rule = self.fleet.safety.abort
                if rule is not None:
                    interval = self.settings.abort_check_s
                    abort.enter_context(
                        AbortMonitor(rule, self._availability(app), self.timeline, interval_s=interval)
                    )
                try:
                    yield observation
                finally:
                    observation.end = time.monotonic()
                    self._live.pop(app.name, None)
                    self._writers.pop(app.name, None)
        finally:  # a drill that fails inside the block keeps its raw data too
            observation.samples |= {target: prober.samples(target) for target in targets}
            observation.writes = writer.writes()
            self.timeline.record("probes.stopped", detail={"app": app.name})

    def _availability(self, app: App) -> Callable[[float], float | None]:
        """Global availability of the app over the last window_s seconds (live probes); None without any."""

        def over(window_s: float) -> float | None:
            now = time.monotonic()
            samples = self._live[app.name].samples(GLOBAL)
            return measure.availability(samples, (now - window_s, now), app.objectives.latency)

        return over

    @contextmanager
    def observe_restored(self, app: App, proxy: ServiceProxy) -> Iterator[None]:
        """Probe the app restored beside the original through its API server's service proxy, for the
        block; enter it at t0, so the probes that fail until the restore serves make its RTO. Through the
        proxy only a 2xx answer is the app's (404 and 503 are the proxy's: no such service, no endpoint
        yet), so any other status is recorded as a failed probe."""
        prober = Prober(
            {RESTORED: proxy.url + app.health_path},
            rate_hz=self.settings.probe_rate_hz,
            timeout_s=self.settings.probe_timeout_s,
            ssl_context=proxy.ssl_context,
            headers=proxy.headers,
        )
        self.timeline.record("probes.started", detail={"app": app.name, "targets": [RESTORED]})
        try:
            with prober:
                self._restored[app.name] = prober
                yield
        finally:
            self._restored.pop(app.name, None)
            self.observations[app.name].samples[RESTORED] = [_answered(s) for s in prober.samples(RESTORED)]

    def wait_restored_serves(self, app: App, deadline_s: float) -> None:
        """Wait (at most deadline_s) until the restored app's probes show a stable recovery as RTO defines
        it (see observe_restored)."""
        deadline, prober = time.monotonic() + deadline_s, self._restored[app.name]
        start = time.monotonic()
        with self.timeline.phase("first good request"):
            while time.monotonic() < deadline:
                samples = [_answered(s) for s in prober.samples(RESTORED)]
                stable = measure.rto(samples, start, self.settings.stable_count, self.settings.stable_seconds)
                if stable.outcome == "recovered":
                    return
                time.sleep(0.05)

    @contextmanager
    def direct_writes(self, app: App, cluster: str) -> Iterator[SentinelWriter]:
        """Write sentinels straight to the app in one cluster (not through the global endpoint): who
        accepts writes where, for the split-brain check."""
        path = app.write_endpoint if (app.write_endpoint or "").startswith("/") else "/orders"
        writer = SentinelWriter(urljoin(app.endpoints[cluster], path), rate_hz=self.settings.sentinel_rate_hz)
        with writer:
            yield writer

    def _write_url(self, app: App) -> str:
        path = app.write_endpoint or "/orders"
        return path if "://" in path else urljoin(app.global_endpoint or "", path)

    def inject(self, fault: Fault) -> Event:
        """Apply a fault until the drill ends (reverted on every exit path); its event's time is t0."""
        self._pause(f"next: inject {fault.describe()}")
        return self.stack.push(fault)

    def _pause(self, what: str) -> None:
        if self.operators is not None:
            self.operators.pause(what)

    def revert_all(self) -> None:
        self.stack.undo_all()

    def served_by(self, app: App, cluster: str | None = None, besides: str | None = None) -> bool:
        """The global endpoint has answered well for the last stable_seconds (live probes), from `cluster`
        when given, and never from `besides` when given."""
        since = time.monotonic() - self.settings.stable_seconds
        recent = [s for s in self._live[app.name].samples(GLOBAL) if s.sent >= since]

        def good(sample: ProbeSample) -> bool:
            origin = (sample.served_by or "").split("/")[0]
            return bool(
                sample.ok
                and (sample.status or 0) < 500
                and origin
                and (cluster is None or origin == cluster)
                and origin != besides
            )

        return len(recent) >= self.settings.stable_count and all(good(s) for s in recent)

    def writes_acked(self, app: App) -> bool:
        """The app's last STEADY_WRITES sentinel writes were all acknowledged (live)."""
        writer = self._writers.get(app.name)
        recent = writer.writes()[-STEADY_WRITES:] if writer else []
        return len(recent) == STEADY_WRITES and all(w.acked_at is not None for w in recent)

    def writes_acked_since(self, app: App, since: float) -> int:
        """How many of the app's sentinel writes were acknowledged after `since` (live)."""
        writer = self._writers.get(app.name)
        return sum(1 for w in writer.writes() if (w.acked_at or 0) > since) if writer else 0

    def steady(self, app: App, cluster: str | None, hold_s: float, deadline_s: float) -> bool:
        """Steady state: the app served (from `cluster` when given) and acknowledged its sentinel writes,
        then held for hold_s so the sentinel and the probes have a history before the fault."""

        def healthy() -> bool:
            return self.served_by(app, cluster) and self.writes_acked(app)

        deadline = time.monotonic() + deadline_s
        while not healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        held = time.monotonic() + hold_s
        while time.monotonic() < held:
            time.sleep(0.05)
        detail = {"served": self.served_by(app, cluster), "writes acked": self.writes_acked(app)}
        self.timeline.record("steady.checked", cluster=cluster, detail=detail | {"ok": all(detail.values())})
        return all(detail.values())

    def soak(self) -> None:
        """Keep measuring for soak_s after recovery: the drill window availability is judged over, and
        proof that recovery holds."""
        with self.timeline.phase("soak"):
            time.sleep(self.settings.soak_s)

    def wait_served_by(
        self, app: App, cluster: str | None, deadline_s: float, besides: str | None = None
    ) -> None:
        """Wait (at most deadline_s: a drill never hangs) until the app is served stably (from `cluster`
        when given, not from `besides`)."""
        deadline = time.monotonic() + deadline_s
        with self.timeline.phase("first good request", cluster=cluster):
            while not self.served_by(app, cluster, besides) and time.monotonic() < deadline:
                time.sleep(0.05)

    def judge_drift(self, objective: str, expected: str, drifts: list[str]) -> Verdict:
        """A verdict from a comparison: pass when nothing drifted, else fail listing every drift."""
        status = "fail" if drifts else "pass"
        measured = f"{len(drifts)} difference(s)"
        message = "; ".join(drifts) if drifts else f"{expected}: no difference"
        verdict = Verdict(status, objective, expected, measured, message, {})
        self.verdicts.append(verdict)
        return verdict

    def judge_split_brain(self, old: str, old_writes: list[SentinelWrite], new: str, t0: float) -> Verdict:
        """Never two writers, from what was measured: the old primary's direct writes and the sentinel's
        writes through the global endpoint after the fault (the new primary's: before it, the old one took
        them) must never have been accepted at the same time (measure.judge_split_brain)."""
        observation = next(iter(self.observations.values()))
        after_fault = [w for w in observation.writes if w.acked_at is None or w.acked_at >= t0]
        verdict = measure.judge_split_brain({old: old_writes, new: after_fault}, t0)
        self.verdicts.append(verdict)
        return verdict

    def judge(
        self,
        app: App,
        t0: float,
        survivor: str | None = None,
        max_outage_s: float | None = None,
        latency_percentile: float | None = None,
    ) -> list[Verdict]:
        """RTO, availability, longest outage (when bounded), a latency percentile (when asked) and RPO
        (when the data failed over to `survivor`) of the app against its objectives, from what was
        measured."""
        self._pause(f"next: the verdicts of {app.name}")
        observation = self.observations[app.name]
        samples = observation.samples[GLOBAL]
        objectives, interval = app.objectives, 1 / self.settings.probe_rate_hz
        gap_factor = max(3.0, self.settings.max_probe_gap_s / interval)
        coverage = measure.check_coverage(samples, observation.start, observation.end, interval, gap_factor)
        result = measure.rto(
            samples, t0, self.settings.stable_count, self.settings.stable_seconds, objectives.latency
        )
        verdicts = []
        if objectives.rto is not None:
            verdicts.append(measure.judge_rto(result, objectives.rto, coverage))
        if objectives.availability is not None:
            verdicts.append(
                measure.judge_availability(samples, objectives.availability, coverage, objectives.latency)
            )
        if max_outage_s is not None:
            verdicts.append(measure.judge_longest_outage(samples, max_outage_s, coverage, objectives.latency))
        if latency_percentile is not None and objectives.latency is not None:
            verdicts.append(measure.judge_latency(samples, latency_percentile, objectives.latency, coverage))
        windows = measure.outage_windows(samples, objectives.latency)
        figures: dict[str, object] = {
            "rto_s": result.rto,
            "rto_outcome": result.outcome,
            "availability": measure.availability(samples, latency_bound=objectives.latency),
            "longest_outage_s": max((w.duration for w in windows), default=0.0),
            "latency_s": measure.latency_percentiles(samples),
            "probes": len(samples),
            "writes": len(observation.writes),
            "rto_phases": measure.rto_phases(self.timeline.events(), t0, t0 + (result.rto or 0)).to_dict(),
        }
        if survivor is not None:
            present = read_present(
                app.endpoints[survivor], observation.seq_base - 1, stream=observation.stream
            )
            loss = measure.rpo(observation.writes, present, t0)
            figures |= {"rpo_s": loss.rpo, "lost_writes": loss.lost_count}
            if objectives.rpo is not None:
                verdicts.append(
                    measure.judge_rpo(loss, objectives.rpo, max_quiet_s=self.settings.max_quiet_s)
                )
        self.figures[app.name] = figures
        self.verdicts += verdicts
        return verdicts

    def judge_restore(self, app: App, t0: float, point: BackupPoint, proxy: ServiceProxy) -> list[Verdict]:
        """The app restored beside the original: RTO from t0 to its stable answers (observe_restored), and
        the data it holds against the backup point (the sentinel's writes read back through the proxy)."""
        self._pause(f"next: the verdicts of {app.name}")
        observation = self.observations[app.name]
        samples = observation.samples[RESTORED]
        interval = 1 / self.settings.probe_rate_hz
        gap_factor = max(3.0, self.settings.max_probe_gap_s / interval)
        end = max((s.sent for s in samples), default=t0)
        coverage = measure.check_coverage(samples, t0, end, interval, gap_factor)
        result = measure.rto(samples, t0, self.settings.stable_count, self.settings.stable_seconds)
        verdicts = []
        if app.objectives.rto is not None:
            verdicts.append(measure.judge_rto(result, app.objectives.rto, coverage))
        figures: dict[str, object] = {
            "rto_s": result.rto,
            "rto_outcome": result.outcome,
            "backup": point.name,
            "backup_window_s": [point.started - t0, point.completed - t0],
            "probes": len(samples),
            "writes": len(observation.writes),
            "rto_phases": measure.rto_phases(self.timeline.events(), t0, t0 + (result.rto or 0)).to_dict(),
        }
        verdicts.append(self._judge_restored_data(observation, t0, point, proxy, figures))
        self.figures[app.name] = figures
        self.verdicts += verdicts
        return verdicts

    @staticmethod
    def _judge_restored_data(
        observation: Observation,
        t0: float,
        point: BackupPoint,
        proxy: ServiceProxy,
        figures: dict[str, object],
    ) -> Verdict:
        """The restored data against the backup point; an error verdict when it cannot be read."""
        try:
            present = read_present(
                proxy.url,
                observation.seq_base - 1,
                stream=observation.stream,
                ssl_context=proxy.ssl_context,
                headers=proxy.headers,
            )
        except FleetDrillError as error:
            objective = "RPO at the backup point"
            why = f"{objective} not judged: the restored app's data could not be read: {error}"
            return Verdict("error", objective, "the restored data read back", "no data", why, {})
        loss = measure.rpo(observation.writes, present, t0)
        figures |= {"rpo_s": loss.rpo, "lost_writes": loss.lost_count}
        return measure.judge_backup_point(loss, observation.writes, present, point.started, point.completed)


def _answered(sample: ProbeSample) -> ProbeSample:
    """A probe through a service proxy: any answer but 2xx is the proxy's, so the probe failed."""
    if not sample.ok or sample.status is None or 200 <= sample.status < 300:
        return sample
    error = f"status: HTTP {sample.status} from the API server's proxy"
    return dataclasses.replace(sample, ok=False, status=None, error=error)
