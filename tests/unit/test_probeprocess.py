"""harness.probeprocess: a Prober in a child process, mirrored in the harness: its records, its counters,
its errors, and a child that never outlives its run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness import measure
from harness.errors import ConfigError, FleetDrillError
from harness.probeprocess import ProbeProcess
from harness.samples import MissedSlot
from tests.conftest import wait_for
from tests.httpserver import Server
from tests.unit.test_measure import probe
from tests.unit.test_traffic import STOPPED


def test_the_child_probes_and_the_harness_sees_every_record(servers: Callable[..., Server]) -> None:
    up, down = servers("ok", "c1/pod-a"), servers("fail")
    with ProbeProcess({"up": up.url, "down": down.url}, rate_hz=50, identity_header="X-Served-By") as probes:
        wait_for(lambda: len(probes.samples("up")) >= 10 and len(probes.samples("down")) >= 10, 20, "probes")
        assert probes.stats("up").sent >= 10
        assert probes.availability("up", 60) == 1.0
        assert probes.availability("down", 60) == 0.0
    up_samples = probes.samples("up")
    assert all(s.ok and s.status == 200 and s.served_by == "c1/pod-a" for s in up_samples)
    assert all(s.status == 503 for s in probes.samples("down"))
    assert probes.samples() == sorted(up_samples + probes.samples("down"), key=lambda s: (s.sent, s.received))
    assert probes._child is not None and probes._child.poll() is not None, "the child has ended"


def test_requests_in_flight_at_stop_come_back_as_failed(servers: Callable[..., Server]) -> None:
    hung = servers("hang")
    probes = ProbeProcess({"hung": hung.url}, rate_hz=20, timeout_s=30)
    with probes:
        wait_for(lambda: probes.stats("hung").in_flight >= 3, 20, "requests in flight")
        probes.stop(drain_s=0.1)
    samples = probes.samples("hung")
    assert samples and all(s.error == STOPPED for s in samples), samples[:3]


def test_settings_the_prober_refuses_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rate_hz must be a positive number"):
        ProbeProcess({"x": "http://127.0.0.1:9/"}, rate_hz=0).start()


def test_an_unknown_target_names_the_targets(servers: Callable[..., Server]) -> None:
    with (
        ProbeProcess({"up": servers().url}, rate_hz=10) as probes,
        pytest.raises(KeyError, match="targets: up"),
    ):
        probes.samples("nope")


def test_the_child_ends_when_the_harness_goes_away(servers: Callable[..., Server]) -> None:
    """The harness's end (its pipe closes without a stop line) ends the child: nothing outlives a run."""
    probes = ProbeProcess({"up": servers().url}, rate_hz=10).start()
    child = probes._child
    assert child is not None and child.stdin is not None
    child.stdin.close()
    wait_for(lambda: child.poll() is not None, 20, "the child to end")
    probes._stopped = True  # what the test closed by hand
    probes._reader.join(5)  # type: ignore[union-attr]


def test_a_failed_start_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    probes = ProbeProcess({"x": "http://127.0.0.1:9/"})
    monkeypatch.setattr("sys.executable", "/bin/false")
    with pytest.raises(FleetDrillError, match="the probe process could not start: it exited with status 1"):
        probes.start(deadline_s=10)


def test_a_coverage_shortfall_says_why_the_slots_were_missed() -> None:
    missed = [MissedSlot("global", 100 + i, "late") for i in range(6)] + [MissedSlot("global", 107, "busy")]
    missed.append(MissedSlot("global", 500, "late"))  # outside the window: not counted
    coverage = measure.check_coverage([], 100, 110, 1.0, missed=missed)
    assert coverage.problems == (
        "no probe sent in the 10.0 s window",
    )  # nothing sent: no shortfall to explain
    sent = [probe(100.5), probe(108.5), probe(109.5)]
    coverage = measure.check_coverage(sent, 100, 110, 1.0, max_gap_factor=10, missed=missed)
    (problem,) = coverage.problems
    assert problem.endswith(
        "; slots missed: 6 late (the prober woke after them: the runner was starved of CPU), "
        "1 busy (max_in_flight requests were outstanding)"
    ), problem
