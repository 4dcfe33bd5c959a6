"""What a fleet's serving path does while another fleet comes up on the same machine, as on a CI runner with
two test workers: a drill's probes (ProbeProcess, 50 Hz on the global endpoint and on every cluster's, the
primary's endpoint carrying most of them as in a drill) on fleet A, first alone for --baseline seconds, then
while `fleetdrill fleet up` starts fleet B (by default three clusters with Velero and PostgreSQL, the
heaviest fleet the suite starts). Prints, per target and per phase, probes, failures, the median, p99 and
slowest latency, and the times fleet A's load balancer changed the clusters it serves (a health check that
failed twice in a row under the neighbour's load); asserts nothing.

    .venv/bin/python bench/neighbour.py [--baseline 10] [--neighbour-args="--postgres"] [--runs 1]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

from harness.config import load_fleet
from harness.localfleet import groundtruth, supervisor
from harness.probeprocess import ProbeProcess
from harness.samples import ProbeSample

RATE_HZ, TIMEOUT_S = 50.0, 2.0


def targets(folder: Path) -> dict[str, str]:
    """The app's global endpoint and every cluster's, each on its health path (as a drill probes them)."""
    app = load_fleet(folder / "fleet.yaml").app("orders")
    found = {"global": urljoin(app.global_endpoint or "", app.health_path)}
    return found | {cluster: urljoin(url, app.health_path) for cluster, url in app.endpoints.items()}


def summary(samples: list[ProbeSample]) -> str:
    """Probes, failures and latency figures of one target in one phase."""
    if not samples:
        return "no probes"
    latencies = sorted(s.latency for s in samples)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    failed = sum(1 for s in samples if not s.ok)
    return (
        f"{len(samples):5d} probes, {failed:4d} failed, median {statistics.median(latencies) * 1000:6.1f} ms,"
        f" p99 {p99 * 1000:7.1f} ms, slowest {latencies[-1] * 1000:7.1f} ms"
    )


def neighbour_up(extra: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `fleetdrill fleet up` of fleet B in a folder of its own, in the background."""
    folder = Path(tempfile.mkdtemp(prefix="fleetdrill-neighbour-"))
    argv = [sys.executable, "-m", "harness.cli", "fleet", "up", "--dir", str(folder), *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), folder


def run(folder: Path, baseline_s: float, extra: list[str]) -> None:
    """One trial: probes alone, then beside fleet B's `fleet up`, then fleet B down (on every exit path)."""
    probed = targets(folder)
    probes = ProbeProcess(probed, rate_hz=RATE_HZ, timeout_s=TIMEOUT_S).start()
    process, other = None, None
    try:
        started = time.monotonic()
        time.sleep(baseline_s)  # the baseline is a fixed stretch of time to measure, not a wait for an event
        neighbour_from = time.monotonic()
        process, other = neighbour_up(extra)
        code = process.wait(timeout=600)
        neighbour_to = time.monotonic()
        probes.stop()
        report(folder, probes, probed, (started, neighbour_from, neighbour_to))
        print(f"fleet B up: exit {code} after {neighbour_to - neighbour_from:.1f} s ({' '.join(extra)})")
    finally:
        probes.stop()
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if other is not None:
            supervisor.down(other)
            shutil.rmtree(other, ignore_errors=True)


def report(folder: Path, probes: ProbeProcess, probed: dict[str, str], moments: tuple[float, ...]) -> None:
    """Each target's figures alone and beside fleet B, and fleet A's load balancer's changes meanwhile."""
    started, neighbour_from, neighbour_to = moments
    for target in probed:
        samples = probes.samples(target)
        alone = [s for s in samples if started <= s.sent < neighbour_from]
        beside = [s for s in samples if neighbour_from <= s.sent < neighbour_to]
        print(f"  {target:8s} alone:  {summary(alone)}")
        print(f"  {target:8s} beside: {summary(beside)}")
    truth = groundtruth.read(folder / groundtruth.FILE)
    flaps = [e for e in truth if e["event"] == "serving" and neighbour_from <= e["mono"] < neighbour_to]
    print(f"  load balancer: {len(flaps)} change(s) of the serving clusters while fleet B came up")
    for event in flaps:
        print(f"    +{event['mono'] - neighbour_from:5.1f} s: {event['serving']} ({event['reason']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="fleet A, running (default: start one of two clusters)")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of probes before fleet B")
    parser.add_argument(
        "--neighbour-args", default="--postgres", help="fleet B's `fleet up` options (default: --postgres)"
    )
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    extra = shlex.split(args.neighbour_args)
    if args.dir:
        for _ in range(args.runs):
            run(args.dir, args.baseline, extra)
        return
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-") as folder:
        supervisor.up(Path(folder), clusters=2)
        try:
            for _ in range(args.runs):
                run(Path(folder), args.baseline, extra)
        finally:
            supervisor.down(Path(folder))


if __name__ == "__main__":
    main()
