"""Benchmark the accuracy of measured RTO: the harness's figure against the local fleet's ground truth.

Repeats a hard cluster loss of the serving cluster --trials times while the harness's Prober probes the
global endpoint at --rate Hz; each time the harness computes RTO as a drill does (measure.rto, stable
recovery as DrillSettings says) and the ground truth gives the true one: the global load balancer's
own log of every request it answered, from the fault (the same monotonic clock) to the receipt of the
first request of the final unbroken run of 2xx answers. The health checks' switch of the serving
cluster is printed beside it. Target: the worst error at most 2 probe intervals.
Prints figures and ratios; asserts nothing.
    python bench/rto_accuracy.py [--dir DIR] [--trials 20] [--rate 100]
"""

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness import measure
from harness.config import load_fleet
from harness.drill import DrillSettings
from harness.faults import signals_as_interrupts
from harness.localfleet import apps, groundtruth, supervisor
from harness.traffic import Prober

SETTLE_S = 1.0  # probes before the fault
AFTER_S = 4.0  # probes after traffic is back, so a stable recovery can be judged
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Trial:
    cluster: str
    measured: float
    truth: float
    switched: float

    @property
    def error(self) -> float:
        return self.measured - self.truth


def serving(url: str) -> str:
    """The cluster the global load balancer serves from, by its own report."""
    with urllib.request.urlopen(url + "/-/gslb", timeout=2) as response:
        return json.load(response)["target"] or ""


def wait(condition, what: str, deadline_s: float = DEADLINE_S) -> None:
    until = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > until:
            raise SystemExit(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.05)


def true_rto(folder: Path, lost: str, t0: float, end: float, timeout_s: float) -> float:
    """From t0 to the receipt of the first request of the last unbroken run of good answers: 2xx, from a
    cluster other than the lost one, within the client's timeout. (While the lost cluster's health
    checks still pass, the load balancer tries it, waits out its connect timeout and answers from the
    next cluster: a 2xx the client gave up on long before.)"""
    answered = [
        e
        for e in groundtruth.read(folder / groundtruth.FILE)
        if e["event"] == "request" and t0 <= e["started"] <= end and e["target"] == "/readyz"
    ]
    answered.sort(key=lambda e: e["started"])
    bad = [
        i
        for i, e in enumerate(answered)
        if not 200 <= e["status"] < 300 or e["cluster"] == lost or e["mono"] - e["started"] > timeout_s
    ]
    first = bad[-1] + 1 if bad else 0
    if first >= len(answered):
        raise SystemExit(f"the load balancer logged no good answer after losing {lost}")
    return answered[first]["started"] - t0


def logged_until(folder: Path) -> float:
    """When the newest request in the ground truth reached the load balancer."""
    requests = [e["started"] for e in groundtruth.read(folder / groundtruth.FILE) if e["event"] == "request"]
    return max(requests, default=0.0)


def trial(folder: Path, url: str, rate: float, settings: DrillSettings) -> Trial:
    cluster = serving(url)
    with Prober({"global": url + "/readyz"}, rate_hz=rate, timeout_s=settings.probe_timeout_s) as prober:
        time.sleep(SETTLE_S)
        supervisor.stop_cluster(folder, cluster)
        t0 = time.monotonic()
        wait(lambda: serving(url) not in ("", cluster), "another cluster to serve")
        time.sleep(AFTER_S)
        end = time.monotonic()
    result = measure.rto(prober.samples("global"), t0, settings.stable_count, settings.stable_seconds)
    if result.rto is None:
        raise SystemExit(f"the harness measured no RTO ({result.outcome}) after losing {cluster}")
    wait(lambda: logged_until(folder) >= end - 2 / rate, "the load balancer to append its request log")
    truth = groundtruth.read(folder / groundtruth.FILE)
    switched = next(e["mono"] for e in truth if e["event"] == "serving" and e["mono"] > t0) - t0
    measured_truth = true_rto(folder, cluster, t0, end, settings.probe_timeout_s)
    supervisor.start_cluster(folder, cluster)
    wait(lambda: cluster in served_clusters(url), f"{cluster} to be healthy again")
    return Trial(cluster, result.rto, measured_truth, switched)


def served_clusters(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/-/gslb", timeout=2) as response:
        backends = json.load(response)["backends"]
    return [name for name, state in backends.items() if state["healthy"]]


def bench(folder: Path, trials: int, rate: float) -> None:
    url = load_fleet(folder / "fleet.yaml").app(apps.APP).global_endpoint.rstrip("/")
    settings = DrillSettings()
    results = []
    for i in range(trials):
        result = trial(folder, url, rate, settings)
        results.append(result)
        print(
            f"trial {i + 1:2}: lost {result.cluster}: measured RTO {result.measured:.3f} s, ground truth"
            f" {result.truth:.3f} s, error {result.error * 1000:+.1f} ms; health checks switched at"
            f" {result.switched:.2f} s",
            flush=True,
        )
    worst, budget = max(abs(r.error) for r in results), 2.0 / rate
    median_rto = statistics.median(r.measured for r in results)
    median_error = statistics.median(r.error for r in results)
    print(
        f"{trials} trials at {rate:g} Hz: RTO median {median_rto:.3f} s; error median"
        f" {median_error * 1000:+.1f} ms, worst {worst * 1000:.1f} ms; target at most 2 probe intervals"
        f" ({budget * 1000:.0f} ms): ratio {worst / budget:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="a running fleet (default: start one of three clusters)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="probes per second")
    args = parser.parse_args()
    if args.dir:
        bench(args.dir, args.trials, args.rate)
        return
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-") as folder:
        supervisor.up(Path(folder), clusters=3)
        try:
            bench(Path(folder), args.trials, args.rate)
        finally:
            supervisor.down(Path(folder))


if __name__ == "__main__":
    with signals_as_interrupts():  # SIGTERM too takes the fleet down
        main()
