"""Benchmark the global endpoint: requests per second through it, and failover after losing the primary.

Starts a local fleet of three clusters (or uses --dir of a running one), then
- drives GET /readyz through the global endpoint with keep-alive clients and prints requests per second
  (target: at least 2,000);
- loses the primary cluster (SIGKILL, links down) --trials times while probing every 10 ms, and prints
  the time from the loss to the first answer from another cluster against the health-check settings:
  detection takes (fall - 1) intervals plus the phase of the next check (0 to 1 interval) plus the
  check's timeout, so the theoretical worst case is fall x interval + timeout. Target: within one
  interval of it. The ground truth's own serving change is printed beside each figure.
Prints figures and ratios; asserts nothing.
    python bench/global_endpoint.py [--dir DIR] [--seconds 5] [--clients 8] [--trials 3]
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from harness.config import load_fleet
from harness.localfleet import apps, groundtruth, supervisor

RPS_TARGET = 2000.0
REQUEST = b"GET /readyz HTTP/1.1\r\nHost: bench\r\n\r\n"


async def _client(host: str, port: int, until: float, counts: list[int]) -> None:
    """One keep-alive connection sending requests back to back until `until`."""
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        counts[0] += 1
    writer.close()


async def _load(url: str, seconds: float, clients: int) -> float:
    parts, counts = urlsplit(url), [0]
    until = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(_client(parts.hostname, parts.port, until, counts) for _ in range(clients)))
    return counts[0] / seconds


def served_by(url: str) -> str:
    """The cluster that answered GET /readyz, or '' when nothing did."""
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=0.2) as response:
            return response.headers.get("X-Served-By", "").split("/", 1)[0]
    except (urllib.error.URLError, OSError):
        return ""


def failover_trial(folder: Path, url: str, primary: str, deadline_s: float = 30.0) -> tuple[float, float]:
    """Lose the primary; (seconds until another cluster answered, seconds until the ground truth moved)."""
    lost_at = time.monotonic()
    supervisor.stop_cluster(folder, primary)
    answered = None
    while time.monotonic() - lost_at < deadline_s:
        cluster = served_by(url)
        if cluster and cluster != primary:
            answered = time.monotonic() - lost_at
            break
        time.sleep(0.01)
    truth = groundtruth.read(folder / groundtruth.FILE)
    moved = next(
        (e["mono"] - lost_at for e in truth if e["event"] == "serving" and e["mono"] > lost_at), float("nan")
    )
    supervisor.start_cluster(folder, primary)
    until = time.monotonic() + 60
    while served_by(url) != primary and time.monotonic() < until:  # failover strategy: it returns
        time.sleep(0.05)
    if answered is None:
        raise SystemExit(f"no other cluster answered within {deadline_s} s of losing {primary}")
    return answered, moved


def bench(folder: Path, seconds: float, clients: int, trials: int) -> None:
    fleet = load_fleet(folder / "fleet.yaml")
    url = fleet.app(apps.APP).global_endpoint.rstrip("/")
    rps = asyncio.run(_load(url, seconds, clients))
    print(
        f"global endpoint: {rps:,.0f} requests/s ({clients} clients, {seconds} s); target {RPS_TARGET:,.0f}:"
        f" ratio {rps / RPS_TARGET:.2f}"
    )
    interval, fall, timeout = apps.HEALTH_INTERVAL_S, apps.HEALTH_FALL, apps.HEALTH_TIMEOUT_S
    worst = fall * interval + timeout
    primary = next(c.name for c in fleet.clusters if c.role == "active")
    results = [failover_trial(folder, url, primary) for _ in range(trials)]
    for answered, moved in results:
        print(
            f"failover: served elsewhere after {answered:.2f} s"
            f" (ground truth: serving changed at {moved:.2f} s)"
        )
    slowest = max(answered for answered, _ in results)
    print(
        f"failover over {trials} trials: median {statistics.median(a for a, _ in results):.2f} s, slowest"
        f" {slowest:.2f} s; health checks every {interval} s, fall {fall}, timeout {timeout} s: theoretical"
        f" worst {worst:.2f} s; target within one interval ({worst + interval:.2f} s): ratio"
        f" {slowest / (worst + interval):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, help="a running fleet (default: start one of three clusters)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    if args.dir:
        bench(args.dir, args.seconds, args.clients, args.trials)
        return
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-") as folder:
        supervisor.up(Path(folder), clusters=3)
        try:
            bench(Path(folder), args.seconds, args.clients, args.trials)
        finally:
            supervisor.down(Path(folder))


if __name__ == "__main__":
    main()
