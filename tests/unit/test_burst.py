"""The burst drill's judgement (harness.burst, Drill.judge_burst) from made-up probes, and its load
(harness.load) against a real local HTTP server: bounded by its deadline, stopped on every exit path."""

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import burst
from harness.config import load_fleet
from harness.drill import GLOBAL, Drill, DrillSettings, Observation
from harness.load import Load
from harness.samples import ProbeSample
from harness.timeline import Timeline

FLEET = """
name: bursting
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active}
  - {name: west, region: eu-west, role: passive}
apps:
  - name: web
    namespace: web
    workload: deployment/web
    global_endpoint: http://192.0.2.1/
    endpoints: {east: "http://192.0.2.11/", west: "http://192.0.2.12/"}
    served_by: {header: X-Served-By}
    objectives: {availability: 0.9, latency: 1s, spill: 2s, spill_return: 3s}
  - name: unset
    namespace: unset
    workload: deployment/unset
    global_endpoint: http://192.0.2.2/
    endpoints: {east: "http://192.0.2.21/", west: "http://192.0.2.22/"}
    objectives: {availability: 0.9, latency: 1s}
"""
T0, RATE_HZ = 100.0, 10.0
FULL_AT, DROPPED, END = T0 + 4.0, T0 + 8.0, T0 + 12.0
SCALER = burst.Autoscaler("web", 12, 12, 12, True)
FULL = burst.Full(FULL_AT, ("web-1", "web-2"), "0/3 nodes are available: 3 Insufficient cpu.", SCALER)


def probes(who: Callable[[float], str]) -> list[ProbeSample]:
    """One probe every 1/RATE_HZ s from T0 - 2 s to END, answered by who(sent)."""
    found = []
    for i in range(int((END - T0 + 2) * RATE_HZ)):
        sent = T0 - 2 + i / RATE_HZ
        found.append(ProbeSample.of(GLOBAL, sent, sent + 0.02, status=200, served_by=f"{who(sent)}/pod"))
    return found


def spilling(sent: float) -> str:
    """east alone, west from T0 + 1 s while the load lasts (every other probe), east alone again 1 s after."""
    return "west" if T0 + 1 <= sent < DROPPED + 1 and int(sent * RATE_HZ) % 2 else "east"


@pytest.fixture
def drill(tmp_path: Path) -> Drill:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    settings = DrillSettings(probe_rate_hz=RATE_HZ, stable_count=5, stable_seconds=1.0)
    return Drill("test_burst", load_fleet(tmp_path / "fleet.yaml"), None, None, Timeline(), settings)  # type: ignore[arg-type]


def observed(drill: Drill, app: str, samples: list[ProbeSample]) -> None:
    observation = Observation(drill.app(app), samples={GLOBAL: samples}, start=T0 - 2, end=END)
    drill.observations[app] = observation


def test_a_burst_that_spills_and_returns_passes_with_its_figures(drill: Drill) -> None:
    observed(drill, "web", probes(spilling))
    verdicts = drill.judge_burst(drill.app("web"), "east", T0, FULL, DROPPED, [], {})
    assert [(v.objective, v.status) for v in verdicts] == [
        ("spill", "pass"),
        ("availability", "pass"),
        ("p99 latency", "pass"),
        ("return", "pass"),
    ], [v.message for v in verdicts]
    figures = drill.figures["web"]
    assert figures["spill_s"] == pytest.approx(1.12, abs=0.05)
    assert figures["return_s"] == pytest.approx(1.0, abs=0.15)
    assert figures["pending_pods"] == ["web-1", "web-2"]


def test_spill_and_return_beyond_their_objectives_fail(drill: Drill) -> None:
    late = lambda sent: "west" if T0 + 3 <= sent < DROPPED + 3.5 else "east"  # noqa: E731
    observed(drill, "web", probes(late))
    verdicts = {
        v.objective: v for v in drill.judge_burst(drill.app("web"), "east", T0, FULL, DROPPED, [], {})
    }
    assert verdicts["spill"].status == "fail" and "above the 2 s objective" in verdicts["spill"].message
    assert verdicts["return"].status == "fail" and verdicts["return"].measured == "3.50 s"


def test_no_spill_fails_naming_the_cluster_without_the_app(drill: Drill) -> None:
    observed(drill, "web", probes(lambda sent: "east"))
    missing = {"west": "deployment/web is not in namespace web of west"}
    [spill, *_] = drill.judge_burst(drill.app("web"), "east", T0, FULL, DROPPED, [], missing)
    assert spill.status == "fail" and spill.measured == "never"
    assert "2 pod(s) Pending in east (deployment/web is not in namespace web of west)" in spill.message


def test_a_spill_only_before_the_primary_filled_fails(drill: Drill) -> None:
    observed(drill, "web", probes(lambda sent: "west" if T0 + 1 <= sent < T0 + 2 else "east"))
    [spill, *_] = drill.judge_burst(drill.app("web"), "east", T0, FULL, DROPPED, [], {})
    assert spill.status == "fail" and "but none while east was full" in spill.message


def test_a_primary_not_alone_by_the_end_fails_its_return(drill: Drill) -> None:
    observed(drill, "web", probes(lambda sent: "west" if sent >= T0 + 1 and int(sent * 10) % 2 else "east"))
    verdicts = {
        v.objective: v for v in drill.judge_burst(drill.app("web"), "east", T0, FULL, DROPPED, [], {})
    }
    assert verdicts["return"].status == "fail" and verdicts["return"].measured == "never"


def test_objectives_the_fleet_file_does_not_set_are_errors_never_passes(drill: Drill) -> None:
    observed(drill, "unset", probes(spilling))
    verdicts = {
        v.objective: v for v in drill.judge_burst(drill.app("unset"), "east", T0, FULL, DROPPED, [], {})
    }
    assert (verdicts["spill"].status, verdicts["return"].status) == ("error", "error")
    assert "does not set apps[1].objectives.spill" in verdicts["spill"].message
    assert "does not set apps[1].objectives.spill_return" in verdicts["return"].message


def test_a_gap_in_the_probes_during_the_burst_is_an_error(drill: Drill) -> None:
    observed(drill, "web", [s for s in probes(spilling) if not T0 + 5 <= s.sent < T0 + 7])
    verdicts = {
        v.objective: v for v in drill.judge_burst(drill.app("web"), "east", T0, FULL, DROPPED, [], {})
    }
    assert verdicts["spill"].status == "error" and verdicts["availability"].status == "error"


def test_a_capped_autoscaler_fails_the_drill_naming_it(drill: Drill) -> None:
    capped = burst.Capped("the HorizontalPodAutoscaler's maximum is below the load: ...")
    [verdict] = drill.judge_burst(drill.app("web"), "east", T0, capped, DROPPED, [], {})
    assert verdict.status == "fail" and "maximum is below the load" in verdict.message
    assert drill.verdicts == [verdict]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path == "/down" else 200
        self.send_response(status)
        self.send_header("X-Served-By", "east/pod-1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_load_records_every_answer_and_stops_with_its_block(server: str) -> None:
    with Load(f"{server}/", 4, deadline_s=30, identity_header="X-Served-By") as load:
        while len(load.requests()) < 20:
            time.sleep(0.01)
    assert load.stopped is not None and not load.running
    done = load.requests()
    assert all(r.status == 200 and r.served_by == "east/pod-1" for r in done)
    assert not [t for t in threading.enumerate() if t.name.startswith("load-")]
    with Load(f"{server}/down", 2, deadline_s=30) as failing:
        while not failing.requests():
            time.sleep(0.01)
    assert failing.requests()[0].status == 503 and failing.requests()[0].error == "HTTP 503"


def test_the_load_stops_at_its_deadline_and_on_an_error(server: str) -> None:
    with Load(f"{server}/", 2, deadline_s=0.3) as load:
        while load.running:
            time.sleep(0.01)
        stopped_sending = time.monotonic()
        count = len(load.requests())
        assert not [r for r in load.requests() if r.sent > load.started + 0.3]
    assert load.stopped == pytest.approx(load.started + 0.3)
    assert len(load.requests()) <= count + 2 and stopped_sending - load.started < 5
    with pytest.raises(RuntimeError), Load(f"{server}/", 2, deadline_s=30) as broken:
        raise RuntimeError("the drill broke")
    assert not broken.running and not [t for t in threading.enumerate() if t.name.startswith("load-")]


def test_no_connection_is_a_failed_request_not_a_pass() -> None:
    with Load("http://127.0.0.1:9/", 1, deadline_s=30, timeout_s=1) as load:
        while not load.requests():
            time.sleep(0.01)
    first = load.requests()[0]
    assert first.status is None and first.error and "Connection" in first.error
