"""DNS-based failover: the watcher and the probes against a real UDP DNS server (dnspython answering in a
thread), the RTO's phases from synthetic series, and the zone the local fleet's GSLB publishes."""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from harness.config import GlobalDns, load_fleet
from harness.dnsphases import PHASES, judge, split
from harness.dnswatch import DnsAnswer, DnsWatcher, address_of, ask
from harness.localfleet import dnsserver
from harness.samples import ProbeSample
from harness.traffic import Prober
from tests.conftest import wait_for
from tests.unit.test_config import changed, error_of, write

NAME = "app.example.test"


class FakeDns:
    """A UDP DNS server on 127.0.0.1: answers NAME with `addresses` and `ttl`, anything else NXDOMAIN."""

    def __init__(self) -> None:
        self.addresses, self.ttl = ["127.0.0.1"], 7
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.server = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            if query.question[0].name.to_text().rstrip(".") == NAME:
                response.answer.append(dns.rrset.from_text(f"{NAME}.", self.ttl, "IN", "A", *self.addresses))
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_dns() -> Iterator[FakeDns]:
    server = FakeDns()
    yield server
    server.close()


def settings(server: str, resolver: str | None = None) -> GlobalDns:
    return GlobalDns(
        name=NAME, authoritative=server, resolver=resolver, health_interval=1.0, failure_threshold=2
    )


def test_ask_returns_addresses_and_ttl_or_the_failure(fake_dns: FakeDns) -> None:
    answer = ask(NAME, fake_dns.server, "authoritative", 0.5)
    assert (answer.addresses, answer.ttl, answer.error) == (("127.0.0.1",), 7, None)
    assert ask("other.test", fake_dns.server, "resolver", 0.5).error == "NXDOMAIN"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        mute = f"127.0.0.1:{silent.getsockname()[1]}"
        timed_out = ask(NAME, mute, "resolver", 0.2)
    assert timed_out.error is not None and timed_out.error.startswith("timeout")
    assert 0.15 < timed_out.received - timed_out.sent < 1.0


def test_the_watcher_asks_both_servers_about_once_per_interval(fake_dns: FakeDns) -> None:
    with DnsWatcher(settings(fake_dns.server, fake_dns.server), interval_s=0.1, timeout_s=0.1) as watcher:
        wait_for(lambda: len(watcher.answers("resolver")) >= 3, 5, "three rounds of answers")
        fake_dns.addresses = ["127.0.0.2"]
        wait_for(
            lambda: watcher.answers("authoritative")[-1].addresses == ("127.0.0.2",), 5, "the new answer"
        )
    answers = watcher.answers()
    assert {a.server for a in answers} == {"authoritative", "resolver"}
    sent = [a.sent for a in watcher.answers("authoritative")]
    assert all(0.05 < b - a < 0.5 for a, b in itertools.pairwise(sent))
    count = len(watcher.answers())
    assert len(watcher.answers()) == count  # stopped: nothing more is asked


class Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_probes_resolve_through_the_resolver_and_keep_the_address(fake_dns: FakeDns) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = http.server_address[1]
    try:
        targets = {"named": f"http://{NAME}:{port}/", "direct": f"http://127.0.0.1:{port}/"}
        with Prober(targets, rate_hz=20, resolvers={"named": fake_dns.server}) as prober:
            wait_for(lambda: len(prober.samples("named")) >= 3, 5, "probes of the name")
            fake_dns.addresses = ["127.0.0.9"]  # nothing listens there: new connections fail
            wait_for(lambda: any(not s.ok for s in prober.samples("named")), 10, "a probe of the new address")
    finally:
        http.shutdown()
    named = prober.samples("named")
    assert named[0].ok and named[0].address == "127.0.0.1"
    assert all(s.address == "127.0.0.1" for s in prober.samples("direct") if s.ok)
    with pytest.raises(Exception, match="resolvers name no target: nowhere"):
        Prober(targets, resolvers={"nowhere": fake_dns.server})


def test_a_name_the_resolver_does_not_know_is_a_dns_failure(fake_dns: FakeDns) -> None:
    with Prober({"named": "http://unknown.test:9/"}, rate_hz=20, resolvers={"named": fake_dns.server}) as p:
        wait_for(lambda: p.samples("named"), 5, "a probe")
    sample = p.samples("named")[0]
    assert not sample.ok and sample.error == f"dns: unknown.test at {fake_dns.server}: NXDOMAIN"


def answers(who: str, series: list[tuple[float, str, int]]) -> list[DnsAnswer]:
    return [DnsAnswer(who, t, t + 0.01, (address,) if address else (), ttl) for t, address, ttl in series]  # type: ignore[arg-type]


OLD, NEW = "10.0.0.1", "10.0.0.2"
END = 200.0


def failover(ttl: int, resolver_moves: float) -> tuple[list[DnsAnswer], list[ProbeSample]]:
    """t0 = 100; the authoritative answer moves at 103, the resolver's at resolver_moves; the probes fail
    from 100 and connect to NEW (and succeed) from resolver_moves + 0.5."""
    series = answers("authoritative", [(98, OLD, ttl), (99, OLD, ttl), *((t, NEW, ttl) for t in (103, 104))])
    series += answers("resolver", [(98.5, OLD, ttl), (102.5, OLD, ttl - 4), (resolver_moves, NEW, ttl)])
    probes = [ProbeSample.of("global-name", 99.0, 99.01, address=OLD)]
    for tenth in range(1000, round(resolver_moves * 10) + 30):
        t, moved = tenth / 10, tenth >= round(resolver_moves * 10) + 5
        error, address = (None, NEW) if moved else ("timeout", OLD)
        probes.append(ProbeSample.of("global-name", t, t + 0.01, ok=moved, error=error, address=address))
    return series, probes


def test_the_rto_splits_into_the_four_phases_that_sum_to_it() -> None:
    series, probes = failover(ttl=5, resolver_moves=108.0)
    result = split(series, probes, 100.0, 108.5, health_interval_s=1.0, failure_threshold=2, end=END)
    assert result.error is None and result.before == (OLD,) and result.ttl_s == 5
    assert [(p.name, round(p.seconds, 2)) for p in result.phases] == [
        ("detection", 3.0),
        ("cache expiry", 5.0),
        ("DNS switch", 0.5),
        ("first good request", 0.0),
    ]
    assert sum(p.seconds for p in result.phases) == pytest.approx(8.5)
    assert result.bound_s == 7.0 and result.phase("cache expiry").bound_s == 5.0
    verdict = judge(result, 8.5, 20.0)
    assert verdict.status == "pass" and "bound interval x threshold + TTL 7.0 s" in verdict.message


def test_a_long_ttl_fails_the_rto_naming_the_cache_expiry() -> None:
    series, probes = failover(ttl=60, resolver_moves=163.0)
    result = split(series, probes, 100.0, 163.5, health_interval_s=1.0, failure_threshold=2, end=END)
    verdict = judge(result, 63.5, 20.0)
    assert verdict.status == "fail"
    assert "cache expiry took 60.0 s (the resolver kept 10.0.0.1 for its TTL of 60 s)" in verdict.message
    assert verdict.message.endswith("TTL 62.0 s; detection past its bound of 2.0 s")


def test_a_resolver_still_caching_the_lost_address_past_the_objective_fails_naming_cache_expiry() -> None:
    series, probes = failover(ttl=60, resolver_moves=163.0)
    series = [a for a in series if a.sent < 130]  # observing stopped at 130 with the resolver still old
    probes = [p for p in probes if p.sent < 130]
    result = split(series, probes, 100.0, None, health_interval_s=1.0, failure_threshold=2, end=130.0)
    assert [(p.name, p.finished) for p in result.phases] == [("detection", True), ("cache expiry", False)]
    verdict = judge(result, None, 20.0)
    assert verdict.status == "fail" and verdict.measured == "RTO > 30.0 s"
    assert "cache expiry still under way after 27.0 s (the resolver kept 10.0.0.1 for its TTL of 60 s)" in (
        verdict.message
    )
    early = judge(split(series, probes, 100.0, None, 1.0, 2, end=110.0), None, 20.0)
    assert early.status == "error" and "before the objective, with cache expiry on" in early.message


def test_an_answer_that_moved_before_t0_is_an_error_naming_when() -> None:
    """The load balancer failed over before the fault (its health check failed on a busy machine): the
    phases would be measured from the new answer, the resolver's cached old one taken for the move."""
    series, probes = failover(ttl=60, resolver_moves=163.0)
    series = [a for a in series if a.server != "authoritative" or a.sent >= 100]
    series += answers("authoritative", [(90, OLD, 60), (91.5, NEW, 60), (99, NEW, 60)])
    result = split(series, probes, 100.0, None, health_interval_s=1.0, failure_threshold=2, end=130.0)
    assert result.error == (
        "the authoritative server's answer moved 8.5 s before t0, from 10.0.0.1 to 10.0.0.2: the load "
        "balancer failed over before the fault, so what the fault moved cannot be told"
    )
    assert not result.phases and judge(result, None, 20.0).status == "error"


def test_an_answer_that_moved_and_came_back_in_both_servers_before_t0_is_measured_and_noted() -> None:
    """A health check failed twice on a busy machine and passed again 1.5 s later: at t0 the authoritative
    server and the resolver (whose cache outlived the flap) give out the first answer again, so the phases
    are measured from it, and the verdict says the load balancer flapped."""
    series, probes = failover(ttl=60, resolver_moves=163.0)
    series = [a for a in series if a.server != "authoritative" or a.sent >= 100]
    series += answers("authoritative", [(90, OLD, 60), (91.5, NEW, 60), (93, OLD, 60), (99, OLD, 60)])
    series += answers("resolver", [(99.2, OLD, 51)])
    result = split(series, probes, 100.0, None, health_interval_s=1.0, failure_threshold=2, end=170.0)
    assert result.error is None and result.before == (OLD,)
    assert tuple(p.name for p in result.phases) == PHASES
    assert result.note == (
        "the authoritative server's answer moved 8.5 s before t0, from 10.0.0.1 to 10.0.0.2, and it and the "
        "runner's resolver gave out 10.0.0.1 again at t0 (the load balancer flapped)"
    )
    assert result.note in judge(result, None, 20.0).message


@pytest.mark.parametrize(
    ("resolver", "last"),
    [
        ([(99.2, NEW, 58)], (99, OLD, 60)),
        ([(98.0, OLD, 50)], (99, OLD, 60)),
        ([(99.2, OLD, 50)], (99.5, NEW, 60)),
    ],
    ids=["resolver-still-new", "authoritative-new-after-resolver", "authoritative-new-at-t0"],
)
def test_an_answer_back_in_one_server_only_is_still_an_error(
    resolver: list[tuple[float, str, int]], last: tuple[float, str, int]
) -> None:
    """Back in the authoritative server while the resolver gives out the flapped answer it fetched meanwhile,
    or moved again after the resolver's last answer: what either gives out at t0 is not known."""
    series, probes = failover(ttl=60, resolver_moves=163.0)
    series = [a for a in series if a.sent >= 100]
    series += answers("authoritative", [(90, OLD, 60), (91.5, NEW, 60), (93, OLD, 60), (98.5, NEW, 60), last])
    series += answers("resolver", resolver)
    result = split(series, probes, 100.0, None, health_interval_s=1.0, failure_threshold=2, end=170.0)
    assert result.error is not None and "failed over before the fault" in result.error and not result.phases


@pytest.mark.parametrize(
    ("drop", "error"),
    [
        ("authoritative-before", "no answer from the authoritative server before t0"),
        ("resolver", "cache expiry: no answer from the runner's resolver"),
        ("addresses", "DNS switch: the global name's probes recorded no address after t0"),
    ],
)
def test_a_phase_not_seen_is_an_error_never_a_pass(drop: str, error: str) -> None:
    series, probes = failover(ttl=5, resolver_moves=108.0)
    if drop == "authoritative-before":
        series = [a for a in series if not (a.server == "authoritative" and a.sent < 100)]
    elif drop == "resolver":
        series = [a for a in series if a.server != "resolver"]
    else:
        probes = [ProbeSample.of(p.target, p.sent, p.received, ok=p.ok, error=p.error) for p in probes]
    result = split(series, probes, 100.0, 108.5, health_interval_s=1.0, failure_threshold=2, end=END)
    assert result.error is not None and error in result.error and not result.phases
    assert judge(result, 8.5, 20.0).status == "error"


def test_the_published_zone_parses_and_holds_the_serving_addresses() -> None:
    text = dnsserver.zone_text("fleet.local", "198.18.0.68", {"orders.fleet.local": [OLD, NEW]}, 5, 42)
    zone = dns.zone.from_text(text, origin="fleet.local.")
    records = zone.find_rdataset("orders", dns.rdatatype.A)
    assert sorted(r.address for r in records) == [OLD, NEW] and records.ttl == 5
    assert zone.find_rdataset("@", dns.rdatatype.SOA)[0].serial == 42
    assert dnsserver.in_zone("orders.fleet.local.") and not dnsserver.in_zone("orders.example.com")


def test_an_end_the_watcher_saw_late_is_the_earlier_end_a_later_phase_proves() -> None:
    """The watcher asked the resolver at 108 (moved) while the probes reached NEW at 106.5: the resolver had
    moved by 106.5, and the phases still sum to the RTO."""
    series, probes = failover(ttl=5, resolver_moves=108.0)
    probes = [replace(p, ok=True, error=None, address=NEW) if p.sent >= 106.5 else p for p in probes]
    result = split(series, probes, 100.0, 106.5, health_interval_s=1.0, failure_threshold=2, end=END)
    assert [(p.name, round(p.seconds, 2)) for p in result.phases] == [
        ("detection", 3.0),
        ("cache expiry", 3.5),
        ("DNS switch", 0.0),
        ("first good request", 0.0),
    ]


def test_a_bad_dns_setting_is_one_line_naming_the_field(tmp_path: Path) -> None:
    dns_ = {"name": NAME, "authoritative": "ns1.example", "health_interval": "1s", "failure_threshold": 2}
    message = error_of(write(tmp_path, changed("apps.0.dns", dns_)))
    assert message.startswith("apps[0].dns.authoritative:") and "ns1.example" in message
    settings_ = load_fleet(write(tmp_path, changed("apps.0.dns", dns_ | {"authoritative": "10.0.0.1:5353"})))
    assert address_of(settings_.app("orders").dns.authoritative) == ("10.0.0.1", 5353)  # type: ignore[union-attr]
