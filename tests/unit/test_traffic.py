"""harness.traffic against local HTTP servers: schedule, concurrency, failures, the app contract (accepted
statuses, identity), reconnects, in-flight probes at stop, clean stop."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from harness import traffic
from harness.errors import ConfigError, FleetDrillError
from harness.samples import MissedSlot, ProbeSample
from harness.traffic import DOWN_AT_STOP, PROBE_NICE, Prober, raise_priority
from tests.conftest import wait_for

STOPPED = "stopped: still in flight when probing stopped"


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_on_grid(samples: list[ProbeSample], interval: float, missed: list[MissedSlot]) -> None:
    """Every slot between the first and last send was sent or recorded missed: the grid did not drift, and
    a slot the prober could not keep is a recorded miss, never silently dropped. (How few are missed on a
    quiet machine is a figure bench/probe_overhead.py prints, not a timed assert.)"""
    sends = sorted(s.sent for s in samples)
    between = [m for m in missed if sends[0] < m.slot < sends[-1]]
    span = (sends[-1] - sends[0]) / interval
    accounted = len(sends) + len(between) - 1
    assert abs(span - accounted) < 2, f"{span:.1f} intervals hold {accounted} slots: the schedule drifts"


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since `before`, other than the test servers' request handlers."""
    return [t for t in threading.enumerate() if t not in before and "process_request" not in t.name]


def test_probes_go_out_on_the_grid_at_the_rate_over_kept_alive_connections(servers: Callable) -> None:
    server, rate = servers(), 50.0
    with Prober({"a": server.url, "b": server.url}, rate_hz=rate, identity_header="X-Served-By") as probes:
        wait_for(lambda: min(probes.stats(t).recorded for t in "ab") >= 60, 10, "60 probes per target")
    for target in "ab":
        samples = probes.samples(target)
        assert all(s.ok and s.status == 200 and s.served_by == "c1/pod-a" for s in samples)
        assert_on_grid(samples, 1 / rate, probes.missed(target))
    assert server.accepted <= 20, f"{server.accepted} connections for ~120 probes: keep-alive is not used"


def test_slow_answers_do_not_hold_back_the_next_probe(servers: Callable) -> None:
    server, rate = servers("slow"), 40.0
    server.delay = 0.2
    with Prober({"slow": server.url}, rate_hz=rate) as probes:
        wait_for(lambda: probes.stats("slow").recorded >= 30, 10, "30 slow answers")
        assert probes.stats("slow").in_flight >= 3
    samples = probes.samples("slow")
    assert all(s.ok and s.latency >= 0.2 for s in samples)
    assert_on_grid(samples, 1 / rate, probes.missed("slow"))
    assert not [m for m in probes.missed("slow") if m.reason == "busy"]


def test_failures_are_recorded_with_their_kind(servers: Callable, free_port: int) -> None:
    garbage = servers("raw")
    garbage.raw = b"SSH-2.0-OpenSSH_9.6\r\n\r\n"
    targets = {
        "503": servers("fail").url,
        "drop": servers("drop").url,
        "hang": servers("hang").url,
        "refused": f"http://127.0.0.1:{free_port}/",
        "garbage": garbage.url,
    }
    with Prober(targets, rate_hz=20, timeout_s=0.3) as probes:
        wait_for(lambda: min(probes.stats(t).recorded for t in targets) >= 3, 10, "3 probes per target")
        assert {t: probes.availability(t, last_s=10) for t in targets} == dict.fromkeys(targets, 0.0)
    error = "status: HTTP 503 not an accepted status (accepted: 2xx)"
    assert all(not s.ok and s.status == 503 and s.error == error for s in probes.samples("503"))
    for target, kind in [
        ("drop", "closed"),
        ("hang", "timeout"),
        ("refused", "refused"),
        ("garbage", "protocol"),
    ]:
        samples = probes.samples(target)
        assert probes.stats(target).failed == len(samples)
        # a target whose last probes went unanswered has those still in flight at stop recorded as stopped
        # (harness.traffic), which the drop and hang targets' can be
        answered = [s for s in samples if not s.error.startswith("stopped: ")]
        assert len(answered) >= 3, samples
        wrong = [s for s in answered if s.ok or s.status is not None or not s.error.startswith(f"{kind}: ")]
        errors = sorted({s.error for s in wrong})
        assert not wrong, f"{target}: {len(wrong)} of {len(samples)} not {kind}: {errors}"
    # the hang server never answers: the timeout ended each probe (its bound leaves room for a loaded runner)
    timed_out = [s for s in probes.samples("hang") if s.error.startswith("timeout: ")]
    assert timed_out and all(0.3 <= s.latency < 2.0 for s in timed_out)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Served-By: c2/p\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            200,
        ),
        (b"HTTP/1.0 200 OK\r\nX-Served-By: c2/p\r\n\r\nbody until the connection closes", 200),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nx-served-by: c2/p\r\n\r\n", 204),
    ],
    ids=["chunked", "until-close", "interim"],
)
def test_response_framings_are_read(servers: Callable, raw: bytes, status: int) -> None:
    server = servers("raw")
    server.raw = raw
    with Prober({"t": server.url}, rate_hz=20, identity_header="X-Served-By") as probes:
        wait_for(lambda: probes.stats("t").recorded >= 2, 10, "2 probes")
    assert {(s.ok, s.status, s.served_by) for s in probes.samples("t")} == {(True, status, "c2/p")}


def test_answers_over_the_latency_bound_count_as_failed_in_the_live_figures(servers: Callable) -> None:
    server = servers()  # the bound is far above a local answer on a loaded runner, and far below the delay
    with Prober({"t": server.url}, rate_hz=20, timeout_s=5, latency_bound_s=0.5) as probes:
        wait_for(lambda: probes.stats("t").recorded >= 3, 10, "3 probes")
        assert probes.availability("t", last_s=10) == 1.0
        server.mode, server.delay = "slow", 1.0
        wait_for(lambda: probes.availability("t", last_s=1.5) == 0.0, 15, "live availability to reach 0")
    assert all(s.ok and s.status == 200 for s in probes.samples("t"))
    assert max(s.latency for s in probes.samples("t")) >= 1.0, "a slow answer keeps its real latency"
    assert probes.stats("t").failed == sum(s.latency > 0.5 for s in probes.samples("t")) > 0


def test_a_full_in_flight_budget_records_busy_slots(servers: Callable) -> None:
    server = servers("hang")
    with Prober({"t": server.url}, rate_hz=50, timeout_s=5, max_in_flight=2) as probes:
        # a busy runner also misses slots "late" (the prober woke after them): wait for the busy ones
        wait_for(lambda: len([m for m in probes.missed("t") if m.reason == "busy"]) >= 5, 10, "5 busy slots")
        assert probes.stats("t").in_flight == 2
        probes.stop(drain_s=0)
    busy = [m for m in probes.missed("t") if m.reason == "busy"]
    assert len(busy) >= 5 and all(a.slot < b.slot for a, b in itertools.pairwise(busy))
    assert [s.error for s in probes.samples("t")] == [STOPPED] * 2


def test_probes_reconnect_after_the_server_restarts_on_the_same_port(servers: Callable) -> None:
    first = servers(identity="c1/pod-a")
    with Prober({"t": first.url}, rate_hz=50, timeout_s=0.5, identity_header="X-Served-By") as probes:
        wait_for(lambda: probes.stats("t").recorded >= 5, 10, "5 answers")
        first.stop()
        wait_for(lambda: probes.stats("t").failed, 10, "a failed probe while the server is down")
        servers(identity="c2/pod-b", port=first.port)
        wait_for(
            lambda: [s for s in probes.samples("t") if s.served_by == "c2/pod-b"][4:], 10, "5 new answers"
        )
    samples = probes.samples("t")
    first_b = next(i for i, s in enumerate(samples) if s.served_by == "c2/pod-b")
    assert all(s.ok and s.served_by == "c1/pod-a" for s in samples[:5])
    assert all(s.ok and s.served_by == "c2/pod-b" for s in samples[first_b:])
    assert {s.error.partition(":")[0] for s in samples if not s.ok} <= {"refused", "closed", "reset"}


def test_stop_is_idempotent_and_leaves_no_thread_or_connection(servers: Callable) -> None:
    hang, ok = servers("hang"), servers()
    before = set(threading.enumerate())
    probes = Prober({"hang": hang.url, "ok": ok.url}, rate_hz=50, timeout_s=5)
    with probes:
        wait_for(lambda: probes.stats("hang").in_flight >= 3 and probes.stats("ok").recorded >= 3, 10, "load")
        probes.stop(drain_s=0)
    probes.stop()
    assert new_threads(before) == []
    stats = probes.stats("hang")
    assert stats.in_flight == 0 and stats.sent == stats.recorded == stats.failed
    wait_for(
        lambda: hang.clients_open() + ok.clients_open() == 0, 5, "the servers to see every connection closed"
    )


def test_an_exception_in_the_block_still_stops_the_probes(servers: Callable) -> None:
    server = servers()
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="drill failed"), Prober({"t": server.url}, rate_hz=50) as probes:
        wait_for(lambda: probes.stats("t").recorded >= 1, 10, "a probe")
        raise RuntimeError("drill failed")
    assert new_threads(before) == []
    wait_for(lambda: server.clients_open() == 0, 5, "the server to see the connection closed")


def test_a_failure_inside_the_prober_surfaces_in_live_figures_and_stop(
    servers: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(sample: ProbeSample, latency_bound: float | None) -> bool:
        raise ValueError("boom")

    monkeypatch.setattr(traffic, "probe_failed", broken)
    server = servers()
    before = set(threading.enumerate())
    probes = Prober({"t": server.url}, rate_hz=50).start()
    with pytest.raises(FleetDrillError, match="failed and stopped early: ValueError"):
        wait_for(lambda: probes.availability("t", last_s=1) == -1, 10, "the failure to surface")
    with pytest.raises(FleetDrillError, match="boom"):
        probes.stop()
    assert new_threads(before) == []


@pytest.mark.parametrize(
    ("targets", "options", "match"),
    [
        ({}, {}, "at least one target"),
        ({"t": "ftp://host/"}, {}, "probe target 't': bad URL"),
        ({"t": "http://host:99999/"}, {}, "probe target 't': bad URL"),
        ({"t": "http://host/"}, {"rate_hz": 0}, "rate_hz must be a positive number"),
        ({"t": "http://host/"}, {"timeout_s": 1, "latency_bound_s": 2}, "latency_bound_s must be in"),
        ({"t": "http://host/"}, {"max_in_flight": 0}, "max_in_flight must be at least 1"),
        ({"t": "http://host/"}, {"accepted_statuses": ["5xx"]}, "accepted_statuses: expected a status code"),
        ({"t": "http://host/"}, {"accepted_statuses": [200.0]}, "accepted_statuses: expected a status code"),
        ({"t": "http://host/"}, {"accepted_statuses": []}, "accepted_statuses: expected at least one"),
        (
            {"t": "http://host/"},
            {"identity_header": "X-Served-By", "identity_field": "cluster"},
            "identity_header or identity_field, not both",
        ),
        ({"t": "http://host/"}, {"identity_header": ""}, "must not be empty"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(targets: dict, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Prober(targets, **options)


def test_unknown_targets_are_named_and_a_prober_runs_once(servers: Callable) -> None:
    probes = Prober({"t": servers().url}, rate_hz=10)
    with pytest.raises(KeyError, match="no probe target 'x'; targets: t"):
        probes.samples("x")
    with probes, pytest.raises(FleetDrillError, match="already started"):
        probes.start()


@pytest.mark.parametrize(
    ("status", "options", "error"),
    [
        (404, {}, "status: HTTP 404 not an accepted status (accepted: 2xx)"),
        (301, {}, "status: HTTP 301 not an accepted status (accepted: 2xx)"),
        (301, {"accepted_statuses": ["2xx", 301]}, None),
        (
            302,
            {"accepted_statuses": ["2xx", 301]},
            "status: HTTP 302 not an accepted status (accepted: 2xx, 301)",
        ),
        (204, {}, None),
    ],
    ids=["404-default-backend", "301-by-default", "301-declared", "302-not-declared", "204"],
)
def test_only_the_accepted_statuses_are_successful_probes(
    servers: Callable, status: int, options: dict, error: str | None
) -> None:
    server = servers("status")
    server.status = status
    with Prober({"t": server.url}, rate_hz=20, **options) as probes:
        wait_for(lambda: probes.stats("t").recorded >= 3, 10, "3 probes")
        assert probes.availability("t", last_s=10) == (1.0 if error is None else 0.0)
    samples = probes.samples("t")
    assert {(s.ok, s.status, s.error) for s in samples} == {(error is None, status, error)}
    assert probes.stats("t").failed == (0 if error is None else len(samples))


def test_an_answer_without_the_declared_identity_is_not_the_app(servers: Callable) -> None:
    """An ingress default backend answers, but not as the app: whatever its status, the probe failed."""
    bare_ok, default_backend = servers("raw"), servers("raw")
    bare_ok.raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    default_backend.raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    targets = {"app": servers().url, "bare": bare_ok.url, "backend": default_backend.url}
    contract = {"accepted_statuses": ["2xx", "4xx"], "identity_header": "X-Served-By"}
    with Prober(targets, rate_hz=20, **contract) as probes:
        wait_for(lambda: min(probes.stats(t).recorded for t in targets) >= 3, 10, "3 probes per target")
    assert {(s.ok, s.served_by) for s in probes.samples("app")} == {(True, "c1/pod-a")}
    not_the_app = "identity: answer without X-Served-By: not the app"
    for target, status in [("bare", 200), ("backend", 404)]:
        assert {(s.ok, s.status, s.error, s.served_by) for s in probes.samples(target)} == {
            (False, status, not_the_app, None)
        }


def test_a_json_field_names_who_served(servers: Callable) -> None:
    chunked = servers("raw")
    chunked.raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b'7\r\n{"clust\r\n10\r\ner": "c3/pod-c"}\r\n0\r\n\r\n'
    )
    targets = {
        "json": servers("json", identity="c2/pod-b").url,
        "chunked": chunked.url,
        "text": servers().url,
    }
    with Prober(targets, rate_hz=20, identity_field="cluster") as probes:
        wait_for(lambda: min(probes.stats(t).recorded for t in targets) >= 3, 10, "3 probes per target")
    assert {(s.ok, s.served_by) for s in probes.samples("json")} == {(True, "c2/pod-b")}
    assert {(s.ok, s.served_by) for s in probes.samples("chunked")} == {(True, "c3/pod-c")}
    not_the_app = "identity: answer without JSON field 'cluster': not the app"
    assert {(s.ok, s.status, s.error) for s in probes.samples("text")} == {(False, 200, not_the_app)}


def test_probes_in_flight_at_stop_are_awaited_not_dropped(servers: Callable) -> None:
    server = servers("slow")
    server.delay = 0.3
    probes = Prober({"t": server.url}, rate_hz=50, timeout_s=2).start()
    wait_for(lambda: probes.stats("t").in_flight >= 5, 10, "5 probes in flight")
    stopping = time.monotonic()
    probes.stop()
    stats, samples = probes.stats("t"), probes.samples("t")
    assert stats.sent == stats.recorded == len(samples) and stats.in_flight == 0
    assert all(s.ok and s.latency >= 0.3 for s in samples)
    assert samples[-1].received > stopping, "the last probes were answered after stop began"


def test_a_down_target_s_probes_in_flight_at_stop_are_not_awaited(servers: Callable) -> None:
    """Its last DOWN_AT_STOP probes went unanswered: the ones in flight are recorded as stopped at once, not
    after their 5 s timeout (a target that answers, even 503, is awaited)."""
    server = servers("drop")
    probes = Prober({"t": server.url}, rate_hz=50, timeout_s=5).start()
    wait_for(lambda: probes.stats("t").failed >= DOWN_AT_STOP, 10, f"{DOWN_AT_STOP} failed probes")
    server.mode = "hang"
    wait_for(lambda: probes.stats("t").in_flight >= 3, 10, "3 probes in flight")
    probes.stop()
    samples = probes.samples("t")
    assert {s.error.split(":")[0] for s in samples} == {"closed", "stopped"}, (
        "none awaited until it timed out"
    )
    assert samples[-1].error == STOPPED
    assert probes.stats("t").in_flight == 0 and len(samples) == probes.stats("t").sent


@pytest.mark.parametrize(
    ("timeout", "drain", "error"),
    [(0.3, None, "timeout: no response within 0.3 s"), (5.0, 0.1, STOPPED)],
    ids=["given-up-at-the-timeout", "still-in-flight-after-the-drain"],
)
def test_a_hang_at_the_end_of_probing_is_recorded_as_failed(
    servers: Callable, timeout: float, drain: float | None, error: str
) -> None:
    server = servers("hang")
    probes = Prober({"t": server.url}, rate_hz=50, timeout_s=timeout).start()
    wait_for(lambda: probes.stats("t").in_flight >= 3, 10, "3 probes in flight")
    probes.stop(drain_s=drain)
    stats, samples = probes.stats("t"), probes.samples("t")
    assert stats.sent == stats.recorded == stats.failed == len(samples) >= 3
    assert {(s.ok, s.status, s.error) for s in samples} == {(False, None, error)}


@pytest.mark.parametrize(
    ("spec", "codes"), [("2xx", range(200, 300)), ("4xx", range(400, 500)), (301, range(301, 302))]
)
def test_status_specs_stand_for_their_codes(spec: int | str, codes: range) -> None:
    assert traffic.status_codes(spec) == codes


@pytest.mark.parametrize("spec", ["5xx", "1xx", "2XX", "200", 199, 500, True, 200.0, None])
def test_bad_status_specs_are_refused(spec: object) -> None:
    with pytest.raises(ValueError, match=r'expected a status code from 200 to 499 or a class "2xx"'):
        traffic.status_codes(spec)


def test_the_probing_thread_alone_gets_the_raised_priority_where_permitted() -> None:
    seen: dict[str, object] = {}

    def probing() -> None:
        seen["raised"] = raise_priority()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=probing)
    thread.start()
    thread.join(5)
    assert seen["raised"] == (os.geteuid() == 0)  # root may; the tests run as root on CI
    assert seen["nice"] == (PROBE_NICE if seen["raised"] else before)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before, "this thread is unchanged"
