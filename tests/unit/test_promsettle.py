"""Waiting for the window's data before PromQL objectives are judged: each Prometheus asked until it scraped
every target after the window's end, the fleet-wide one after the clusters' had; a Prometheus that does not
get there is an error verdict naming the target it lacks, never a judgement of the lookback's stale value."""

from __future__ import annotations

import re
import time
from pathlib import Path

from harness.prometheus import FLEET, PrometheusError, Series
from harness.promsettle import OLDEST_SCRAPE, settle
from harness.promslo import Windows, evaluate
from tests.unit.test_promql import load, objective, with_objectives


class Scraping:
    """A Prometheus whose oldest target scrape is at `stale` (wall time; default 30 s behind now) until
    `fresh_at`, then now; `down`: it does not answer."""

    def __init__(self, where: str, fresh_at: float, stale: float | None = None, down: bool = False) -> None:
        self.where, self.fresh_at, self.stale, self.down = where, fresh_at, stale, down
        self.asked: list[float] = []

    def query(self, promql: str) -> list[Series]:
        assert promql == OLDEST_SCRAPE
        now = time.time()
        self.asked.append(now)
        if self.down:
            raise PrometheusError(f"Prometheus {self.where} (http://lost:9090) /api/v1/query: timed out")
        last = now if now >= self.fresh_at else (now - 30 if self.stale is None else self.stale)
        return [Series({"job": "apiserver", "instance": "10.0.0.1:6443"}, ((now, last),))]


class Fleetwide:
    def __init__(self, *servers: Scraping) -> None:
        self.servers = {s.where: s for s in servers}

    def get(self, where: str | None) -> Scraping:
        return self.servers[where or FLEET]


def test_the_fleetwide_prometheus_settles_after_the_clusters_it_may_federate() -> None:
    """The fleet-wide Prometheus scraped everything just after the window's end, but before the cluster's
    had the window's data: what it federated then cannot hold it, so it waits for scrapes after that."""
    end = time.time()
    cluster = Scraping("us-east", fresh_at=end + 0.6)
    fleet = Scraping(FLEET, fresh_at=end + 1.5, stale=end + 0.1)
    assert settle(Fleetwide(cluster, fleet), {FLEET}, ["us-east"], end, deadline_s=10) == {}  # type: ignore[arg-type]
    assert cluster.asked[-1] >= end + 0.6 and fleet.asked[-1] >= end + 1.5


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
    assert problems[FLEET].startswith("Prometheus fleet had not scraped every target since the window's end")
    found = re.search(
        r'\{instance="10.0.0.1:6443", job="apiserver"\} last at ([\d.]+) s before it$', problems[FLEET]
    )
    assert found and 20 < float(found[1]) <= 30, "30 s behind now, less the time settling took"
    now = time.monotonic()
    windows = Windows(now - 60, now, now - 50, None)
    done = evaluate(fleet, fleet.apps[0], Fleetwide(Scraping(FLEET, float("inf"))), windows, settle_s=0.2)  # type: ignore[arg-type]
    (verdict,) = done.verdicts
    assert verdict.status == "error" and "data not whole: Prometheus fleet had not scraped" in verdict.message
