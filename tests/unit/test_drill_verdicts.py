"""Drill verdicts that must never pass: an objective judged but not set, unreadable data, no verdict at all;
and the outcome a drill's record keeps (record.overall, record.conclude)."""

import time
from pathlib import Path

import pytest

from harness.auth import ClusterAuth
from harness.config import load_fleet
from harness.drill import GLOBAL, RESTORED, Drill, DrillSettings, Observation
from harness.errors import FleetDrillError
from harness.failover import BackupHooksFailed, BackupPoint
from harness.fleet import service_proxy
from harness.report import record
from harness.samples import ProbeSample, Verdict
from harness.sentinels import HttpStore
from harness.timeline import Timeline
from tests.unit.test_auth import write_kubeconfig

FLEET = """
name: verdicts
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active}
  - {name: west, region: eu-west, role: passive}
apps:
  - name: judged
    namespace: judged
    workload: deployment/judged
    global_endpoint: http://192.0.2.10/
    endpoints: {east: "http://192.0.2.11/", west: "http://192.0.2.12/"}
    sentinels: &orders {adapter: http, write: {path: /orders}, read: {path: /orders, items: orders}}
    objectives: {rto: 20s, rpo: 5s, availability: 0.8, latency: 1s}
  - name: unset
    namespace: unset
    workload: deployment/unset
    global_endpoint: http://192.0.2.20/
    endpoints: {east: "http://192.0.2.21/", west: "http://192.0.2.22/"}
    sentinels: *orders
  - name: nodata
    namespace: nodata
    workload: deployment/nodata
    endpoints: {east: "http://192.0.2.31/", west: "http://192.0.2.32/"}
    objectives: {rto: 20s, rpo: 5s}
"""
T0, RATE_HZ = 100.0, 10.0


@pytest.fixture
def drill(tmp_path: Path) -> Drill:
    """A drill with no fleet behind it (access and faults are never used): only what it measured."""
    (tmp_path / "fleet.yaml").write_text(FLEET)
    settings = DrillSettings(probe_rate_hz=RATE_HZ, stable_count=5, stable_seconds=1.0)
    return Drill("test_verdicts", load_fleet(tmp_path / "fleet.yaml"), None, None, Timeline(), settings)  # type: ignore[arg-type]


def probes(target: str, down: tuple[float, float] = (T0 + 0.5, T0 + 2.0)) -> list[ProbeSample]:
    """One probe every 1/RATE_HZ s from T0 - 5 s to T0 + 10 s, failing while `down`."""
    found = []
    for i in range(int(15 * RATE_HZ)):
        sent = T0 - 5 + i / RATE_HZ
        failed = down[0] <= sent < down[1]
        found.append(
            ProbeSample.of(target, sent, sent + 1.0, ok=False, error="timed out")
            if failed
            else ProbeSample.of(target, sent, sent + 0.01, status=200)
        )
    return found


def observed(drill: Drill, name: str, target: str = GLOBAL) -> None:
    app = drill.app(name)
    drill.observations[name] = Observation(app, {target: probes(target)}, start=T0 - 5, end=T0 + 10)


def by_objective(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.objective: v for v in verdicts}


def test_every_objective_judged_but_not_set_is_an_error_naming_its_field(
    drill: Drill, monkeypatch: pytest.MonkeyPatch
) -> None:
    observed(drill, "unset")
    monkeypatch.setattr(HttpStore, "present", lambda *_args, **_kw: set())
    verdicts = by_objective(drill.judge(drill.app("unset"), T0, survivor="west", latency_percentile=99))
    fields = {"RTO": "rto", "availability": "availability", "p99 latency": "latency", "RPO": "rpo"}
    assert verdicts.keys() == fields.keys()
    for objective, field in fields.items():
        verdict = verdicts[objective]
        assert verdict.status == "error", verdict
        assert f"apps[1].objectives.{field}" in verdict.message, verdict.message
    assert drill.verdicts == list(verdicts.values()), "kept on the drill, so they reach its record"
    assert drill.figures["unset"]["rto_s"] == pytest.approx(2.0), "the figures are measured all the same"


def test_objectives_set_are_judged_from_what_was_measured(drill: Drill) -> None:
    observed(drill, "judged")
    verdicts = by_objective(drill.judge(drill.app("judged"), T0, latency_percentile=50))
    assert {name: v.status for name, v in verdicts.items()} == {
        "RTO": "pass",
        "availability": "pass",
        "p50 latency": "pass",
    }


def test_an_rto_the_fleet_file_does_not_set_is_an_error_in_a_restore_too(
    drill: Drill, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    observed(drill, "unset", RESTORED)
    monkeypatch.setattr(HttpStore, "present", lambda *_args, **_kw: set())
    auth = ClusterAuth(write_kubeconfig(tmp_path, "https://192.0.2.1", {"token": "t"}))
    proxy = service_proxy(auth, "x", "unset", "http")  # nothing is sent: its store is patched
    point = BackupPoint("unset-drill", T0 - 4, T0 - 3)
    rto = by_objective(drill.judge_restore(drill.app("unset"), T0, point, proxy, "west"))["RTO"]
    assert rto.status == "error" and "apps[1].objectives.rto" in rto.message, rto


def test_a_backup_whose_hooks_failed_is_a_failed_objective_naming_them(drill: Drill) -> None:
    failure = BackupHooksFailed("backup b in east: 1 of 2 backup hooks failed: pre hook [psql] ...", 2, 1)
    verdict = drill.backup_hooks_failed(drill.app("judged"), failure)
    assert (verdict.status, verdict.objective, verdict.measured) == ("fail", "backup hooks", "1 of 2 failed")
    assert "pre hook [psql]" in verdict.message and verdict in drill.verdicts


def test_the_restored_data_is_waited_for_until_it_can_be_read_and_no_longer(
    drill: Drill, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A restored database still recovering refuses reads: the drill waits, within its deadline."""
    observed(drill, "judged", RESTORED)
    answers = iter([FleetDrillError("the database system is starting up"), set()])

    def recovering(*_args: object, **_kw: object) -> set[int]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(HttpStore, "present", recovering)
    auth = ClusterAuth(write_kubeconfig(tmp_path, "https://192.0.2.1", {"token": "t"}))
    proxy = service_proxy(auth, "x", "judged", "http")
    drill.wait_restored_data(drill.app("judged"), proxy, "west", 10)
    assert next(answers, "read twice") == "read twice"
    observed(drill, "nodata", RESTORED)
    started = time.monotonic()
    drill.wait_restored_data(drill.app("nodata"), proxy, "west", 10)  # no sentinels: nothing to wait for
    assert time.monotonic() - started < 1


def test_survivor_data_that_cannot_be_read_is_an_rpo_error_not_a_crash(
    drill: Drill, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*_args: object, **_kw: object) -> set[int]:
        raise FleetDrillError("GET http://192.0.2.12/orders: connection refused")

    observed(drill, "judged")
    monkeypatch.setattr(HttpStore, "present", unreadable)
    verdicts = by_objective(drill.judge(drill.app("judged"), T0, survivor="west"))
    assert verdicts["RPO"].status == "error" and "connection refused" in verdicts["RPO"].message
    assert verdicts["RTO"].status == "pass", "the other verdicts are kept"


def test_an_app_without_sentinels_has_its_rpo_judged_as_an_error_naming_the_field(drill: Drill) -> None:
    observed(drill, "nodata")
    verdicts = by_objective(drill.judge(drill.app("nodata"), T0, survivor="west"))
    assert verdicts["RPO"].status == "error", verdicts["RPO"]
    assert (
        "declares no sentinels" in verdicts["RPO"].message and "apps[2].sentinels" in verdicts["RPO"].message
    )


PASS = Verdict("pass", "RTO", "<= 20 s", "2 s", "RTO 2 s within objective 20 s", {})
FAIL = Verdict("fail", "RTO", "<= 20 s", "35 s", "RTO 35 s exceeds objective 20 s", {})
ERROR = Verdict("error", "RTO", "apps[0].objectives.rto set", "no objective", "RTO not judged: ...", {})


@pytest.mark.parametrize(
    ("verdicts", "called", "teardown", "outcome", "verdict"),
    [
        ([PASS], "passed", "", "passed", "pass"),
        ([FAIL], "passed", "", "failed", "fail"),  # the test forgot to assert: the plugin fails it
        ([ERROR, PASS], "passed", "", "failed", "error"),
        ([], "passed", "", "failed", "error"),  # no verdict
        ([], "skipped", "", "skipped", "skip"),
        ([FAIL], "skipped", "", "failed", "fail"),
        ([FAIL], "failed", "", "failed", "fail"),
        ([PASS], "failed", "", "failed", "fail"),  # failed after its verdicts
        ([PASS], "error", "", "error", "error"),  # e.g. the fail-back raised
        ([], "failed", "", "failed", "error"),  # e.g. no steady state: nothing judged
        ([PASS], "passed", "RevertError: cluster-loss on east: revert failed", "error", "error"),
    ],
)
def test_the_recorded_outcome_combines_the_call_the_verdicts_and_the_teardown(
    drill: Drill, verdicts: list[Verdict], called: str, teardown: str, outcome: str, verdict: str
) -> None:
    drill.verdicts += verdicts
    got, message = record.conclude(drill, called, "", teardown)
    assert (got, record.overall(drill, got)) == (outcome, verdict)
    if teardown:
        assert message == f"teardown: {teardown}"
    elif not verdicts and called != "skipped":
        assert message == record.NO_VERDICT
    elif outcome != called:
        assert message == "; ".join(v.message for v in verdicts if v.status != "pass")


class LiveProbes:
    """What a running Prober answers for samples(target): the series given, sent just now."""

    def __init__(self, series: list[ProbeSample]) -> None:
        self.series = series

    def samples(self, target: str) -> list[ProbeSample]:
        return self.series


def test_the_steady_state_is_what_one_look_saw(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> None:
    """Healthy at the end of the hold is steady, though a second look a moment later would not see it so
    (the probes' live view lags); unhealthy to the end is not steady, and the timeline says what was not."""
    app = drill.app("nodata")
    looks = iter([True, True, False])
    monkeypatch.setattr(drill, "served_by", lambda *_: next(looks))
    monkeypatch.setattr(drill, "writes_acked", lambda _: True)
    assert drill.steady(app, "east", hold_s=0.0, deadline_s=1.0)
    monkeypatch.setattr(drill, "served_by", lambda *_: False)
    assert not drill.steady(app, "east", hold_s=0.0, deadline_s=0.1)
    checked = drill.timeline.events("steady.checked")
    assert [e.detail for e in checked] == [
        {"served": True, "writes acked": True, "ok": True},
        {"served": False, "writes acked": True, "ok": False},
    ]


def test_answers_slower_than_the_window_still_show_the_app_served(drill: Drill) -> None:
    """On a busy runner every answer may take longer than stable_seconds (1 s, within the probe's
    timeout): the probes that completed in the last second count, though none of them was sent in it."""
    now, app = time.monotonic(), drill.app("nodata")
    slow = [ProbeSample.of(GLOBAL, now - 2.0 + i / 40, now - 0.8 + i / 40, status=200) for i in range(30)]
    drill._live["nodata"] = LiveProbes(slow)  # type: ignore[assignment]
    assert drill.served_by(app)
    assert drill.why_not_steady(app) == "it is healthy now"
    failed = "timeout: no response within 2 s"
    hanging = [
        ProbeSample.of(GLOBAL, now - 2.5 + i / 40, now - 0.5 + i / 40, ok=False, error=failed)
        for i in range(20)
    ]
    drill._live["nodata"] = LiveProbes(slow[:10] + hanging)  # type: ignore[assignment]
    assert not drill.served_by(app)
    assert drill.why_not_steady(app) == f"20 of 30 global probes in the last 1 s: {failed}"


def test_a_steady_state_that_does_not_hold_says_what_the_probes_answered_instead(drill: Drill) -> None:
    now = time.monotonic()
    not_found = "status: HTTP 404 not an accepted status (accepted: 2xx)"
    series = [
        ProbeSample.of(
            GLOBAL, now - 0.5 + i / 100, now - 0.49 + i / 100, ok=False, status=404, error=not_found
        )
        for i in range(30)
    ]
    series += [ProbeSample.of(GLOBAL, now - 0.1, now - 0.09, status=200, served_by="west/pod-1")]
    drill._live["nodata"] = LiveProbes(series)  # type: ignore[assignment]
    said = drill.why_not_steady(drill.app("nodata"), "east")
    assert said == (
        f"30 of 31 global probes in the last 1 s: {not_found}; 1 of 31 global probes in the last 1 s: "
        "served by west, not east"
    ), said
    drill._live["nodata"] = LiveProbes([])  # type: ignore[assignment]
    assert drill.why_not_steady(drill.app("nodata")) == "no global probes in the last 1 s"
