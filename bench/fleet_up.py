"""Benchmark the local fleet: build time, start-up time and idle memory per cluster.

Prints figures and their ratio to the targets of issue 10; asserts nothing.
    python bench/fleet_up.py [--cold] [--clusters 3 10] [--idle 20]
--cold builds into empty Go and fleetdrill caches (minutes, about 10 GB of disk).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.localfleet import build, readiness, supervisor
from harness.localfleet.state import STATE

CONTROL_PLANE = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
TARGETS = {
    "ready_3": 8.0,
    "ready_10": 30.0,
    "serving_3": 20.0,
    "rss_per_cluster_mb": 350.0,
    "warm_build": 2.0,
}


def timed_build(env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "harness.cli", "fleet", "build"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (the binaries' text) divided among the processes sharing them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_fleet(clusters: int, idle_s: float) -> None:
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-") as tmp:
        folder = Path(tmp)
        original = readiness.wait_ready
        stages: list[
            float
        ] = []  # seconds from `fleet up` until every cluster reached api, controllers, nodes

        def recording_wait(*args, **kwargs):
            called = time.monotonic()
            reached = original(*args, **kwargs)
            for stage in range(len(stages), max(map(len, reached.values()))):
                stages.append(called - started + max(times[stage] for times in reached.values()))
            return reached

        readiness.wait_ready = recording_wait
        started = time.monotonic()
        try:
            state = supervisor.up(folder, clusters, say=lambda _line: None)
            total = time.monotonic() - started
            api, controllers, nodes = stages
            target = TARGETS.get(f"ready_{clusters}")
            ratio = f" (target {target:.0f} s: {controllers / target:.2f}x)" if target else ""
            app_target = TARGETS.get(f"serving_{clusters}")
            app_ratio = f" (target {app_target:.0f} s: {total / app_target:.2f}x)" if app_target else ""
            print(
                f"{clusters} clusters: every API ready {api:.1f} s, "
                f"controllers working {controllers:.1f} s{ratio}, nodes Ready {nodes:.1f} s; "
                f"whole `fleet up` to the app serving globally {total:.1f} s{app_ratio}"
            )
            time.sleep(idle_s)  # let start-up garbage be collected: we measure the idle fleet
            rows = supervisor.status(folder)
            by_component: dict[str, list[tuple[int, int]]] = {}
            for row, record in zip(rows, state.processes.values(), strict=True):
                component = "node agent" if "-node-" in row.component else row.component
                by_component.setdefault(component, []).append((row.rss_bytes, pss_bytes(record["pid"])))
            rss_total = pss_total = 0.0
            for component, values in by_component.items():
                rss = statistics.mean(v[0] for v in values) / 2**20
                pss = statistics.mean(v[1] for v in values) / 2**20
                if component in CONTROL_PLANE:
                    rss_total, pss_total = rss_total + rss, pss_total + pss
                print(f"  {component:<24} RSS {rss:6.0f} MB   PSS {pss:6.0f} MB   (mean per process)")
            target = TARGETS["rss_per_cluster_mb"]
            print(
                f"  control plane per cluster: RSS {rss_total:.0f} MB "
                f"({rss_total / target:.2f}x target {target:.0f} MB), "
                f"PSS {pss_total:.0f} MB ({pss_total / target:.2f}x)"
            )
        finally:
            readiness.wait_ready = original
            if (folder / STATE).exists():
                supervisor.down(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a build from empty caches")
    parser.add_argument("--clusters", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--idle", type=float, default=20.0, help="seconds idle before reading memory")
    args = parser.parse_args()
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="fleetdrill-cold-") as tmp:
            env = dict(
                os.environ, GOCACHE=f"{tmp}/gocache", GOMODCACHE=f"{tmp}/gomod", FLEETDRILL_CACHE=f"{tmp}/fd"
            )
            cold = timed_build(env)
            print(f"first (cold) build: {cold:.0f} s")
            subprocess.run(["go", "clean", "-modcache"], env=env, check=False)
    build.ensure_binaries()
    warm = timed_build(dict(os.environ))
    target = TARGETS["warm_build"]
    print(f"warm `fleet build`: {warm:.2f} s (target {target:.0f} s: {warm / target:.2f}x)")
    for clusters in args.clusters:
        measure_fleet(clusters, args.idle)


if __name__ == "__main__":
    main()
