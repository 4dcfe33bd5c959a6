"""Benchmark the node agent: pod start latency (binding to Ready) and its CPU and RSS at idle.

Starts a one-cluster local fleet of its own and takes it down at the end. On one node it starts
sample-app pods (image fleetdrill.io/orders, the fixture's probes, an emptyDir for data) one at a time
and times each from its binding to its container running and to Ready, all seen on one pod watch with
monotonic times (the API's timestamps have whole seconds only). Then it fills the node to --pods
sample-app pods and measures the node agent's CPU (its own user + system time, all threads) over
--idle-seconds, and its RSS; then the same with as many pods of an idle image and no probes, the
agent's floor. Prints the figures and their ratio to the targets; asserts nothing.

    .venv/bin/python bench/nodeagent.py [--pods 20] [--samples 10] [--idle-seconds 30] [--fleet DIR]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from kubernetes import client, config, watch

TARGET_LATENCY_MS = 300.0
TARGET_CPU_PERCENT = 1.0
POD_DEADLINE_S = 120.0
SETTINGS = "orders-settings"


def fleetdrill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=600
    )


def sample_app_pod(name: str, node: str) -> dict:
    """The fixture's orders container (same image, env, probes) on `node`, its data on an emptyDir."""
    container = {
        "name": "orders",
        "image": "fleetdrill.io/orders:1",
        "ports": [{"name": "http", "containerPort": 8080}],
        "envFrom": [{"configMapRef": {"name": SETTINGS}}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "ORDERS_DATA_DIR", "value": "/var/lib/orders"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/orders"}],
    }
    spec = {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": spec,
    }


class PodClock:
    """Monotonic times at which a namespace's watch first showed each pod bound and Ready."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.bound: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.changed = threading.Condition()
        self.watch, self.stopped = watch.Watch(), False
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self.stopped = True
        self.watch.stop()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as error:  # the stream ends when stopped; otherwise say why
            if not self.stopped:
                print(f"pod watch ended: {error}", file=sys.stderr)

    def _follow(self) -> None:
        for event in self.watch.stream(self.core.list_namespaced_pod, self.namespace, timeout_seconds=3600):
            now, pod = time.monotonic(), event["object"]
            name = pod.metadata.name
            with self.changed:
                if pod.spec.node_name:
                    self.bound.setdefault(name, now)
                if any(c.state.running for c in pod.status.container_statuses or []):
                    self.running.setdefault(name, now)
                conditions = pod.status.conditions or []
                if any(c.type == "Ready" and c.status == "True" for c in conditions):
                    self.ready.setdefault(name, now)
                self.changed.notify_all()

    def wait_ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + POD_DEADLINE_S
        with self.changed:
            while not all(name in self.ready for name in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [name for name in names if name not in self.ready]
                    raise SystemExit(f"pods not Ready after {POD_DEADLINE_S:.0f} s: {', '.join(missing)}")
                self.changed.wait(left)

    def latency_ms(self, name: str, until: dict[str, float]) -> float:
        return (until[name] - self.bound[name]) * 1000


def agent_pid(fleet: Path, node: str) -> int:
    """The node agent process of `node` in this fleet (its command line names both)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [word.decode(errors="replace") for word in argv]
        named = node in words or f"--node={node}" in words
        if "harness.localfleet.nodeagent" in words and named and any(str(fleet) in w for w in words):
            return int(entry.name)
    raise SystemExit(f"no node agent process found for node {node}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of the process (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def plain_pod(name: str, node: str) -> dict:
    """A pod of an image outside the catalogue (an idle process) with no probes: the agent's floor."""
    container = {"name": "idle", "image": "nginx:1.27"}
    spec = {"nodeSelector": {"kubernetes.io/hostname": node}, "terminationGracePeriodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": spec | {"containers": [container]},
    }


def idle_cpu(pid: int, seconds: float) -> tuple[float, float]:
    """The process's user and system CPU over `seconds` of wall time, in percent of one core, after
    5 s to settle."""
    pause = threading.Event()
    pause.wait(5.0)  # let the last status writes pass
    (user, system), started = cpu_seconds(pid), time.monotonic()
    pause.wait(seconds)
    (user_after, system_after), elapsed = cpu_seconds(pid), time.monotonic() - started
    return (user_after - user) / elapsed * 100, (system_after - system) / elapsed * 100


def wait_empty(core: client.CoreV1Api, namespace: str) -> None:
    deadline = time.monotonic() + POD_DEADLINE_S
    while core.list_namespaced_pod(namespace).items:
        if time.monotonic() > deadline:
            raise SystemExit(f"pods of {namespace} not gone after {POD_DEADLINE_S:.0f} s")
        threading.Event().wait(0.5)


def run(fleet: Path, pods: int, samples: int, idle_s: float) -> None:
    api = config.new_client_from_config(str(fleet / "kubeconfig"))
    core = client.CoreV1Api(api)
    node = sorted(n.metadata.name for n in core.list_node().items)[0]
    namespace = f"bench-agent-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    clock = PodClock(core, namespace)
    try:
        settings = core.read_namespaced_config_map(SETTINGS, "orders")
        core.create_namespaced_config_map(namespace, {"metadata": {"name": SETTINGS}, "data": settings.data})
        names = [f"orders-{index:02d}" for index in range(max(pods, samples))]
        for name in names[:samples]:
            core.create_namespaced_pod(namespace, sample_app_pod(name, node))
            clock.wait_ready([name])
        latencies = [clock.latency_ms(name, clock.ready) for name in names[:samples]]
        median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        to_running = [clock.latency_ms(name, clock.running) for name in names[:samples]]
        print(
            f"pod start, binding -> Ready (sample app, {samples} pods one at a time): "
            f"median {median:.0f} ms, p95 {p95:.0f} ms, min {min(latencies):.0f} ms "
            f"(target {TARGET_LATENCY_MS:.0f} ms: "
            f"median {median / TARGET_LATENCY_MS:.2f}x, p95 {p95 / TARGET_LATENCY_MS:.2f}x); "
            f"of which binding -> container running: median {statistics.median(to_running):.0f} ms, "
            f"p95 {percentile(to_running, 0.95):.0f} ms (then the app starts and its readiness probe passes)"
        )
        for name in names[samples:pods]:  # one at a time: 20 Python apps starting at once starve the node
            core.create_namespaced_pod(namespace, sample_app_pod(name, node))
            clock.wait_ready([name])
        pid = agent_pid(fleet, node)
        for kind, make in (
            ("sample-app pods (HTTP probes every 1 s and 5 s)", None),
            ("probe-less pods", plain_pod),
        ):
            if make is not None:
                core.delete_collection_namespaced_pod(namespace)
                wait_empty(core, namespace)
                plain = [f"idle-{index:02d}" for index in range(pods)]
                for name in plain:
                    core.create_namespaced_pod(namespace, make(name, node))
                clock.wait_ready(plain)
            user, system = idle_cpu(pid, idle_s)
            percent = user + system
            print(
                f"node agent at idle with {pods} {kind} on {node}: CPU {percent:.2f}% of a core "
                f"(user {user:.2f}, system {system:.2f}) over {idle_s:.0f} s "
                f"(target {TARGET_CPU_PERCENT:.0f}%: {percent / TARGET_CPU_PERCENT:.2f}x), "
                f"RSS {rss_mib(pid):.0f} MiB"
            )
    finally:
        clock.stop()
        core.delete_namespace(namespace)
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--fleet", type=Path, help="a running local fleet to use instead of a new one")
    args = parser.parse_args()
    if args.fleet:
        run(args.fleet, args.pods, args.samples, args.idle_seconds)
        return
    with tempfile.TemporaryDirectory(prefix="fleetdrill-agent-") as tmp:
        fleet = Path(tmp) / "fleet"
        up = fleetdrill("fleet", "up", "--dir", str(fleet), "--clusters", "1", "--no-backups")
        try:
            if up.returncode != 0:
                sys.exit(f"fleet up failed: {up.stderr.strip()}")
            run(fleet, args.pods, args.samples, args.idle_seconds)
        finally:
            fleetdrill("fleet", "down", "--dir", str(fleet))


if __name__ == "__main__":
    main()
