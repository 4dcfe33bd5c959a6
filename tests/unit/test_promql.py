"""PromQL objectives and metric aborts: the fleet file's fields, judging series, error-budget burn, the
abort conditions, and the client's authentication with its secrets withheld (against a fake API)."""

import copy
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import Fleet, Prometheus, PromqlObjective, load_fleet
from harness.errors import ConfigError
from harness.promabort import AlertFiring, PromqlCondition
from harness.prometheus import Alert, PrometheusClient, PrometheusError, Series, Target
from harness.promql import Window, burn, judge
from harness.promslo import Windows, evaluate
from tests.unit.test_config import VALID

SECRET = "s3cr3t-Tok3n-value-0042"


def fleet_with(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    document.update(changes)
    return document


def load(tmp_path: Path, document: dict[str, Any]) -> Fleet:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_fleet(path)


def problem(tmp_path: Path, document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, document)
    return str(caught.value).partition(": ")[2]


def objective(**fields: Any) -> dict[str, Any]:
    return {"name": "errors", "query": "error_ratio", "comparison": "<", "bound": 0.05} | fields


def with_objectives(*objectives: dict[str, Any], **top: Any) -> dict[str, Any]:
    document = fleet_with(**top)
    document["apps"][0]["objectives"]["promql"] = list(objectives)
    return document


# --- the fleet file ----------------------------------------------------------------------------------


def test_objectives_and_aborts_on_metrics_load(tmp_path: Path) -> None:
    document = with_objectives(
        objective(scope="cluster", query='err{cluster="{cluster}"}', window="recovery", slo_target="99.9%"),
        objective(name="lag", scope="cluster", cluster_label="cluster"),
        prometheus={"url": "https://thanos.example.com", "token_command": ["print-token", "--audience", "x"]},
    )
    document["clusters"][0]["prometheus"] = {
        "url": "http://prom.us-east:9090/",
        "bearer_token_env": "PROM_TOKEN",
    }
    document["safety"]["abort"] = {
        "promql": [{"name": "errors", "query": "sum(rate(x[1m])) or vector(0)", "above": 5, "for": "30s"}],
        "alerts": [{"alert": "AppDown", "prometheus": "us-east"}],
    }
    fleet = load(tmp_path, document)
    first = fleet.apps[0].objectives.promql[0]
    assert (first.scope, first.window, first.slo_target, first.max_gap) == (
        "cluster",
        "recovery",
        0.999,
        10.0,
    )
    assert fleet.cluster("us-east").prometheus is not None and fleet.prometheus is not None
    assert fleet.safety.abort is not None and fleet.safety.abort.promql[0].for_ == 30.0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            with_objectives(objective()),
            "apps[0].objectives.promql[0]: expected a top-level prometheus "
            "(scope fleet asks the fleet-wide one)",
        ),
        (
            with_objectives(objective(scope="cluster"), prometheus={"url": "http://thanos:9090"}),
            "apps[0].objectives.promql[0].query: expected clusters[us-east].prometheus, or a top-level "
            "prometheus and {cluster} in the query, got 'error_ratio'",
        ),
        (
            with_objectives(objective(query='x{c="{cluster}"}'), prometheus={"url": "http://thanos:9090"}),
            "apps[0].objectives.promql[0]: expected a query without {cluster} "
            "(scope is fleet; set scope: cluster)",
        ),
        (
            with_objectives(objective(comparison="==")),
            "apps[0].objectives.promql[0].comparison: expected one of <, <=, >, >=, got '=='",
        ),
        (
            with_objectives(objective(query="rate(errors[15q])")),
            "apps[0].objectives.promql[0].query: expected a PromQL query (bad number or duration syntax: "
            "15q), got 'rate(errors[15q])'",
        ),
        (
            with_objectives(objective(query="rate(errors)")),
            "apps[0].objectives.promql[0].query: expected a PromQL query (expected type matrix in call to "
            "function 'rate', got vector), got 'rate(errors)'",
        ),
    ],
)
def test_a_promql_objective_without_a_prometheus_or_with_a_bad_field_is_one_line(
    tmp_path: Path, document: dict[str, Any], message: str
) -> None:
    assert problem(tmp_path, document).startswith(message)


def test_abort_conditions_need_a_bound_and_a_prometheus(tmp_path: Path) -> None:
    document = fleet_with()
    document["safety"]["abort"] = {"promql": [{"name": "e", "query": "x", "above": 1, "below": 0}]}
    assert problem(tmp_path, document).startswith(
        "safety.abort.promql[0]: expected exactly one of above, below"
    )
    document["safety"]["abort"] = {"promql": [{"name": "e", "query": "x", "above": 1}]}
    assert problem(tmp_path, document).startswith(
        "safety.abort.promql[0].prometheus: expected a cluster name, or a top-level prometheus"
    )
    document["safety"]["abort"] = {"promql": [{"name": "e", "query": "sum(x", "above": 1}]}
    assert problem(tmp_path, document).startswith(
        "safety.abort.promql[0].query: expected a PromQL query (unclosed left parenthesis), got 'sum(x'"
    )
    document["safety"]["abort"] = {"alerts": [{"alert": "Down", "prometheus": "eu-west"}]}
    assert problem(tmp_path, document).startswith(
        "safety.abort.alerts[0].prometheus: expected a cluster with a prometheus (none has one), "
        "got 'eu-west'"
    )


def test_a_prometheus_url_with_a_password_is_refused_without_repeating_it(tmp_path: Path) -> None:
    document = fleet_with(prometheus={"url": f"https://user:{SECRET}@prom.example.com"})
    text = problem(tmp_path, document)
    assert text.startswith("prometheus.url: expected a URL without a password") and SECRET not in text
    both = fleet_with(
        prometheus={"url": "https://p", "bearer_token_env": "T", "username": "u", "password_env": "P"}
    )
    assert "expected at most one of bearer_token_env, token_command, username" in problem(tmp_path, both)
    alone = fleet_with(prometheus={"url": "https://p", "username": "u"})
    assert "expected username and password_env together" in problem(tmp_path, alone)


# --- judging -----------------------------------------------------------------------------------------

WINDOW = Window(1000.0, 1060.0, t0=1010.0)


def series(values: list[float], start: float = 1000.0, step: float = 5.0, **labels: str) -> Series:
    return Series(labels, tuple((start + i * step, v) for i, v in enumerate(values) if not math.isnan(v)))


def test_an_objective_holds_when_every_value_keeps_the_bound() -> None:
    goal = PromqlObjective.model_validate(objective())
    verdict, figures = judge(goal, None, "error_ratio", [series([0.01] * 13)], WINDOW)
    assert verdict.status == "pass" and verdict.measured == "0.01 at worst"
    assert figures["worst"] == 0.01 and figures["broken_points"] == 0


def test_a_broken_objective_fails_naming_the_query_the_value_and_when() -> None:
    goal = PromqlObjective.model_validate(objective())
    values = [0.01, 0.01, 0.01, 0.2, 0.4, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]
    verdict, _ = judge(goal, "us-east", "error_ratio", [series(values, pod="a")], WINDOW)
    assert verdict.status == "fail" and verdict.objective == "PromQL errors on us-east"
    assert verdict.message == (
        'PromQL errors on us-east: error_ratio was 0.4 at t0+10.0 s ({pod="a"}), expected < 0.05 throughout '
        "the drill window; 3 of 13 values broke it, the first at t0+5.0 s"
    )


def test_no_data_or_a_gap_is_an_error_never_a_pass() -> None:
    goal = PromqlObjective.model_validate(objective(max_gap="10s"))
    verdict, _ = judge(goal, None, "error_ratio", [], WINDOW)
    assert verdict.status == "error" and verdict.measured == "no data"
    assert (
        verdict.message
        == "PromQL errors not judged: error_ratio gave no data: the query returned no series in the window"
    )
    nan = float("nan")
    holed = series([0.0, 0.0, nan, nan, nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    verdict, _ = judge(goal, None, "error_ratio", [holed], WINDOW)
    assert verdict.status == "error"
    assert "no data from t0-5.0 s to t0+15.0 s (max_gap 10 s)" in verdict.message
    late = series([0.0] * 5, start=1030.0)  # the series starts half-way through the window
    assert judge(goal, None, "error_ratio", [late], WINDOW)[0].status == "error"


def test_the_error_budget_burn_of_a_window() -> None:
    goal = PromqlObjective.model_validate(objective(slo_target=0.99, slo_period="600s"))
    figures = burn(goal, [series([0.02] * 13), series([0.0] * 13)], WINDOW)
    assert figures["burn_rate"] == pytest.approx(2.0)  # 2% errors against a 1% budget
    assert figures["budget_spent"] == pytest.approx(2.0 * 60 / 600)
    assert burn(PromqlObjective.model_validate(objective()), [series([0.5])], WINDOW) == {}


def just_scraped() -> list[Target]:
    """One target, scraped just now: the window's data is whole."""
    return [Target({"job": "app"}, "up", time.time())]


SERVER = Prometheus(url="http://thanos:9090")


class FakeClients:
    """Prometheuses answering from canned series, recording the queries asked."""

    settings = SERVER

    def __init__(self, answers: dict[str, list[Series]], alerts: list[Alert] | None = None) -> None:
        self.answers, self.asked = answers, []
        self._alerts = alerts if alerts is not None else []

    def get(self, where: str | None) -> "FakeClients":
        self.where = where or "fleet"
        return self

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        self.asked.append((self.where, query))
        if query not in self.answers:
            raise PrometheusError(f"Prometheus {self.where}: bad_data: parse error")
        return self.answers[query]

    def query(self, query: str) -> list[Series]:
        return self.query_range(query, 0, 0, 1)

    def targets(self) -> list[Target]:
        return just_scraped()

    def alerts(self) -> list[Alert]:
        return self._alerts


def test_each_place_is_judged_and_the_recovery_window_needs_a_recovery(tmp_path: Path) -> None:
    document = with_objectives(
        objective(scope="cluster", query='err{c="{cluster}"}'),
        objective(name="lag", scope="cluster", cluster_label="cluster"),
        objective(name="after", window="recovery"),
        prometheus={"url": "http://thanos:9090"},
    )
    document["clusters"][0]["prometheus"] = {"url": "http://prom.us-east:9090"}
    fleet = load(tmp_path, document)
    now, wall = time.monotonic(), time.time()
    points = [Series({"cluster": "us-east"}, tuple((wall - 60 + i, 0.0) for i in range(61)))]
    clients = FakeClients({'err{c="us-east"}': points, 'err{c="eu-west"}': points, "error_ratio": points})
    windows = Windows(now - 60, now, now - 50, None, "not recovered")
    done = evaluate(fleet, fleet.apps[0], clients, windows)  # type: ignore[arg-type]
    assert clients.asked == [
        ("us-east", 'err{c="us-east"}'),
        ("fleet", 'err{c="eu-west"}'),
        ("fleet", "error_ratio"),
        ("fleet", "error_ratio"),
    ]
    assert [(v.objective, v.status) for v in done.verdicts] == [
        ("PromQL errors on us-east", "pass"),
        ("PromQL errors on eu-west", "pass"),
        ("PromQL lag on us-east", "pass"),
        ("PromQL lag on eu-west", "error"),  # no series labelled cluster="eu-west"
        ("PromQL after", "error"),
    ]
    assert "no data: the query returned no series" in done.verdicts[3].message
    assert (
        done.verdicts[4].message == "PromQL after not judged: error_ratio: no recovery window: not recovered"
    )
    assert len(done.series) == 3 and done.series[0].points[0][0] == pytest.approx(now - 60, abs=0.5)


class RateOfErrors(FakeClients):
    """A Prometheus answering `rate(errors[15s])` as it would: at t, the errors stamped in (t - 15 s, t]
    per second, for unix times `errors`; recording the range each query asked for."""

    QUERY = "rate(errors[15s])"

    def __init__(self, errors: list[float]) -> None:
        super().__init__({})
        self.errors, self.ranges = errors, []

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        self.ranges.append((start, end))
        times = [start + i * step for i in range(int((end - start) / step) + 1)]
        return [Series({}, tuple((t, sum(t - 15 < e <= t for e in self.errors) / 15) for t in times))]


@pytest.mark.parametrize(
    ("errors_at", "status"),
    [
        ([-8.0, -5.0, -1.0], "pass"),  # the previous drill's tail, before the window opened
        ([-5.0, 3.0, 4.0], "fail"),  # the drill's own errors, a few seconds into the window
        ([38.0], "fail"),  # and at its very end
    ],
)
def test_a_rate_is_judged_only_where_it_reads_the_window_alone(
    tmp_path: Path, errors_at: list[float], status: str
) -> None:
    """`rate(x[15s])` at the window's first second counts 14 s before it: its values are judged from
    15 s into the window on, which still count every error in the window, none from before it."""
    goal = objective(query=RateOfErrors.QUERY, bound=0.01)
    fleet = load(tmp_path, with_objectives(goal, prometheus={"url": "http://thanos:9090"}))
    now, wall = time.monotonic(), time.time()
    clients = RateOfErrors([wall - 40 + e for e in errors_at])
    done = evaluate(fleet, fleet.apps[0], clients, Windows(now - 40, now, now - 35, None))  # type: ignore[arg-type]
    (verdict,) = done.verdicts
    assert verdict.status == status, verdict.message
    ((start, end),) = clients.ranges
    assert start == pytest.approx(wall - 25, abs=0.5) and end == pytest.approx(wall, abs=0.5)


def test_a_window_shorter_than_the_query_reads_back_is_an_error_naming_both(tmp_path: Path) -> None:
    fleet = load(
        tmp_path,
        with_objectives(objective(query=RateOfErrors.QUERY), prometheus={"url": "http://thanos:9090"}),
    )
    now = time.monotonic()
    clients = RateOfErrors([])
    done = evaluate(fleet, fleet.apps[0], clients, Windows(now - 9, now, now - 5, None))  # type: ignore[arg-type]
    (verdict,) = done.verdicts
    assert verdict.status == "error" and clients.ranges == []
    assert verdict.message == (
        "PromQL errors not judged: rate(errors[15s]): the drill window (9.0 s) is shorter than the query "
        "reads back (15 s): no value of it measures the window alone"
    )


def test_a_drill_holds_and_soaks_as_long_as_its_promql_objectives_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fault the window grows as old as the drill window's objectives read back; the soak lasts
    soak_s plus what the recovery window's objectives read back."""
    from harness.drill import Drill, DrillSettings, Observation
    from harness.timeline import Timeline

    during = objective(query="rate(errors[3s])")
    after = objective(name="after", query="max_over_time(rate(errors[1s])[2s:1s])", window="recovery")
    fleet = load(tmp_path, with_objectives(during, after, prometheus={"url": "http://thanos:9090"}))
    drill = Drill("test_hold", fleet, None, None, Timeline(), DrillSettings(soak_s=0.5))  # type: ignore[arg-type]
    app = fleet.apps[0]
    monkeypatch.setattr(Drill, "served_by", lambda *_: True)
    monkeypatch.setattr(Drill, "writes_acked", lambda *_: True)
    drill.observations[app.name] = Observation(app, start=time.monotonic())
    assert drill.steady(app, None, 0.1, 5.0)
    assert time.monotonic() >= drill.observations[app.name].start + 3.0
    slept: list[float] = []
    monkeypatch.setattr("harness.drill.time.sleep", slept.append)
    drill.soak()
    drill.soak(1.0)
    assert slept == [pytest.approx(3.5), 1.0]


# --- aborts ------------------------------------------------------------------------------------------


def test_a_promql_abort_trips_after_its_for_and_on_no_data(tmp_path: Path) -> None:
    from harness.config import AbortQuery

    condition = AbortQuery.model_validate({"name": "errors", "query": "rate", "above": 5, "for": "0s"})
    clients = FakeClients({"rate": [series([7.0], job="app")]})
    trip = PromqlCondition(condition, clients)()  # type: ignore[arg-type]
    assert trip is not None and trip.reason == (
        'safety.abort.promql errors: rate was 7 {job="app"} on Prometheus fleet, above 5'
    )
    held = AbortQuery.model_validate({"name": "errors", "query": "rate", "above": 5, "for": "1h"})
    assert PromqlCondition(held, clients)() is None  # type: ignore[arg-type]
    calm = FakeClients({"rate": [series([1.0])]})
    assert PromqlCondition(condition, calm)() is None  # type: ignore[arg-type]
    empty = PromqlCondition(condition, FakeClients({"rate": []}))()  # type: ignore[arg-type]
    assert (
        empty is not None
        and "rate returned no data on Prometheus fleet; so the drill stops to be safe" in empty.reason
    )
    broken = PromqlCondition(condition, FakeClients({}))()  # type: ignore[arg-type]
    assert broken is not None and "parse error; so the drill stops to be safe" in broken.reason


def test_an_alert_abort_trips_when_firing_not_when_pending() -> None:
    from harness.config import AbortAlert

    rule = AbortAlert.model_validate({"alert": "AppDown"})
    pending = FakeClients({}, [Alert("AppDown", "pending", {"alertname": "AppDown"})])
    assert AlertFiring(rule, pending)() is None  # type: ignore[arg-type]
    firing = FakeClients({}, [Alert("AppDown", "firing", {"alertname": "AppDown", "severity": "page"})])
    trip = AlertFiring(rule, firing)()  # type: ignore[arg-type]
    assert trip is not None and trip.reason == 'alert AppDown is firing on Prometheus fleet (severity="page")'


# --- the client's authentication, secrets withheld ---------------------------------------------------


class FakeApi(BaseHTTPRequestHandler):
    """A Prometheus API that wants `Authorization: <wanted>` and answers one series."""

    wanted: list[str] = []
    seen: list[str | None] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(self.headers.get("Authorization"))
        if self.wanted == ["redirect"]:
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.headers.get("Authorization") not in self.wanted:
            self._answer(401, {"status": "error", "error": "Unauthorized"})
            return
        result = {"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "1"]}]}
        self._answer(200, {"status": "success", "data": result})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    FakeApi.wanted, FakeApi.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_bearer_and_basic_auth_come_from_the_environment(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeApi.wanted = [f"Bearer {SECRET}", "Basic ZHJpbGw6" + "cHc="]  # drill:pw
    bearer = PrometheusClient(Prometheus(url=api, bearer_token_env="PROM_TOKEN"), "us-east")
    with pytest.raises(PrometheusError, match=r"bearer_token_env names \$PROM_TOKEN, which is not set"):
        bearer.query("up")
    monkeypatch.setenv("PROM_TOKEN", SECRET)
    assert bearer.query("up")[0].points == ((1.0, 1.0),)
    monkeypatch.setenv("PROM_PW", "pw")
    basic = PrometheusClient(Prometheus(url=api, username="drill", password_env="PROM_PW"), "fleet")
    assert basic.query("up") and SECRET not in repr(bearer)
    monkeypatch.setenv("PROM_TOKEN", "wrong-" + SECRET)
    with pytest.raises(PrometheusError) as refused:
        bearer.query("up")
    assert str(refused.value).endswith(
        "/api/v1/query: HTTP 401 (Unauthorized): check bearer token from $PROM_TOKEN"
    )
    assert SECRET not in str(refused.value)


def test_a_token_command_runs_again_when_its_token_is_refused(api: str, tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    script = tmp_path / "token.py"
    script.write_text(
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        f"print({SECRET!r} + str(n))\n"
    )
    FakeApi.wanted = [f"Bearer {SECRET}2"]  # the first token is refused, the second taken
    client = PrometheusClient(Prometheus(url=api, token_command=[sys.executable, str(script)]), "fleet")
    assert client.query("up") and counter.read_text() == "2"
    assert FakeApi.seen == [f"Bearer {SECRET}1", f"Bearer {SECRET}2"]
    assert SECRET not in repr(client) and SECRET not in repr(client._token)
    FakeApi.wanted = []
    with pytest.raises(PrometheusError) as refused:
        client.query("up")
    assert "HTTP 401 (Unauthorized)" in str(refused.value) and "with a token just renewed" in str(
        refused.value
    )
    assert SECRET not in str(refused.value)


def test_a_token_command_runs_again_after_token_refresh(api: str, tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text(f"print({SECRET!r})\n")
    FakeApi.wanted = [f"Bearer {SECRET}"]
    every = Prometheus(url=api, token_command=[sys.executable, str(script)], token_refresh="1h")
    client = PrometheusClient(every, "fleet")
    client.query("up")
    client.query("up")
    assert client._token is not None and client._token.runs == 1
    client._token._taken -= 3600  # an hour on: token_refresh has passed
    client.query("up")
    assert client._token.runs == 2


def test_a_redirect_is_not_followed_with_the_credential(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROM_TOKEN", SECRET)
    FakeApi.wanted = ["redirect"]
    client = PrometheusClient(Prometheus(url=api, bearer_token_env="PROM_TOKEN"), "fleet")
    with pytest.raises(PrometheusError) as redirected:
        client.query("up")
    assert str(redirected.value) == (
        f"Prometheus fleet ({api}) /api/v1/query: HTTP 307: redirected to http://127.0.0.1:9/elsewhere: "
        "use that as url"
    )


def test_a_failing_token_command_never_shows_its_output(tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text(
        f"import sys\nprint('leaked {SECRET}', file=sys.stderr)\nprint({SECRET!r})\nsys.exit(3)\n"
    )
    client = PrometheusClient(
        Prometheus(url="http://127.0.0.1:9", token_command=[sys.executable, str(script)]), "fleet"
    )
    with pytest.raises(PrometheusError) as failed:
        client.query("up")
    assert str(failed.value) == f"token_command {sys.executable!r} exited 3 (its output not shown)"


def test_an_unreachable_prometheus_and_a_missing_ca_are_errors_naming_it(tmp_path: Path) -> None:
    client = PrometheusClient(Prometheus(url="http://127.0.0.1:9", timeout=2), "eu-west")
    with pytest.raises(PrometheusError, match=r"^Prometheus eu-west \(http://127.0.0.1:9\) /api/v1/query: "):
        client.query("up")
    missing = PrometheusClient(Prometheus(url="https://127.0.0.1:9", ca_file=tmp_path / "none.pem"), "fleet")
    with pytest.raises(PrometheusError, match=r"^Prometheus fleet: ca_file .*none\.pem"):
        missing.alerts()


# --- a drill judges them, records their series, and every report agrees --------------------------------

DRILL_FLEET = """
name: metrics
kubeconfig: kubeconfig
prometheus: {url: "http://prometheus.example:9090"}
clusters:
  - {name: east, region: us-east, role: active}
apps:
  - name: shop
    namespace: shop
    workload: deployment/shop
    global_endpoint: "http://192.0.2.11/"
    objectives:
      rto: 20s
      availability: 0.8
      promql:
        - {name: errors, query: error_ratio, comparison: "<", bound: 0.05}
"""


class SpikingClients:
    """A fleet-wide Prometheus whose error ratio is 0.01, and 0.3 from 2 s after the window starts for 3 s."""

    settings = SERVER

    def get(self, where: str | None) -> "SpikingClients":
        return self

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Series]:
        count = int((end - start) / step) + 1
        times = [start + i * step for i in range(count)]
        return [Series({"app": "shop"}, tuple((t, 0.3 if 2 <= t - start < 5 else 0.01) for t in times))]

    def targets(self) -> list[Target]:
        return just_scraped()


def test_a_drill_judges_promql_objectives_and_its_record_and_report_agree(tmp_path: Path) -> None:
    from harness.drill import GLOBAL, Drill, DrillSettings, Observation
    from harness.report import html, record, runs
    from harness.timeline import Timeline
    from tests.unit.test_drill_verdicts import probes

    (tmp_path / "fleet.yaml").write_text(DRILL_FLEET)
    settings = DrillSettings(probe_rate_hz=10.0, stable_count=5, stable_seconds=1.0)
    drill = Drill("test_metrics", load_fleet(tmp_path / "fleet.yaml"), None, None, Timeline(), settings)  # type: ignore[arg-type]
    drill.prometheus = SpikingClients()  # type: ignore[assignment]
    app = drill.app("shop")
    drill.observations["shop"] = Observation(app, {GLOBAL: probes(GLOBAL)}, start=95.0, end=110.0)
    verdicts = {v.objective: v for v in drill.judge(app, 100.0)}
    assert verdicts["RTO"].status == "pass" and verdicts["PromQL errors"].status == "fail"
    assert "error_ratio was 0.3 at t0-3.0 s" in verdicts["PromQL errors"].message
    (figures,) = drill.figures["shop"]["promql"]  # type: ignore[misc]
    assert figures["worst"] == 0.3 and figures["prometheus"] == "fleet"
    outcome, message = record.conclude(drill, "passed", "")
    assert outcome == "failed" and "PromQL errors: error_ratio was 0.3" in message
    folder = tmp_path / "reports" / "run-1" / "test_metrics"
    record.write(drill, folder, "run-1", outcome, message)
    result = runs.read_drill(folder)
    assert result.verdict == "fail" and result.promql[0]["objective"] == "errors"
    assert len(result.promql[0]["points"]) == 16
    page = html.render(runs.load_run(tmp_path / "reports", "run-1"), [])
    assert 'alt="PromQL objectives of' in page and "PromQL errors &lt; 0.05" in page


def test_a_drill_whose_abort_is_an_alert_stops_and_reverts_when_it_fires(api: str, tmp_path: Path) -> None:
    from harness.config import Fleet
    from harness.drill import Drill, DrillSettings
    from harness.faults import FaultStack, KubeContext, Ledger
    from harness.safety import DrillAborted
    from harness.timeline import Timeline
    from tests.conftest import wait_for
    from tests.fakefaults import FileFault

    fleet = Fleet.model_validate(
        {
            "name": "alerting",
            "clusters": [{"name": "east", "region": "r1"}],
            "apps": [
                {"name": "shop", "namespace": "shop", "workload": "deployment/shop", "global_endpoint": api}
            ],
            "prometheus": {"url": "http://prometheus.example:9090"},
            "safety": {"allowlist": ["east"], "abort": {"alerts": [{"alert": "ShopDown"}]}},
        }
    )
    ledger, timeline = Ledger(tmp_path / "ledger.json"), Timeline()
    stack = FaultStack(KubeContext(), ledger, timeline, "run-1")
    drill = Drill("abort", fleet, None, stack, timeline, DrillSettings(abort_check_s=0.05))  # type: ignore[arg-type]
    alerts: list[Alert] = []
    drill.prometheus = FakeClients({}, alerts)  # type: ignore[assignment]
    with pytest.raises(DrillAborted) as aborted, stack, drill.observe(fleet.app("shop")):
        stack.push(FileFault(str(tmp_path), targets=("east",)))
        alerts.append(Alert("ShopDown", "firing", {"alertname": "ShopDown"}))
        wait_for(lambda: False, 20, "the alert to stop the drill")
    assert (
        str(aborted.value)
        == "drill aborted: alert ShopDown is firing on Prometheus fleet; its faults are reverted"
    )
    assert not (tmp_path / "east").exists() and ledger.entries() == [], "the fault was reverted"
