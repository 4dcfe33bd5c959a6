"""One drill's run: its timeline, faults, probes and sentinels, and the verdicts measured from them.

The pytest plugin makes one Drill per test; drills call `observe`, `inject`, the failover strategies
and `judge`, and the plugin writes the record whatever happened.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from urllib.parse import urljoin, urlsplit, urlunsplit

from harness import appcontract, burst, isolation, measure
from harness.config import App, Fleet
from harness.data import SentinelWriter
from harness.dnsphases import judge as judge_dns
from harness.dnsphases import split as split_dns
from harness.dnswatch import DnsAnswer, DnsWatcher
from harness.errors import ConfigError, FleetDrillError
from harness.failover import BackupHooksFailed, BackupPoint
from harness.faults import Fault, FaultStack
from harness.faults.evidence import FaultNotEffective, Injection, await_effect
from harness.fleet import FleetAccess, ServiceProxy
from harness.gameday import Operators
from harness.load import Request
from harness.probeprocess import ProbeProcess
from harness.promabort import abort_checks
from harness.prometheus import Prometheuses
from harness.promslo import MetricSeries, Windows, evaluate, reads_back
from harness.safety import AbortMonitor, AvailabilityBelow
from harness.samples import MissedSlot, ProbeSample, ReplicaLag, RtoResult, SentinelWrite, Verdict
from harness.sentinels import GLOBAL, RESTORED, SentinelStore, Where, store_for
from harness.strategies import failed_over_events
from harness.timeline import Timeline
from harness.traffic import Prober

GLOBAL_NAME = "global-name"
"""The probes of apps[].dns.name when the global endpoint is another host (an address, a CDN)."""
RESTORED_RATE_HZ = 10.0
"""Most probes a second of an app restored beside the original (see Drill._restored_rate_hz)."""
STEADY_WRITES = 5  # sentinel writes in a row acknowledged: the data path is part of the steady state
STEADY_REGAIN_S = 5.0
"""After the steady state's hold, how long the app may take to be healthy again (one slow probe)."""
RPO_REACH = 2.0
"""Sentinels write for this many RPO objectives before the fault: a loss of up to twice the objective is
measured (an RPO miss is a FAIL with its size), not only bounded from below."""


FENCED_WRITES = 5
"""A cluster whose last this many direct writes were refused is fenced."""


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
    missed: dict[str, list[MissedSlot]] = field(default_factory=dict)
    writes: list[SentinelWrite] = field(default_factory=list)
    dns: list[DnsAnswer] = field(default_factory=list)
    stream: str = ""
    seq_base: int = 0
    start: float = 0.0
    end: float = 0.0
    replication: list[ReplicaLag] | None = None
    """Each replica's lag behind the primary just before the drill's first fault, as the sentinel store's
    database reports it (empty when it cannot tell)."""
    replication_read_at: float | None = None


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
        self.figures: dict[str, dict[str, object]] = {}
        self._live: dict[str, ProbeProcess] = {}
        self._restored: dict[str, Prober] = {}
        self._writers: dict[str, SentinelWriter] = {}
        self.prometheus = Prometheuses(fleet)
        """The fleet's Prometheus clients, for PromQL objectives and aborts (made when first used)."""
        self.metric_series: list[MetricSeries] = []
        """The raw series behind every PromQL objective judged."""

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
        resolvers, watcher = {}, None
        if app.dns is not None:  # a DNS-based failover: the name's probes resolve as the runner's clients do
            name, url = _global_name(app)
            targets[name] = urljoin(url, app.health_path)
            resolvers = {name: app.dns.resolver} if app.dns.resolver else {}
            watcher = DnsWatcher(app.dns)
        bound = app.objectives.latency
        observation = Observation(app)
        self.observations[app.name] = observation
        prober = ProbeProcess(  # a process of its own: the drill's threads never make it late
            targets,
            rate_hz=self.settings.probe_rate_hz,
            timeout_s=probe_timeout(app.objectives.latency, self.settings.probe_timeout_s),
            latency_bound_s=bound,
            resolvers=resolvers,
            **appcontract.probe_options(app),
        )
        writer = None
        if app.sentinels is not None:  # without them no data is written, and RPO is an error verdict
            channel = self._store(app).channel(Where(GLOBAL, app.global_endpoint or ""))
            writer = SentinelWriter(channel, rate_hz=self.settings.sentinel_rate_hz)
            observation.stream, observation.seq_base = writer.stream, writer.seq_base
        try:
            with ExitStack() as running:  # the probes stop first: they close the window
                if writer is not None:
                    self._writers[app.name] = running.enter_context(writer)
                if watcher is not None:
                    running.enter_context(watcher)
                self._live[app.name] = running.enter_context(prober)
                self.timeline.record("probes.started", detail={"app": app.name, "targets": sorted(targets)})
                observation.start = time.monotonic()  # the window opens once the schedule runs
                rule = self.fleet.safety.abort
                if rule is not None:
                    interval = self.settings.abort_check_s
                    checks = abort_checks(rule, self.prometheus)
                    if rule.availability_below is not None:
                        checks.insert(0, AvailabilityBelow(rule, self._availability(app), interval))
                    running.enter_context(AbortMonitor(checks, self.timeline, interval_s=interval))
                try:
                    yield observation
                finally:
                    observation.end = time.monotonic()
                    self._live.pop(app.name, None)
                    self._writers.pop(app.name, None)
        finally:  # a drill that fails inside the block keeps its raw data too
            observation.samples |= {target: prober.samples(target) for target in targets}
            observation.missed |= {target: prober.missed(target) for target in targets}
            observation.writes = writer.writes() if writer is not None else []
            observation.dns = watcher.answers() if watcher is not None else []
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
        block; enter it at t0, so the probes that fail until the restore serves make its RTO. The app's
        contract judges the answers as on its endpoints: the proxy's own 404 and 503 (no such service, no
        endpoint yet) are failed probes, as statuses the app does not accept (appcontract)."""
        prober = Prober(
            {RESTORED: proxy.url + app.health_path},
            rate_hz=self._restored_rate_hz(),
            timeout_s=probe_timeout(app.objectives.latency, self.settings.probe_timeout_s),
            auth=proxy.auth,
            **appcontract.probe_options(app, proxied=True),
        )
        self.timeline.record("probes.started", detail={"app": app.name, "targets": [RESTORED]})
        try:
            with prober:
                self._restored[app.name] = prober
                yield
        finally:
            self._restored.pop(app.name, None)
            self.observations[app.name].samples[RESTORED] = prober.samples(RESTORED)
            self.observations[app.name].missed[RESTORED] = prober.missed(RESTORED)

    def _restored_rate_hz(self) -> float:
        """The restored app's probe rate: at most RESTORED_RATE_HZ. Each of its probes is relayed by the
        target's API server (authenticated TLS both ways), whose CPU the restore itself needs; at the drills'
        rate they starved the prober's thread on a loaded runner (its probes are a thread: they carry the
        proxy's renewing credentials)."""
        return min(self.settings.probe_rate_hz, RESTORED_RATE_HZ)

    def wait_restored_serves(self, app: App, deadline_s: float) -> None:
        """Wait (at most deadline_s) until the restored app's probes, from the first, show a stable recovery
        as RTO defines it (see observe_restored), or a stable run that never failed. The app may serve before
        the restore reports done: what came before the wait counts."""
        deadline, prober = time.monotonic() + deadline_s, self._restored[app.name]
        count, seconds = self.settings.stable_count, self.settings.stable_seconds
        with self.timeline.phase("first good request"):
            while not measure.ends_stable(prober.samples(RESTORED), count, seconds):
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.05)

    def wait_restored_data(self, app: App, proxy: ServiceProxy, cluster: str, deadline_s: float) -> None:
        """Wait (at most deadline_s) until the restored copy's sentinels can be read (a restored database
        may still be recovering when the app answers); judge_restore then says what it holds, or why not."""
        deadline, where = time.monotonic() + deadline_s, self._restored_where(proxy, cluster)
        observation = self.observations[app.name]
        with self.timeline.phase("restored data readable", cluster=cluster):
            while time.monotonic() < deadline:
                try:
                    self._store(app).present(where, observation.seq_base - 1, observation.stream)
                    return
                except ConfigError:
                    return  # nothing to wait for: judge_restore's verdict names the missing setting
                except FleetDrillError:
                    time.sleep(0.5)

    def backup_hooks_failed(self, app: App, failure: BackupHooksFailed) -> Verdict:
        """The app's backup ended short of Completed because its backup hooks failed: a failed objective,
        the hooks' errors in its message."""
        verdict = Verdict(
            "fail",
            "backup hooks",
            "every backup hook succeeds",
            f"{failure.failed} of {failure.attempted} failed",
            str(failure),
            {},
        )
        self.verdicts.append(verdict)
        return verdict

    def _restored_where(self, proxy: ServiceProxy, cluster: str) -> Where:
        context = self.fleet.context_for(self.fleet.cluster(cluster))
        return Where(RESTORED, proxy.url, context, proxy.namespace, proxy.auth)

    @contextmanager
    def direct_writes(self, app: App, cluster: str) -> Iterator[SentinelWriter]:
        """Write sentinels straight to the app in one cluster (not through the global endpoint): who
        accepts writes where, for the split-brain check."""
        channel = self._store(app).channel(self._where(app, cluster))
        with SentinelWriter(channel, rate_hz=self.settings.sentinel_rate_hz) as writer:
            yield writer

    def _store(self, app: App) -> SentinelStore:
        """The app's sentinel store; ConfigError naming apps[N].sentinels when the fleet file sets none."""
        return store_for(app, self._field(app, "sentinels"), appcontract.identity_header(app))

    def _where(self, app: App, cluster: str) -> Where:
        """The app in `cluster`, for its sentinels."""
        context = self.fleet.context_for(self.fleet.cluster(cluster))
        return Where(cluster, app.endpoints.get(cluster, ""), context, app.namespace)

    def _field(self, app: App, name: str) -> str:
        """Where the app's `name` is in the fleet file: apps[N].NAME."""
        return f"apps[{[a.name for a in self.fleet.apps].index(app.name)}].{name}"

    def check_faults(self, *faults: Fault) -> None:
        """Refuse now (SafetyError) when the safety rules would refuse any of `faults`, injected in order:
        a drill that injects several calls this before the first."""
        self.stack.check(faults)

    def inject(self, fault: Fault) -> Injection:
        """Apply a fault until the drill ends (reverted on every exit path) and wait for the evidence that
        it took effect, seen from outside the faulted part; its `started` (injection began) is t0.

        A fault whose effect does not show in time is an error verdict and FaultNotEffective: a fault that
        did not happen proves nothing about recovery."""
        self._pause(f"next: inject {fault.describe()}")
        self._read_replication()
        completed = self.stack.push(fault)
        started = next(
            e for e in self.timeline.events("fault.injecting") if e.detail["id"] == completed.detail["id"]
        )
        try:
            return await_effect(fault, self.access, self, started, completed, self.timeline)
        except FaultNotEffective as error:
            self.verdicts.append(
                Verdict("error", "fault effect", f"{fault.kind} takes effect", "not seen", str(error), {})
            )
            raise

    def _read_replication(self) -> None:
        """Before the first fault: each observed app's replication lag, as its sentinel store reports it
        (recorded on the timeline; a failed read is recorded as unknown, it judges nothing)."""
        for name in list(self._writers):
            observation = self.observations[name]
            if observation.replication is not None:
                continue
            try:
                lags = self._store(observation.app).replication_lag()
            except FleetDrillError as error:
                lags = [ReplicaLag("replicas", None, None, None, "unknown", str(error))]
            observation.replication, observation.replication_read_at = lags, time.monotonic()
            if lags:
                replicas = [lag.to_dict() for lag in lags]
                self.timeline.record("replication.lag", detail={"app": name, "replicas": replicas})

    def endpoint_probes(self, cluster: str, since: float) -> list[ProbeSample] | None:
        """The live probes of the app endpoints in `cluster` sent since `since`; None when none is probed."""
        series = []
        for prober in list(self._live.values()):
            try:
                series.append(prober.samples(cluster))
            except KeyError:  # this app has no endpoint in that cluster
                continue
        if not series:
            return None
        return sorted((s for samples in series for s in samples if s.sent >= since), key=lambda s: s.sent)

    def _pause(self, what: str) -> None:
        if self.operators is not None:
            self.operators.pause(what)

    def revert_all(self) -> None:
        """Revert every fault; the drill's failovers stay until it fails back (or the run ends)."""
        self.stack.undo_all(recoveries=False)

    def served_by(self, app: App, cluster: str | None = None, besides: str | None = None) -> bool:
        """The global endpoint's probes that completed in the last stable_seconds (live probes, at least
        stable_count) all succeeded (as the app's contract says), from `cluster` when given, and never from
        `besides` when given. Completed, not sent: on a busy runner an answer may take longer than
        stable_seconds, and a window of sends would then hold no completed probe at all.

        Which cluster served is the app's served_by identity up to its first "/"; asking for a cluster
        when the fleet file declares none is a ConfigError, never a guess."""
        if (cluster is not None or besides is not None) and app.served_by is None:
            raise ConfigError(
                f"fleet {self.fleet.name!r}: app {app.name!r} declares no served_by, so which cluster serves "
                "it cannot be told; set served_by: {header: NAME} or {json_field: NAME}"
            )
        recent = self._recent_global(app)

        def good(sample: ProbeSample) -> bool:
            origin = (sample.served_by or "").split("/")[0]
            return (
                not measure.probe_failed(sample)
                and (cluster is None or origin == cluster)
                and (besides is None or origin != besides)
            )

        return len(recent) >= self.settings.stable_count and all(good(s) for s in recent)

    def writes_acked(self, app: App) -> bool:
        """The app's last STEADY_WRITES sentinel writes were all acknowledged (live); an app that declares
        no sentinels has no data path to check."""
        if app.sentinels is None:
            return True
        writer = self._writers.get(app.name)
        recent = writer.writes()[-STEADY_WRITES:] if writer else []
        return len(recent) == STEADY_WRITES and all(w.acked_at is not None for w in recent)

    def writes_acked_since(self, app: App, since: float) -> int:
        """How many of the app's sentinel writes were acknowledged after `since` (live)."""
        writer = self._writers.get(app.name)
        return sum(1 for w in writer.writes() if (w.acked_at or 0) > since) if writer else 0

    def steady(self, app: App, cluster: str | None, hold_s: float, deadline_s: float) -> bool:
        """Steady state: the app served (from `cluster` when given) and acknowledged its sentinel writes,
        within deadline_s (else no steady state, at once); then held for hold_s, and until the window is as
        old as the app's PromQL objectives over it read back (the scrape before the fault's first effect is
        then in the window, so they are judged), so the sentinel, the probes and the metrics have a history
        before the fault; and healthy again at its end (within STEADY_REGAIN_S: one slow probe on a busy
        runner is not a broken fleet; a fleet that stays unhealthy is)."""

        def healthy_within(seconds: float) -> dict[str, bool]:
            """What was seen when the app was first healthy within `seconds`, or last seen at its end: one
            look decides, as a second one a moment later may see otherwise (the probes' live view lags)."""
            until = time.monotonic() + seconds
            while True:
                seen = {"served": self.served_by(app, cluster), "writes acked": self.writes_acked(app)}
                if all(seen.values()) or time.monotonic() >= until:
                    return seen
                time.sleep(0.05)

        detail = healthy_within(deadline_s)
        if all(detail.values()):
            held = time.monotonic() + hold_s
            if app.name in self.observations:  # the fault comes once the PromQL objectives read a baseline
                held = max(held, self.observations[app.name].start + reads_back(app, "drill"))
            while time.monotonic() < held:
                time.sleep(0.05)
            detail = healthy_within(STEADY_REGAIN_S)
        self.timeline.record("steady.checked", cluster=cluster, detail=detail | {"ok": all(detail.values())})
        return all(detail.values())

    def _recent_global(self, app: App) -> list[ProbeSample]:
        """The app's global probes that completed in the last stable_seconds (live)."""
        since = time.monotonic() - self.settings.stable_seconds
        return [s for s in self._live[app.name].samples(GLOBAL) if s.received >= since]

    def why_not_steady(self, app: App, cluster: str | None = None) -> str:
        """Why the app is not in its steady state now (live), for a drill's message: what its global probes
        of the last stable_seconds answered instead (the two commonest), and its last sentinel write not
        acknowledged."""
        window, recent = self.settings.stable_seconds, self._recent_global(app)
        answers: Counter[str] = Counter()
        for sample in recent:
            origin = (sample.served_by or "").split("/")[0]
            if measure.probe_failed(sample):
                answers[sample.error or f"HTTP {sample.status}"] += 1
            elif cluster is not None and origin != cluster:
                answers[f"served by {origin or 'no cluster'}, not {cluster}"] += 1
        probes = f"global probes in the last {window:g} s"
        parts = [f"{count} of {len(recent)} {probes}: {why}" for why, count in answers.most_common(2)]
        parts += [] if recent else [f"no {probes}"]
        writer = self._writers.get(app.name)
        if writer is not None and not self.writes_acked(app):
            errors = writer.errors()
            said = f" (last: {errors[max(errors)]})" if errors else ""
            parts.append(f"its last {STEADY_WRITES} sentinel writes were not all acknowledged{said}")
        return "; ".join(parts) or "it is healthy now"

    def sentinel_history_s(self, app: App, baseline_s: float) -> float:
        """How long the steady state holds before a fault whose RPO is judged: baseline_s, or long enough
        for the sentinel to reach RPO_REACH objectives back (and a little more) when that is longer."""
        reach = RPO_REACH * (app.objectives.rpo or 0.0) + 2 * self.settings.max_quiet_s
        return max(baseline_s, reach)

    def soak(self, seconds: float | None = None) -> None:
        """Keep measuring for `seconds`, as after recovery: the drill window availability is judged over,
        and proof that recovery holds. Unless given: soak_s, plus as far back as the observed apps' PromQL
        objectives over the recovery read (their values measure the recovery alone only from then on)."""
        if seconds is None:
            observed = [o.app for o in self.observations.values() if not o.end]
            recovery = max((reads_back(app, "recovery") for app in observed), default=0.0)
            seconds = self.settings.soak_s + recovery
        with self.timeline.phase("soak"):
            time.sleep(seconds)

    def wait_served_by(
        self, app: App, cluster: str | None, deadline_s: float, besides: str | None = None
    ) -> None:
        """Wait (at most deadline_s: a drill never hangs) until the app is served stably (from `cluster`
        when given, not from `besides`)."""
        deadline = time.monotonic() + deadline_s
        with self.timeline.phase("first good request", cluster=cluster):
            while not self.served_by(app, cluster, besides) and time.monotonic() < deadline:
                time.sleep(0.05)

    def wait_fenced(self, writer: SentinelWriter, deadline_s: float) -> bool:
        """Wait (at most deadline_s) until a cluster written to straight (direct_writes) refuses writes: its
        last FENCED_WRITES answers all said no. False at the deadline."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            recent = writer.writes()[-FENCED_WRITES:]
            if len(recent) == FENCED_WRITES and all(w.outcome == "refused" for w in recent):
                return True
            time.sleep(0.05)
        return False

    def judge_drift(self, objective: str, expected: str, drifts: list[str]) -> Verdict:
        """A verdict from a comparison: pass when nothing drifted, else fail listing every drift."""
        status = "fail" if drifts else "pass"
        measured = f"{len(drifts)} difference(s)"
        message = "; ".join(drifts) if drifts else f"{expected}: no difference"
        verdict = Verdict(status, objective, expected, measured, message, {})
        self.verdicts.append(verdict)
        return verdict

    def judge_split_brain(self, old: str, old_writes: list[SentinelWrite], new: str, t0: float) -> Verdict:
        """Never two writers, from what was measured (measure.judge_split_brain): the old primary's direct
        writes, and the sentinel's writes through the global endpoint since t0, each credited to the cluster
        that answered it (the app's served-by header, or the database host for postgresql sentinels);
        without one, the global writes since the drill failed over to `new` are credited to it."""
        observation = next(iter(self.observations.values()))
        since = [w for w in observation.writes if w.ended_at is None or w.ended_at >= t0]
        if any(w.served_by for w in since):
            old_writes = [*old_writes, *(w for w in since if w.served_by == old)]
            new_writes = [w for w in since if w.served_by == new]
        else:
            failed_over = failed_over_events()
            moved = [e.t_mono for e in self.timeline.events() if e.cluster == new and e.name in failed_over]
            new_writes = [w for w in since if w.ended_at is None or w.ended_at >= max([t0, *moved])]
        verdict = measure.judge_split_brain({old: old_writes, new: new_writes}, t0)
        self.verdicts.append(verdict)
        return verdict

    def judge_return(
        self,
        app: App,
        old: str,
        returned: list[SentinelWrite],
        new: str,
        promoted: list[SentinelWrite],
        t0: float,
    ) -> Verdict:
        """Fencing of an old primary that returned after `new` was promoted: never two writers, from the
        app's writes during the drill (each credited to the cluster that answered it) and the direct writes
        to both while the old one returned. The old one's writes before it first answered are left out: it
        was not running (its loss is the drill's fault), so none of them can have been accepted."""
        observation = self.observations[app.name]
        answered = next((i for i, w in enumerate(returned) if w.outcome != "unknown"), len(returned))
        writes = {
            old: [w for w in observation.writes if w.served_by == old] + returned[answered:],
            new: [w for w in observation.writes if w.served_by == new] + promoted,
        }
        verdict = measure.judge_split_brain(writes, t0)
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
        measured. An objective judged here that the fleet file does not set is an error verdict."""
        self._pause(f"next: the verdicts of {app.name}")
        observation = self.observations[app.name]
        samples = observation.samples[GLOBAL]
        objectives, interval = app.objectives, 1 / self.settings.probe_rate_hz
        gap_factor = max(3.0, self.settings.max_probe_gap_s / interval)
        coverage = measure.check_coverage(
            samples,
            observation.start,
            observation.end,
            interval,
            gap_factor,
            missed=observation.missed.get(GLOBAL, ()),
        )
        result = measure.rto(
            samples, t0, self.settings.stable_count, self.settings.stable_seconds, objectives.latency
        )
        verdicts = [
            self._against(app, "rto", "RTO", lambda goal: measure.judge_rto(result, goal, coverage)),
            self._against(
                app,
                "availability",
                "availability",
                lambda goal: measure.judge_availability(samples, goal, coverage, objectives.latency),
            ),
        ]
        if max_outage_s is not None:
            verdicts.append(measure.judge_longest_outage(samples, max_outage_s, coverage, objectives.latency))
        if latency_percentile is not None:
            percentile = latency_percentile
            verdicts.append(
                self._against(
                    app,
                    "latency",
                    f"p{percentile:g} latency",
                    lambda goal: measure.judge_latency(samples, percentile, goal, coverage),
                )
            )
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
        if app.dns is not None:
            verdicts.append(self._judge_dns(app, observation, t0, figures))
        if observation.replication:
            figures["replication_at_t0"] = [lag.to_dict() for lag in observation.replication]
            figures["replication_read_before_t0_s"] = t0 - (observation.replication_read_at or t0)
        if survivor is not None:
            verdicts.append(self._judge_rpo(app, survivor, t0, figures))
        verdicts += self._judge_promql(app, observation.start, observation.end, t0, result, figures)
        self.figures[app.name] = figures
        self.verdicts += verdicts
        return verdicts

    def judge_isolation(self, app: App, steps: Sequence[isolation.Step]) -> list[Verdict]:
        """Prod's objectives while every non-prod cluster was faulted (`steps`, harness.isolation), from the
        probes between the first fault and the end of observing."""
        self._pause(f"next: the verdicts of {app.name}")
        observation, interval = self.observations[app.name], 1 / self.settings.probe_rate_hz
        gap_factor = max(3.0, self.settings.max_probe_gap_s / interval)
        verdicts, figures = isolation.judge(
            self.fleet, app, observation.samples, steps, observation.end, interval, gap_factor
        )
        self.figures[app.name] = figures
        self.verdicts += verdicts
        return verdicts

    def judge_burst(
        self,
        app: App,
        primary: str,
        t0: float,
        full: burst.Full | burst.Capped,
        dropped: float,
        load: Sequence[Request],
        absent_from: dict[str, str],
    ) -> list[Verdict]:
        """A burst from t0 (the load began) to `dropped` (it stopped), `full` the proof that the primary
        filled: the time until another cluster served the excess (spill), availability and p99 latency of
        the global endpoint during the burst, and the primary alone again after it (return), each against
        the app's objective (an error verdict naming the field the fleet file does not set). An autoscaler
        capped below the load (burst.Capped) fails it: the primary never filled."""
        self._pause(f"next: the verdicts of {app.name}")
        if isinstance(full, burst.Capped):
            verdict = Verdict(
                "fail", "spill", f"{primary} full (pods Pending)", "autoscaler capped", str(full), {}
            )
            self.verdicts.append(verdict)
            return [verdict]
        observation = self.observations[app.name]
        samples, latency = observation.samples[GLOBAL], app.objectives.latency
        interval = 1 / self.settings.probe_rate_hz
        gap_factor = max(3.0, self.settings.max_probe_gap_s / interval)
        missed = observation.missed.get(GLOBAL, ())
        during = measure.check_coverage(samples, t0, dropped, interval, gap_factor, missed=missed)
        after = measure.check_coverage(samples, dropped, observation.end, interval, gap_factor, missed=missed)
        burst_samples = [s for s in samples if t0 <= s.sent < dropped]
        verdicts = [
            self._against(
                app,
                "spill",
                "spill",
                lambda goal: burst.judge_spill(samples, primary, t0, full, goal, during, absent_from),
            ),
            self._against(
                app,
                "availability",
                "availability",
                lambda goal: measure.judge_availability(burst_samples, goal, during, latency),
            ),
            self._against(
                app,
                "latency",
                "p99 latency",
                lambda goal: measure.judge_latency(burst_samples, 99, goal, during),
            ),
            self._against(
                app,
                "spill_return",
                "return",
                lambda goal: burst.judge_return(samples, primary, dropped, goal, after, latency),
            ),
        ]
        failed = [r for r in load if r.status is None or r.status >= 500]
        self.figures[app.name] = {
            "spill_s": next((v.moments["spill"] - t0 for v in verdicts if v.moments.get("spill")), None),
            "full_after_s": full.at - t0,
            "pending_pods": list(full.pending),
            "unschedulable": full.why,
            "autoscaler": full.autoscaler.describe(),
            "availability": measure.availability(burst_samples, latency_bound=latency),
            "latency_s": measure.latency_percentiles(burst_samples),
            "probes": len(burst_samples),
            "return_s": next(
                (v.moments["returned"] - dropped for v in verdicts if v.moments.get("returned")), None
            ),
            "load": {
                "requests": len(load),
                "failed": len(failed),
                "seconds": dropped - t0,
                "served_by": burst.by_cluster(load, lambda r: (r.served_by or r.error or "?").split("/")[0]),
            },
        }
        self.verdicts += verdicts
        return verdicts

    def _judge_dns(
        self, app: App, observation: Observation, t0: float, figures: dict[str, object]
    ) -> Verdict:
        """The RTO of the app's global name, split into the phases of a DNS failover (dnsphases.py) and
        judged against the RTO objective; its figures go to figures["dns"]."""
        assert app.dns is not None
        name = _global_name(app)[0]
        samples = observation.samples.get(name, [])
        result = measure.rto(
            samples, t0, self.settings.stable_count, self.settings.stable_seconds, app.objectives.latency
        )
        settings = app.dns
        split = split_dns(
            observation.dns,
            samples,
            t0,
            result.recovery_start,
            settings.health_interval,
            settings.failure_threshold,
            observation.end,
        )
        figures["dns"] = {
            "target": name,
            "rto_s": result.rto,
            "answers": len(observation.dns),
        } | split.to_dict()
        return judge_dns(split, result.rto, app.objectives.rto)

    def judge_restore(
        self, app: App, t0: float, point: BackupPoint, proxy: ServiceProxy, cluster: str
    ) -> list[Verdict]:
        """The app restored beside the original in `cluster`: RTO from t0 to its stable answers
        (observe_restored), and the data it holds against the backup point (the sentinel's writes read back
        from the restored copy, through the proxy for the http adapter).
        Without an RTO objective in the fleet file, RTO is an error verdict."""
        self._pause(f"next: the verdicts of {app.name}")
        observation = self.observations[app.name]
        samples = observation.samples[RESTORED]
        interval = 1 / self._restored_rate_hz()
        gap_factor = max(3.0, self.settings.max_probe_gap_s / interval)
        end = max((s.sent for s in samples), default=t0)
        missed = observation.missed.get(RESTORED, ())
        coverage = measure.check_coverage(samples, t0, end, interval, gap_factor, missed=missed)
        result = measure.rto(samples, t0, self.settings.stable_count, self.settings.stable_seconds)
        verdicts = [self._against(app, "rto", "RTO", lambda goal: measure.judge_rto(result, goal, coverage))]
        figures: dict[str, object] = {
            "rto_s": result.rto,
            "rto_outcome": result.outcome,
            "backup": point.name,
            "backup_window_s": [point.started - t0, point.completed - t0],
            "backup_hooks": point.hooks_attempted,
            "probes": len(samples),
            "writes": len(observation.writes),
            "rto_phases": measure.rto_phases(self.timeline.events(), t0, t0 + (result.rto or 0)).to_dict(),
        }
        verdicts.append(
            self._judge_restored_data(app, self._restored_where(proxy, cluster), t0, point, figures)
        )
        verdicts += self._judge_promql(app, observation.start, end, t0, result, figures)
        self.figures[app.name] = figures
        self.verdicts += verdicts
        return verdicts

    def _judge_promql(
        self, app: App, start: float, end: float, t0: float, result: RtoResult, figures: dict[str, object]
    ) -> list[Verdict]:
        """The app's PromQL objectives over the drill window (or from the measured recovery on), their raw
        series kept for the record; figures["promql"] lists what each measured."""
        if not app.objectives.promql:
            return []
        recovery = None if result.rto is None else t0 + result.rto
        why = f"the recovery was not measured (RTO outcome {result.outcome})"
        done = evaluate(self.fleet, app, self.prometheus, Windows(start, end, t0, recovery, why))
        self.timeline.record("promql.settled", detail={"app": app.name, "waited_s": round(done.settled_s, 2)})
        self.metric_series += done.series
        figures["promql"] = done.figures
        return done.verdicts

    def _against(self, app: App, field: str, objective: str, judge: Callable[[float], Verdict]) -> Verdict:
        """`judge` against the app's objective `field`; an error verdict naming the field (apps[N].objectives
        .FIELD) when the fleet file does not set it: an objective the drill judges is never skipped."""
        goal = getattr(app.objectives, field)
        if goal is not None:
            return judge(goal)
        where = self._field(app, f"objectives.{field}")
        why = f"{objective} not judged: the fleet file of fleet {self.fleet.name} does not set {where}"
        return Verdict("error", objective, f"{where} set", "no objective", why, {})

    def _judge_rpo(self, app: App, survivor: str, t0: float, figures: dict[str, object]) -> Verdict:
        """RPO of the data failed over to `survivor`, read back from it; an error verdict when it cannot be
        read (a failed read is never a loss, nor a pass)."""
        observation = self.observations[app.name]
        try:
            where = self._where(app, survivor)
            present = self._store(app).present(where, observation.seq_base - 1, observation.stream)
        except FleetDrillError as error:
            why = f"RPO not judged: the data on {survivor} could not be read: {error}"
            return Verdict("error", "RPO", f"the data on {survivor} read back", "no data", why, {})
        loss = measure.rpo(observation.writes, present, t0)
        figures |= {"rpo_s": loss.rpo, "lost_writes": loss.lost_count, "lost_ids": list(loss.lost)}
        quiet_s = self.settings.max_quiet_s
        verdict = self._against(
            app, "rpo", "RPO", lambda goal: measure.judge_rpo(loss, goal, max_quiet_s=quiet_s)
        )
        if not observation.replication:
            return verdict
        lags = "; ".join(lag.describe() for lag in observation.replication)
        return replace(verdict, message=f"{verdict.message}; replication lag at t0: {lags}")

    def _judge_restored_data(
        self, app: App, restored: Where, t0: float, point: BackupPoint, figures: dict[str, object]
    ) -> Verdict:
        """The restored data against the backup point; an error verdict when it cannot be read."""
        observation = self.observations[app.name]
        try:
            present = self._store(app).present(restored, observation.seq_base - 1, observation.stream)
        except FleetDrillError as error:
            objective = "RPO at the backup point"
            why = f"{objective} not judged: the restored app's data could not be read: {error}"
            return Verdict("error", objective, "the restored data read back", "no data", why, {})
        loss = measure.rpo(observation.writes, present, t0)
        figures |= {"rpo_s": loss.rpo, "lost_writes": loss.lost_count, "lost_ids": list(loss.lost)}
        return measure.judge_backup_point(loss, observation.writes, present, point.started, point.completed)


def _global_name(app: App) -> tuple[str, str]:
    """The probe target of apps[].dns.name and its URL: the global endpoint's own when it names that host,
    else the global endpoint's URL with the name as its host."""
    assert app.dns is not None
    url = app.global_endpoint or f"http://{app.dns.name}/"
    parts = urlsplit(url)
    if parts.hostname == app.dns.name:
        return GLOBAL, url
    netloc = app.dns.name + (f":{parts.port}" if parts.port else "")
    return GLOBAL_NAME, urlunsplit(parts._replace(netloc=netloc))


def probe_timeout(latency: float | None, floor_s: float = DrillSettings.probe_timeout_s) -> float:
    """When probes give up: floor_s, or twice the latency objective when that is longer. The objective only
    judges the answers; were probes given up at it, no answer could be slower than it and p99 latency could
    never fail."""
    return floor_s if latency is None else max(floor_s, 2 * latency)
