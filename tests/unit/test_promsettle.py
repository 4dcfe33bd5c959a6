"""Waiting for the window's data before PromQL objectives are judged: each Prometheus asked until every
sample stamped up to the window's end is in (a scrape under way at the end, a federation hop), the
fleet-wide one after the clusters' had theirs; a Prometheus that does not get there is an error verdict
naming the target it lacks, never a judgement of the lookback's stale value."""

from __future__ import annotations

import re
import time
from pathlib import Path

from harness.config import Prometheus
from harness.prometheus import FLEET, PrometheusError, Target
from harness.promsettle import settle
from harness.promslo import Windows, evaluate
from tests.unit.test_promql import load, objective, with_objectives

APISERVER = {"job": "apiserver", "instance": "10.0.0.1:6443"}


class Scraping:
    """A Prometheus with one target whose last scrape is at `stale` (wall time; default 30 s behind now)
    until `fresh_at`, then now; `down`: it does not answer; `also`: more targets, as they are."""

    def __init__(
        self,
        where: str,
        fresh_at: float,
        stale: float | None = None,
        *,
        down: bool = False,
        url: str = "https://10.0.0.1:6443/metrics",
        interval: float | None = None,
        also: tuple[Target, ...] = (),
        no_targets_api: bool = False,
        ingest_delay: float | None = None,
    ) -> None:
        self.where, self.fresh_at, self.stale, self.down = where, fresh_at, stale, down
        self.url, self.interval, self.also, self.no_targets_api = url, interval, also, no_targets_api
        self.settings = Prometheus(url="http://prometheus:9090", ingest_delay=ingest_delay)
        self.asked: list[float] = []

    def targets(self) -> list[Target]:
        now = time.time()
        self.asked.append(now)
        if self.down:
            raise PrometheusError(f"Prometheus {self.where} (http://lost:9090) /api/v1/targets: timed out")
        if self.no_targets_api:
            raise PrometheusError(
                f"Prometheus {self.where} (http://mimir) /api/v1/targets: HTTP 404: 404 page not found", 404
            )
        last = now if now >= self.fresh_at else (now - 30 if self.stale is None else self.stale)
        return [Target(APISERVER, "up", last, self.url, self.interval), *self.also]


class Fleetwide:
    def __init__(self, *servers: Scraping) -> None:
        self.servers = {s.where: s for s in servers}

    def get(self, where: str | None) -> Scraping:
        return self.servers[where or FLEET]


def test_the_fleetwide_prometheus_settles_after_the_clusters_it_federates() -> None:
    """The fleet-wide Prometheus federated the cluster's just after the window's end, but before the
    cluster's had the window's data: what it took then cannot hold it (federated series keep their first
    timestamps), so it waits for a /federate scrape after that."""
    end = time.time()
    cluster = Scraping("us-east", fresh_at=end + 0.6)
    federate = "http://198.18.0.195:9090/federate?match%5B%5D=up"
    fleet = Scraping(FLEET, fresh_at=end + 1.5, stale=end + 0.1, url=federate, interval=5.0)
    assert settle(Fleetwide(cluster, fleet), {FLEET}, ["us-east"], end, deadline_s=10) == {}  # type: ignore[arg-type]
    assert cluster.asked[-1] >= end + 0.6 and fleet.asked[-1] >= end + 1.5


def test_a_direct_target_is_whole_once_its_scrape_due_before_the_end_is_in() -> None:
    """Scraped every 5 s: a last scrape 2 s before the end leaves none due before it; one 4.5 s before may
    have the next under way (the scheduler drifts), so it waits for that one."""
    end = time.time()
    calm = Scraping(FLEET, fresh_at=float("inf"), stale=end - 2, interval=5.0)
    assert settle(Fleetwide(calm), {FLEET}, [], end, deadline_s=0.2) == {}  # type: ignore[arg-type]
    due = Scraping(FLEET, fresh_at=end + 0.5, stale=end - 4.5, interval=5.0)
    assert settle(Fleetwide(due), {FLEET}, [], end, deadline_s=10) == {}  # type: ignore[arg-type]
    assert due.asked[-1] >= end + 0.5


def test_a_target_whose_scrape_fails_is_not_waited_for() -> None:
    """A lost cluster's /federate target (down) has nothing more to give; one never scraped yet neither."""
    now = time.time()
    lost = Target({"job": "federate", "instance": "198.18.0.195:9090"}, "down", now - 40)
    new = Target({"job": "pods", "instance": "100.64.0.9:8080"}, "unknown", 0.0)
    servers = Fleetwide(Scraping(FLEET, fresh_at=now + 0.3, also=(lost, new)))
    assert settle(servers, {FLEET}, [], now, deadline_s=10) == {}  # type: ignore[arg-type]


def test_a_lost_clusters_prometheus_is_passed_over_for_the_fleetwide_one() -> None:
    now = time.time()
    servers = Fleetwide(Scraping("us-east", now, down=True), Scraping(FLEET, fresh_at=now))
    assert settle(servers, {FLEET}, ["us-east"], now - 1, deadline_s=5) == {}  # type: ignore[arg-type]
    problems = settle(servers, {FLEET, "us-east"}, ["us-east"], now - 1, deadline_s=5)  # type: ignore[arg-type]
    assert list(problems) == ["us-east"] and "timed out" in problems["us-east"]


def test_data_not_whole_by_the_deadline_is_an_error_verdict_naming_the_target(tmp_path: Path) -> None:
    fleet = load(tmp_path, with_objectives(objective(), prometheus={"url": "http://thanos:9090"}))
    stale = Fleetwide(Scraping(FLEET, fresh_at=float("inf")))
    problems = settle(stale, {FLEET}, [], time.time(), deadline_s=0.2)  # type: ignore[arg-type]
    assert problems[FLEET].startswith("Prometheus fleet did not hold the window's data within 0.2 s: ")
    found = re.search(
        r'\{instance="10.0.0.1:6443", job="apiserver"\} last scraped ([\d.]+) s before the window\'s end$',
        problems[FLEET],
    )
    assert found and 20 < float(found[1]) <= 30, "30 s behind now, less the time settling took"
    now = time.monotonic()
    windows = Windows(now - 60, now, now - 50, None)
    done = evaluate(fleet, fleet.apps[0], Fleetwide(Scraping(FLEET, float("inf"))), windows, settle_s=0.2)  # type: ignore[arg-type]
    (verdict,) = done.verdicts
    assert verdict.status == "error" and "data not whole: Prometheus fleet did not hold" in verdict.message


def test_a_store_without_targets_waits_its_ingest_delay_or_names_it() -> None:
    """A remote-write store (Mimir) has no targets API: with ingest_delay, the drill waits that long past
    the window and reads no targets; without it, the error says to set it."""
    end = time.time()
    declared = Scraping(FLEET, fresh_at=float("inf"), no_targets_api=True, ingest_delay=0.4)
    assert settle(Fleetwide(declared), {FLEET}, [], end, deadline_s=10) == {}  # type: ignore[arg-type]
    assert time.time() >= end + 0.4 and declared.asked == []
    silent = Scraping(FLEET, fresh_at=float("inf"), no_targets_api=True)
    problems = settle(Fleetwide(silent), {FLEET}, [], end, deadline_s=10)  # type: ignore[arg-type]
    assert problems[FLEET].endswith(
        "HTTP 404: 404 page not found: a store without the targets API (Mimir, Amazon Managed"
        " Prometheus) needs its ingest_delay set"
    )
