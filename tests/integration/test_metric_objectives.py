"""PromQL objectives, metric aborts, doctor's checks and authentication against a real Prometheus (the
fleet's, built from its Go module: a process of this module on an ephemeral port, TLS and basic auth),
scraping a real exporter the test serves with prometheus_client. No fleet: each case breaks the metrics,
not a cluster, and the verdict names the cause."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from harness.config import Fleet, Prometheus
from harness.faults import FaultStack, KubeContext, Ledger
from harness.gate import soak_checks
from harness.promabort import abort_checks
from harness.prometheus import PrometheusClient, PrometheusError, Prometheuses
from harness.promready import readiness
from harness.promslo import Windows, evaluate
from harness.safety import AbortMonitor, DrillAborted
from harness.timeline import Timeline
from tests.conftest import wait_for
from tests.fakefaults import FileFault
from tests.promserver import PASSWORD, Server, running_prometheus

PASSWORD_ENV = "FLEETDRILL_TEST_PROM_PASSWORD"
RULES = {
    "groups": [
        {
            "name": "drill",
            "rules": [
                {"alert": "DrillErrorsHigh", "expr": 'drill_error_ratio{app="burning"} > 0.3', "for": "2s"}
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="module")
def ratio(registry: CollectorRegistry) -> Gauge:
    """The apps' error ratios, for a test to change."""
    return Gauge("drill_error_ratio", "errors over requests", ["app"], registry=registry)


@pytest.fixture(scope="module")
def exporter(registry: CollectorRegistry, ratio: Gauge) -> Iterator[str]:
    """An app's metrics: a calm app's error ratio 0.01, a burning app's 0.5, and request counts."""
    ratio.labels("calm").set(0.01)
    ratio.labels("burning").set(0.5)
    Counter("drill_requests", "requests served", ["code"], registry=registry).labels("200").inc(10)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, exporter: str) -> Iterator[Server]:
    """The real Prometheus, answering once it has scraped the exporter twice."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PASSWORD_ENV, PASSWORD)
        with running_prometheus(tmp_path_factory.mktemp("prometheus"), [exporter], RULES) as server:
            client = PrometheusClient(settings(server), "fleet")
            wait_for(lambda: _scraped(client, 2), 30, "Prometheus to scrape the exporter twice", 0.2)
            yield server


@pytest.fixture(scope="module")
def federating(tmp_path_factory: pytest.TempPathFactory, prometheus: Server) -> Iterator[Server]:
    """A fleet-wide Prometheus federating `prometheus` (the cluster's) every second."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PASSWORD_ENV, PASSWORD)
        with running_prometheus(
            tmp_path_factory.mktemp("fleetwide"), [], {}, federating=prometheus
        ) as server:
            yield server


def _scraped(client: PrometheusClient, times: int) -> bool:
    try:
        found = client.query('count_over_time(up{job="app"}[1m])')
    except PrometheusError:
        return False
    return bool(found) and found[0].points[0][1] >= times


def settings(server: Server, **changes: Any) -> Prometheus:
    fields = {"url": server.url, "ca_file": server.ca_file, "username": "drill", "password_env": PASSWORD_ENV}
    return Prometheus.model_validate(fields | changes)


def fleet(
    server: Server,
    objectives: list[dict[str, Any]],
    abort: dict[str, Any] | None = None,
    fleetwide: Server | None = None,
) -> Fleet:
    """A fleet of one cluster whose Prometheus is `server`, the fleet-wide one too unless `fleetwide`."""
    prom = settings(server).model_dump(mode="json", exclude_none=True)
    document: dict[str, Any] = {
        "name": "metrics",
        "clusters": [{"name": "local", "region": "here", "role": "active", "prometheus": prom}],
        "prometheus": settings(fleetwide).model_dump(mode="json", exclude_none=True) if fleetwide else prom,
        "apps": [
            {
                "name": "shop",
                "namespace": "shop",
                "workload": "deployment/shop",
                "objectives": {"promql": objectives},
            }
        ],
    }
    if abort is not None:
        document["safety"] = {"abort": abort}
    return Fleet.model_validate(document)


def objective(name: str, query: str, comparison: str, bound: float, **more: Any) -> dict[str, Any]:
    return {"name": name, "query": query, "comparison": comparison, "bound": bound} | more


def judged(found: Fleet, seconds: float = 3.0) -> Any:
    """The app's PromQL objectives over the last `seconds` (t0 at their start)."""
    now = time.monotonic()
    clients = Prometheuses(found)
    return evaluate(found, found.apps[0], clients, Windows(now - seconds, now, now - seconds, now - seconds))


def test_an_objective_that_holds_passes_and_keeps_its_series(prometheus: Server) -> None:
    goal = objective("errors", 'drill_error_ratio{app="calm"}', "<", 0.05, scope="cluster", slo_target=0.9)
    done = judged(fleet(prometheus, [goal]))
    (verdict,) = done.verdicts
    assert verdict.status == "pass", verdict.message
    assert verdict.objective == "PromQL errors on local" and verdict.measured == "0.01 at worst"
    (series,) = done.series
    assert series.labels["app"] == "calm" and len(series.points) >= 2
    assert done.figures[0]["burn_rate"] == pytest.approx(0.1)  # 1% errors against a 10% budget


def test_an_objective_the_metrics_break_fails_naming_the_query_and_value(prometheus: Server) -> None:
    goal = objective("errors", 'drill_error_ratio{app="burning"}', "<", 0.05, window="recovery")
    (verdict,) = judged(fleet(prometheus, [goal])).verdicts
    assert verdict.status == "fail"
    assert verdict.message.startswith('PromQL errors: drill_error_ratio{app="burning"} was 0.5 at t0+'), (
        verdict.message
    )
    assert "expected < 0.05 throughout the recovery window" in verdict.message


def test_a_federated_window_is_judged_once_its_last_samples_crossed_the_hop(
    prometheus: Server, federating: Server, ratio: Gauge
) -> None:
    """The app breaks as the window ends: the cluster's Prometheus has scraped it, the fleet-wide one that
    federates it not yet. The verdict waits for that hop (the steps at the window's end would otherwise
    read the lookback's value from before), and fails."""
    late = 'drill_error_ratio{app="late"}'
    ratio.labels("late").set(0.01)
    cluster, fleetwide = (PrometheusClient(settings(s), "fleet") for s in (prometheus, federating))
    wait_for(
        lambda: _value(fleetwide, late) == 0.01, 30, "the late app's ratio to reach the fleet-wide one", 0.1
    )
    ratio.labels("late").set(0.5)
    wait_for(lambda: _value(cluster, late) == 0.5, 30, "the cluster's Prometheus to scrape the change", 0.05)
    done = judged(fleet(prometheus, [objective("errors", late, "<", 0.05)], fleetwide=federating))
    (verdict,) = done.verdicts
    assert verdict.status == "fail" and f"{late} was 0.5 at t0+" in verdict.message, verdict.message
    assert 0 < done.settled_s <= 30


def _value(client: PrometheusClient, query: str) -> float | None:
    """The query's value now; None before the server answers or has it."""
    try:
        found = client.query(query)
    except PrometheusError:
        return None
    return found[0].points[-1][1] if found else None


def test_a_query_without_data_is_an_error_never_a_pass(prometheus: Server) -> None:
    goal = objective("errors", "drill_error_ratio_that_nobody_exports", "<", 0.05)
    (verdict,) = judged(fleet(prometheus, [goal])).verdicts
    assert verdict.status == "error" and verdict.measured == "no data"
    assert verdict.message == (
        "PromQL errors not judged: drill_error_ratio_that_nobody_exports gave no data: the query returned "
        "no series in the window"
    )
    bad_regex = 'label_replace(drill_error_ratio, "to", "$1", "app", "(")'  # parses; Prometheus refuses it
    (verdict,) = judged(fleet(prometheus, [objective("errors", bad_regex, "<", 0.05)])).verdicts
    assert verdict.status == "error" and "/api/v1/query_range: HTTP 4" in verdict.message, verdict.message
    assert "invalid regular expression" in verdict.message, "Prometheus' own reason is quoted"


def test_a_firing_alert_aborts_the_drill_and_its_fault_is_reverted(
    prometheus: Server, tmp_path: Path
) -> None:
    found = fleet(prometheus, [], abort={"alerts": [{"alert": "DrillErrorsHigh"}]})
    assert found.safety.abort is not None
    timeline = Timeline()
    ledger = Ledger(tmp_path / "ledger.json")
    stack = FaultStack(KubeContext(), ledger, timeline, "run-1")
    checks = abort_checks(found.safety.abort, Prometheuses(found))
    with (
        pytest.raises(
            DrillAborted, match=r"alert DrillErrorsHigh is firing on Prometheus fleet \(app=\"burning\""
        ),
        stack,
        AbortMonitor(checks, timeline, interval_s=0.2),
        stack.applied(FileFault(str(tmp_path), targets=("local",))),
    ):
        wait_for(lambda: False, 30, "the alert to fire and abort the drill")
    assert not (tmp_path / "local").exists() and ledger.entries() == []
    assert [e.name for e in timeline.events()][-2:] == ["drill.aborted", "fault.reverted"]


def test_a_promql_condition_aborts_and_a_calm_one_does_not(prometheus: Server) -> None:
    rule = {"promql": [{"name": "calm", "query": 'drill_error_ratio{app="calm"}', "above": 0.3}]}
    calm = fleet(prometheus, [], abort=rule)
    assert calm.safety.abort is not None
    monitor = AbortMonitor(abort_checks(calm.safety.abort, Prometheuses(calm)), Timeline())
    assert monitor.check() is None
    rule["promql"].append({"name": "burning", "query": 'drill_error_ratio{app="burning"}', "above": 0.3})
    burning = fleet(prometheus, [], abort=rule)
    assert burning.safety.abort is not None
    monitor = AbortMonitor(abort_checks(burning.safety.abort, Prometheuses(burning)), Timeline())
    assert monitor.check() == (
        'safety.abort.promql burning: drill_error_ratio{app="burning"} was 0.5 '
        '{__name__="drill_error_ratio", app="burning", instance="' + monitor_instance(burning) + '", '
        'job="app"} on Prometheus fleet, above 0.3'
    )


def monitor_instance(found: Fleet) -> str:
    (series,) = Prometheuses(found).get(None).query('drill_error_ratio{app="burning"}')
    return series.labels["instance"]


def test_doctor_checks_each_prometheus_query_and_alert(prometheus: Server) -> None:
    goals = [
        objective("errors", 'drill_error_ratio{app="calm"}', "<", 0.05),
        objective("gone", "drill_metric_nobody_exports", "<", 1),
    ]
    abort = {"alerts": [{"alert": "DrillErrorsHigh"}, {"alert": "NoSuchAlert", "prometheus": "local"}]}
    found = fleet(prometheus, goals, abort)
    lines = [check.line() for check in readiness(found, found.apps)]
    auth = f"Prometheus {prometheus.url} (basic auth as 'drill', password from ${PASSWORD_ENV})"
    assert lines == [
        f"ok   fleet: {auth}: expected answers an instant query, found answers",
        f"ok   local: {auth}: expected answers an instant query, found answers",
        f"ok   fleet: Prometheus {prometheus.url}: expected lists its scrape targets (/api/v1/targets), "
        "found 1 targets, 1 up",
        'ok   fleet: app shop PromQL objective errors: expected drill_error_ratio{app="calm"} returns data, '
        "found 1 series",
        "FAIL fleet: app shop PromQL objective gone: expected drill_metric_nobody_exports returns data, "
        "found no data on Prometheus fleet: it would be an error in a drill",
        "ok   fleet: abort alert DrillErrorsHigh: expected an alerting rule of that name, found present",
        "FAIL local: abort alert NoSuchAlert: expected an alerting rule of that name, found no such rule (it "
        "would never fire); rules: DrillErrorsHigh",
    ]


def test_wrong_credentials_and_an_unknown_ca_are_refused_without_showing_a_secret(
    prometheus: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "not-the-password-9f1e"
    monkeypatch.setenv("FLEETDRILL_TEST_WRONG", secret)
    cases = {
        "no credentials": settings(prometheus, username=None, password_env=None),
        "a bearer token": settings(
            prometheus, username=None, password_env=None, bearer_token_env="FLEETDRILL_TEST_WRONG"
        ),
        "a wrong password": settings(prometheus, password_env="FLEETDRILL_TEST_WRONG"),
    }
    for case, wrong in cases.items():
        with pytest.raises(PrometheusError) as refused:
            PrometheusClient(wrong, "fleet").query("up")
        assert "/api/v1/query: HTTP 401" in str(refused.value), case
        assert secret not in str(refused.value) and PASSWORD not in str(refused.value)
    with pytest.raises(PrometheusError, match="CERTIFICATE_VERIFY_FAILED"):
        PrometheusClient(settings(prometheus, ca_file=None), "fleet").query("up")


def test_fleetdrill_doctor_prints_the_prometheus_checks_and_fails_on_no_data(
    prometheus: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fleetdrill doctor` on a fleet file with Prometheus: its section of lines, and exit 1 for a query
    without data (the Kubernetes checks, tested on their own, find nothing here)."""
    from harness import cli, preflight
    from harness.config import dump_fleet
    from harness.fleet import FleetAccess
    from harness.preflight import Readiness

    goals = [objective("gone", "drill_metric_nobody_exports", "<", 1)]
    (tmp_path / "fleet.yaml").write_text(dump_fleet(fleet(prometheus, goals)))
    (tmp_path / "drills").mkdir()
    monkeypatch.setattr(FleetAccess, "unreachable", lambda self, clusters=None: {})
    monkeypatch.setattr(preflight, "preflight", lambda fleet, access, app, margin: Readiness(app, ()))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = cli.main(["doctor", "--fleet", str(tmp_path / "fleet.yaml"), "--drills", str(tmp_path / "drills")])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[out.index("prometheus:") + 3 :] == [
        f"  ok   fleet: Prometheus {prometheus.url}: expected lists its scrape targets (/api/v1/targets), "
        "found 1 targets, 1 up",
        "  FAIL fleet: app shop PromQL objective gone: expected drill_metric_nobody_exports returns data, "
        "found no data on Prometheus fleet: it would be an error in a drill",
        "1 problem(s) on the DR path",
    ]


def test_the_rollout_gate_judges_the_apps_promql_objectives_over_its_soak(prometheus: Server) -> None:
    burning = objective("errors", 'drill_error_ratio{app="burning"}', "<", 0.05, scope="cluster")
    calm = objective("calm", 'drill_error_ratio{app="calm"}', "<", 0.05, scope="cluster")
    document = fleet(prometheus, [burning, calm]).model_dump(mode="json", exclude_none=True)
    staged = Fleet.model_validate(
        document | {"rollout": {"stages": [{"name": "canary", "clusters": ["local"]}]}}
    )
    stage, _ = staged.stage("canary")
    checks = [c for c in soak_checks(staged, staged.apps[0], stage, 3.0) if c.what.startswith("promql")]
    assert [(c.what, c.ok, c.error) for c in checks] == [
        ("promql PromQL errors on local", False, False),
        ("promql PromQL calm on local", True, False),
    ], checks
    assert checks[0].found.startswith(
        '0.5 at worst (PromQL errors on local: drill_error_ratio{app="burning"} was'
    ), checks[0].found
