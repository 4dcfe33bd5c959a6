"""Benchmark Chaos Mesh partitions in the local fleet: from creating a NetworkChaos to traffic across it
stopping, and from deleting it to traffic flowing again (target: under 100 ms to stop).

A prober in the global load balancer's namespace (one of the partition's peers) sends a TCP SYN to a
closed port of the primary's app pod every few milliseconds: a reset back means packets flow, silence
for 20 ms means they are dropped. Each attempt is logged with the monotonic clock the benchmark uses.
Each trial creates the region partition of the primary's app
(harness.localfleet.chaos.regions), finds the first failed attempt of the final run of failures, then
deletes the object and finds the first success after. Prints figures and ratios; asserts nothing.
    python bench/chaos.py [--dir DIR] [--trials 10]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from kubernetes import client, config

from harness.localfleet import netns, network, supervisor
from harness.localfleet.chaos import regions
from harness.localfleet.state import FleetState

TARGET_STOP_S = 0.100
GROUP, VERSION, PLURAL, NAMESPACE = "chaos-mesh.org", "v1alpha1", "networkchaos", "orders"
DEADLINE_S = 30.0
CLOSED_PORT = 1  # nothing listens there: the pod's kernel answers each SYN itself, the app is spared
WINDOW_S = 10.0  # probes read after each step: the outcome must hold till then
PROBE = """
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
while True:
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=0.02).close()
        ok = 1
    except ConnectionRefusedError:
        ok = 1  # the pod's kernel answered with a reset: packets flow
    except OSError:
        ok = 0
    print(f"{started} {ok}", flush=True)
    time.sleep(max(0.0, started + 0.005 - time.monotonic()))
"""


def wait(condition, what: str) -> None:
    until = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > until:
            raise SystemExit(f"timed out after {DEADLINE_S} s waiting for {what}")
        time.sleep(0.02)


class Prober:
    """The probe process and the attempts it logged so far."""

    def __init__(self, namespace: str, host: str) -> None:
        argv = netns.enter_argv(namespace, [sys.executable, "-c", PROBE, host, str(CLOSED_PORT)])
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.attempts: list[tuple[float, bool]] = []

    def read_until(self, moment: float) -> None:
        while not self.attempts or self.attempts[-1][0] < moment:
            started, ok = self.process.stdout.readline().split()
            self.attempts.append((float(started), ok == "1"))

    def state_after(self, moment: float) -> list[tuple[float, bool]]:
        return [a for a in self.attempts if a[0] >= moment]

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def first_of_last_run(attempts: list[tuple[float, bool]], ok: bool) -> float | None:
    """The start of the first attempt of the final unbroken run of attempts whose outcome is `ok`."""
    moment = None
    for started, outcome in attempts:
        if outcome == ok and moment is None:
            moment = started
        elif outcome != ok:
            moment = None
    return moment


def reconciled_after(obj: dict, created_wall: float) -> float:
    """Seconds from the create call to the controller starting the reconcile that applied the fault (the
    timestamp of the record's Apply event)."""
    event = obj["status"]["experiment"]["containerRecords"][0]["events"][0]
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp() - created_wall


def trial(
    custom: client.CustomObjectsApi, prober: Prober, spec: dict, number: int
) -> tuple[float, float, float]:
    name = f"bench-partition-{number}"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NetworkChaos", "metadata": {"name": name}}
    created, created_wall = time.monotonic(), time.time()
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {**body, "spec": spec})
    deleted = None
    try:
        prober.read_until(created + WINDOW_S)
        stopped = first_of_last_run(prober.state_after(created), ok=False)
        applied: dict = {}

        def written() -> bool:
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
            records = (obj.get("status") or {}).get("experiment", {}).get("containerRecords")
            applied.update(obj if records else {})
            return bool(applied)

        wait(written, f"{name}'s status")
        deleted = time.monotonic()
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        wait(lambda: gone(custom, name), f"{name} to be deleted")
    prober.read_until(deleted + WINDOW_S)
    flowing = first_of_last_run(prober.state_after(deleted), ok=True)
    if stopped is None or flowing is None:
        raise SystemExit(
            f"trial {number}: traffic {'never stopped' if stopped is None else 'never came back'}"
        )
    return stopped - created, reconciled_after(applied, created_wall), flowing - deleted


def gone(custom: client.CustomObjectsApi, name: str) -> bool:
    try:
        custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
    except client.ApiException as error:
        return error.status == 404
    return False


def bench(folder: Path, trials: int) -> None:
    state = FleetState.load(folder)
    primary = next(c for c in state.clusters if c.role == "active")
    api = config.new_client_from_config(str(folder / "kubeconfig"), context=primary.name)
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    pod = next(
        p
        for p in core.list_namespaced_pod(NAMESPACE, label_selector="app=orders").items
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    )
    spec = {
        "action": "partition",
        "mode": "all",
        "direction": "both",
        "selector": {"namespaces": [NAMESPACE], "labelSelectors": {"app": "orders"}},
        "externalTargets": list(regions.partition_targets(state, primary.name)),
    }
    prober = Prober(f"{network.prefix(state.plan)}global", pod.status.pod_ip)
    try:
        prober.read_until(time.monotonic() + 0.5)
        results = [trial(custom, prober, spec, n) for n in range(trials)]
    finally:
        prober.close()
    stops, seen, heals = ([r[i] for r in results] for i in range(3))
    print(
        f"partition of {primary.name}'s app from the global endpoint and the other regions, {trials} trials"
    )
    steps = (
        ("create -> traffic stops", stops),
        ("  of which create -> controller reconciles", seen),
        ("delete -> traffic flows", heals),
    )
    for label, values in steps:
        print(
            f"  {label}: median {statistics.median(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms, all {', '.join(f'{v * 1000:.0f}' for v in values)} ms"
        )
    print(
        f"  stop median / target {TARGET_STOP_S * 1000:.0f} ms: "
        f"{statistics.median(stops) / TARGET_STOP_S:.2f}; "
        f"max / target: {max(stops) / TARGET_STOP_S:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="a running fleet (default: start one of two clusters)")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    if args.dir:
        bench(args.dir, args.trials)
        return
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-chaos-") as folder:
        supervisor.up(Path(folder), clusters=2)
        try:
            bench(Path(folder), args.trials)
        finally:
            supervisor.down(Path(folder))


if __name__ == "__main__":
    main()
