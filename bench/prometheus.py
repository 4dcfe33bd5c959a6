"""Benchmark Prometheus in the local fleet: what `fleet up --prometheus` adds to `fleet up`, per cluster,
and each Prometheus' memory (its RSS, as it reports it at /metrics, after --idle seconds of scraping): each
cluster's, and the global one's that federates them.

Runs `fleet up` without and with --prometheus in turn (A B A B ...: the machine's drift falls on both) and
prints the medians; asserts nothing. Start it under the fleet lock:
    flock /tmp/fleet.lock .venv/bin/python bench/prometheus.py [--clusters 2] [--runs 3] [--idle 30]
"""

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from harness.config import load_fleet
from harness.localfleet import build, supervisor

MB = 2**20


def rss_bytes(base: str) -> float:
    """process_resident_memory_bytes of the Prometheus at base."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1])
    raise RuntimeError(f"{base}/metrics has no process_resident_memory_bytes")


def one_up(clusters: int, prometheus: bool, idle_s: float) -> tuple[float, list[float], float]:
    """Seconds `fleet up` took, and with prometheus each cluster's Prometheus RSS and the global one's after
    idle_s."""
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-") as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        try:
            supervisor.up(folder, clusters, say=lambda _line: None, prometheus=prometheus)
            took = time.monotonic() - started
            if not prometheus:
                return took, [], 0.0
            time.sleep(idle_s)  # scraping every target for a while: the memory of a working server
            fleet = load_fleet(folder / "fleet.yaml")
            assert fleet.prometheus is not None
            sizes = [rss_bytes(c.prometheus.url) for c in fleet.clusters if c.prometheus]
            return took, sizes, rss_bytes(fleet.prometheus.url)
        finally:
            supervisor.down(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of scraping before the RSS")
    args = parser.parse_args()
    build.ensure_binaries(extra=build.OPTIONAL)  # the build is not the fleet's start
    plain, monitored, rss, federating = [], [], [], []
    for run in range(args.runs):
        plain.append(one_up(args.clusters, False, args.idle)[0])
        took, sizes, global_rss = one_up(args.clusters, True, args.idle)
        monitored.append(took)
        rss += sizes
        federating.append(global_rss)
        print(f"run {run + 1}: fleet up {plain[-1]:.1f} s, with --prometheus {took:.1f} s; RSS "
              + ", ".join(f"{size / MB:.0f} MB" for size in sizes)
              + f", the global one {global_rss / MB:.0f} MB")  # fmt: skip
    added = [(b - a) / args.clusters for a, b in zip(plain, monitored, strict=True)]
    print(
        f"{args.clusters} clusters, {args.runs} runs (medians): fleet up {statistics.median(plain):.1f} s,"
        f" with --prometheus {statistics.median(monitored):.1f} s: {statistics.median(added):.1f} s added per"
        f" cluster (spread {min(added):.1f}-{max(added):.1f}); Prometheus RSS per cluster after"
        f" {args.idle:.0f} s of scraping {statistics.median(rss) / MB:.0f} MB"
        f" ({min(rss) / MB:.0f}-{max(rss) / MB:.0f}), the global one's"
        f" {statistics.median(federating) / MB:.0f} MB"
    )


if __name__ == "__main__":
    main()
