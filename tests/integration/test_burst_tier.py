"""The burst tier (`fleet up --burst`): a load above what the primary cluster's nodes hold through the web
tier's global endpoint. The primary serves what its ready pods take (the overflow Gslb's capacity), the HPA
scales it out until pods stay Pending, the excess is served by the next cluster, and once the load stops
the primary serves alone again."""

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import load_fleet
from harness.localfleet import build
from tests.conftest import started_fleet, wait_for

WORKERS = 32
"""Requests in flight at once: above what the primary's nodes hold (some 5 pods x 2 in flight)."""


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "burst", clusters=2, burst=True) as folder:
        yield folder


class Load:
    """WORKERS threads asking the global endpoint as fast as answers come, counting who served."""

    def __init__(self, url: str) -> None:
        self.url, self.stop = url, threading.Event()
        self.served: list[tuple[float, str, float]] = []  # (time, cluster or error, seconds)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(WORKERS)]

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    who = (response.headers.get("X-Served-By") or "?").split("/")[0]
            except OSError as error:
                who = f"error: {error}"
            self.served.append((started, who, time.monotonic() - started))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def test_a_burst_spills_to_the_next_cluster_once_the_primary_is_full_and_returns(fleet_dir: Path) -> None:
    fleet = load_fleet(fleet_dir / "fleet.yaml")
    web = fleet.app("web")
    primary = fleet.primary().name
    other = next(c.name for c in fleet.clusters if c.name != primary)
    kubectl = [str(build.ensure_binaries()["kubectl"]), "--kubeconfig", str(fleet_dir / "kubeconfig")]

    def pending() -> int:
        done = subprocess.run(
            [*kubectl, "--context", primary, "get", "pods", "-n", "web", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        hpa = subprocess.run(
            [*kubectl, "--context", primary, "get", "hpa", "web", "-n", "web", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        print(f"{time.monotonic() - t0:.0f} s: {hpa.stdout.strip()} {hpa.stderr.strip()}", flush=True)
        return sum(p["status"].get("phase") == "Pending" for p in json.loads(done.stdout)["items"])

    t0 = time.monotonic()
    with Load(f"{web.global_endpoint}healthz") as load:
        wait_for(
            lambda: any(who == other for _, who, _ in load.served), 60, f"{other} serving the excess", 0.2
        )
        spill = min(t for t, who, _ in load.served if who == other) - t0
        wait_for(lambda: pending() > 0, 240, f"pods Pending in {primary} (its nodes full)", 2.0)
        full_at = time.monotonic() - t0
        mark = len(load.served)
        time.sleep(5)  # measure the steady burst with the primary full
        burst = load.served[mark:]
    errors = [who for _, who, _ in burst if who.startswith("error")]
    by = {name: sum(who == name for _, who, _ in burst) for name in (primary, other)}
    slowest = max(seconds for _, _, seconds in burst)
    print(
        f"spill after {spill:.2f} s, primary full after {full_at:.0f} s; burst: {by}, {len(errors)} errors,"
    )
    print(f"slowest {slowest:.2f} s of {len(burst)}")
    assert by[primary] and by[other] and not errors, (by, errors[:3])
    returned = time.monotonic()

    def primary_alone() -> bool:
        with urllib.request.urlopen(f"{web.global_endpoint}healthz", timeout=5) as response:
            return (response.headers.get("X-Served-By") or "").startswith(f"{primary}/")

    wait_for(primary_alone, 30, f"{primary} serving alone once the load stops", 0.5)
    print(f"return after {time.monotonic() - returned:.2f} s")
