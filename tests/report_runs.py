"""Drill records for the report tests, made by the harness's own code from a scripted cluster loss.

The drill is scripted (probe samples, sentinel writes and timeline events at chosen times), everything else
is real: Drill.judge measures it and record.write writes it, exactly as in a drill run. Scenario: the
primary (us-east) is lost at t0; the global endpoint fails from t0 + 0.3 s until traffic reaches eu-west at
t0 + outage_s; the passive kept every write acknowledged until t0 - lag_s.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import load_fleet
from harness.drill import GLOBAL, Drill, DrillSettings, Observation
from harness.machine import MachineLoad
from harness.report import record
from harness.samples import ProbeSample, SentinelWrite
from harness.sentinels import HttpStore
from harness.timeline import Event, Timeline

FLEET = """
name: reports-unit
kubeconfig: kubeconfig
clusters:
  - {name: us-east, region: us-east, role: active}
  - {name: eu-west, region: eu-west, role: passive}
apps:
  - name: orders
    namespace: orders
    workload: deployment/orders
    global_endpoint: http://192.0.2.10/
    endpoints: {us-east: "http://192.0.2.11/", eu-west: "http://192.0.2.12/"}
    sentinels: {adapter: http, write: {path: /orders}, read: {path: /orders, items: orders}}
    health_path: /readyz
    objectives: {rto: 20s, rpo: 5s, availability: 0.8, latency: 1s}
"""
TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZHJpbGwifQ.c2lnbmF0dXJl"
)
T0 = 1000.0
RATE_HZ = 10.0


@dataclass(frozen=True)
class Scenario:
    """What the scripted cluster loss looks like."""

    outage_s: float = 3.0
    lag_s: float = 1.2
    before_s: float = 5.0
    after_s: float = 12.0
    wall_start: float = 1_790_000_000.0
    message: str = ""
    title: str = "Active-passive: lose the primary cluster"
    runner: MachineLoad | None = None


def _events(s: Scenario) -> list[Event]:
    fault = {"id": "f1", "kind": "cluster-loss", "targets": ["us-east"], "params": {}}

    def at(name: str, t: float, cluster: str | None = None, **detail: object) -> Event:
        return Event(name, T0 + t, s.wall_start + s.before_s + t, cluster, dict(detail))

    return [
        at("probes.started", -s.before_s, app="orders"),
        at("steady.checked", -0.5, "us-east", ok=True),
        at("fault.injected", 0.0, "us-east", **fault),
        at("promote.start", 0.5, "eu-west"),
        at("promote.end", 1.5, "eu-west", outcome="ok"),
        at("traffic switch.start", 1.5, "eu-west"),
        at("traffic switch.end", s.outage_s - 0.5, "eu-west", outcome="ok"),
        at("first good request.start", s.outage_s - 0.5, "eu-west"),
        at("first good request.end", s.outage_s + 1.0, "eu-west", outcome="ok"),
        at("soak.start", s.outage_s + 1.0),
        at("soak.end", s.after_s - 1.0, outcome="ok"),
        at("probes.stopped", s.after_s, app="orders"),
        at("fault.reverted", s.after_s + 0.5, "us-east", **fault),
    ]


def _samples(s: Scenario) -> dict[str, list[ProbeSample]]:
    series: dict[str, list[ProbeSample]] = {GLOBAL: [], "us-east": [], "eu-west": []}
    steps = int((s.before_s + s.after_s) * RATE_HZ)
    for i in range(steps):
        sent = T0 - s.before_s + i / RATE_HZ
        since = sent - T0
        down = 0.3 <= since < s.outage_s
        origin = "us-east" if since < 0.3 else "eu-west"
        series[GLOBAL].append(
            ProbeSample.of(GLOBAL, sent, sent + 1.0, ok=False, error="timed out")
            if down
            else ProbeSample.of(GLOBAL, sent, sent + 0.012, status=200, served_by=f"{origin}/orders-1")
        )
        lost = since >= 0.3
        series["us-east"].append(
            ProbeSample.of("us-east", sent, sent + 0.001, ok=False, error="connection refused")
            if lost
            else ProbeSample.of("us-east", sent, sent + 0.008, status=200, served_by="us-east/orders-1")
        )
        series["eu-west"].append(
            ProbeSample.of("eu-west", sent, sent + 0.009, status=200, served_by="eu-west/x")
        )
    return series


def write_run(
    report_dir: Path, run_id: str, monkeypatch: pytest.MonkeyPatch, scenario: Scenario = Scenario()
) -> Path:
    """A run folder holding one drill record of the scripted scenario; returns the drill's folder."""
    fleet_file = report_dir / f"{run_id}.fleet.yaml"
    report_dir.mkdir(parents=True, exist_ok=True)
    fleet_file.write_text(FLEET)
    fleet = load_fleet(fleet_file)
    fleet_file.unlink()
    app = fleet.app("orders")
    settings = DrillSettings(probe_rate_hz=RATE_HZ, stable_count=5, stable_seconds=1.0)
    timeline = Timeline(events=_events(scenario))
    drill = Drill("test_lose_the_primary_cluster", fleet, None, None, timeline, settings)  # type: ignore[arg-type]
    acks = [
        (seq, T0 - scenario.before_s + seq * 0.2)
        for seq in range(1, int((scenario.before_s + scenario.after_s) / 0.2))
    ]
    writes = [SentinelWrite(seq, t, "acked", t) for seq, t in acks]
    drill.observations["orders"] = Observation(
        app,
        samples=_samples(scenario),
        writes=writes,
        stream="s1",
        seq_base=1,
        start=T0 - scenario.before_s,
        end=T0 + scenario.after_s,
    )
    kept = {w.seq for w in writes if w.acked_at is not None and w.acked_at <= T0 - scenario.lag_s}
    kept |= {w.seq for w in writes if w.acked_at is not None and w.acked_at > T0}  # written after failover
    monkeypatch.setattr(HttpStore, "present", lambda *_args, **_kw: kept)
    verdicts = drill.judge(app, T0, survivor="eu-west")
    outcome = "passed" if all(v.status == "pass" for v in verdicts) else "failed"
    folder = report_dir / run_id / "test_lose_the_primary_cluster"
    record.write(drill, folder, run_id, outcome, scenario.message, scenario.title, scenario.runner)
    return folder
