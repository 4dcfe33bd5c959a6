"""`python -m harness.localfleet.nodeagent`: run one node of a local-fleet cluster."""

import argparse
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from kubernetes import client, config, watch

from harness.localfleet.nodeagent.authz import Reviewer
from harness.localfleet.nodeagent.cgroups import NodeCgroups
from harness.localfleet.nodeagent.env import EnvBuilder
from harness.localfleet.nodeagent.eviction import Config, EvictionManager
from harness.localfleet.nodeagent.kubeletapi import KubeletApi
from harness.localfleet.nodeagent.node import NodeReporter
from harness.localfleet.nodeagent.pods import PodWorker
from harness.localfleet.nodeagent.probes import Prober
from harness.localfleet.nodeagent.runtime import Runtime
from harness.localfleet.nodeagent.stats import CpuReader
from harness.localfleet.nodeagent.summary import NodeSummary
from harness.localfleet.nodeagent.volumes import Volumes

WATCH_SECONDS = 240
MEMORY_DEFAULTS = {  # small enough for a stress pod to exhaust; a short transition period for drills
    "memory-allocatable": "2Gi",
    "eviction-hard": "memory.available<100Mi",
    "eviction-pressure-transition-period": "10s",
}


class Agent:
    """Registers the node, then keeps one PodWorker per pod bound to it (list, then watch; relist on 410)."""

    def __init__(self, args: argparse.Namespace, memory: Config) -> None:
        self.args, self.memory = args, memory
        self.api = config.new_client_from_config(str(args.kubeconfig))
        heartbeat = config.new_client_from_config(str(args.kubeconfig))
        self.reporter = NodeReporter(
            self.api,
            heartbeat,
            args.node,
            args.address,
            args.region,
            args.zone,
            args.version,
            memory.allocatable,
        )
        self.core = client.CoreV1Api(self.api)
        self.workers: dict[str, PodWorker] = {}
        self.cgroups = NodeCgroups(args.netns_prefix.rstrip("-"))
        self.eviction = EvictionManager(
            self.api, self.reporter, self.cgroups, lambda: list(self.workers.values()), memory
        )
        self.stopping = threading.Event()

    def pod_cidr(self) -> str:
        """The CIDR node IPAM gave this node (kube-controller-manager allocates it after registration)."""
        while not self.stopping.is_set():
            cidr = self.core.read_node(self.args.node).spec.pod_cidr
            if cidr:
                return cidr
            self.stopping.wait(0.1)
        raise SystemExit(0)

    def run(self) -> None:
        self.cgroups.start(self.memory.allocatable)  # first: `fleet freeze` freezes the agent's cgroup
        self.reporter.register()
        threading.Thread(target=self.reporter.heartbeat_forever, name="heartbeat", daemon=True).start()
        tls = (self.args.tls_cert_file, self.args.tls_private_key_file, self.args.client_ca_file)
        stats = NodeSummary(self.args.node, self.cgroups.dirs, CpuReader())
        reviewer = Reviewer(config.new_client_from_config(str(self.args.kubeconfig)), self.args.node)
        KubeletApi(self.workers, stats, self.args.address, *map(Path, tls), reviewer).start()
        root = Path(self.args.root)
        pod_cidr = self.pod_cidr()
        self.runtime = Runtime(root, self.args.netns_prefix, pod_cidr, Path(self.args.cni_bin), self.cgroups)
        threading.Thread(
            target=self.eviction.run_forever, args=(self.stopping,), name="eviction", daemon=True
        ).start()
        self.volumes = Volumes(self.api, root)
        self.env = EnvBuilder(self.api)
        self.prober = Prober(self.args.version)
        print(f"node {self.args.node} registered; pod CIDR {pod_cidr}", flush=True)
        while not self.stopping.is_set():
            try:
                self.sync_forever()
            except Exception as error:
                print(f"pod watch: {error}; relisting", flush=True)
                self.stopping.wait(0.5)

    def sync_forever(self) -> None:
        selector = f"spec.nodeName={self.args.node}"
        listed = self.core.list_pod_for_all_namespaces(field_selector=selector)
        present = {pod.metadata.uid: pod for pod in listed.items}
        for uid in set(self.workers) - set(present):
            self.forget(self.workers.pop(uid))
        for pod in present.values():
            self.apply("MODIFIED", pod)
        stream = watch.Watch().stream(
            self.core.list_pod_for_all_namespaces,
            field_selector=selector,
            resource_version=listed.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
        )
        for event in stream:
            if self.stopping.is_set():
                return
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self.apply(event["type"], event["object"])

    def apply(self, kind: str, pod: client.V1Pod) -> None:
        uid = pod.metadata.uid
        if kind == "DELETED":
            if uid in self.workers:
                self.forget(self.workers.pop(uid))
            return
        worker = self.workers.get(uid)
        if worker is None or not worker.is_alive():
            if (
                worker is not None
                or pod.status.phase in ("Succeeded", "Failed")
                or not self.eviction.admit(pod)
            ):
                return
            worker = PodWorker(
                pod, self.api, self.runtime, self.volumes, self.args.address, self.env, self.prober
            )
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)

    def forget(self, worker: PodWorker) -> None:
        """The pod object is gone: its worker stops, or, if it had already finished (the pod completed
        or was evicted), the data it kept for `kubectl logs` goes now."""
        if worker.is_alive():
            worker.vanish()
        else:
            worker.remove_files()

    def stop(self) -> None:
        """Stop every pod (their processes die with the node, as with a lost machine)."""
        self.stopping.set()
        self.reporter.stopping.set()
        for worker in self.workers.values():
            worker.shut_down()
        deadline = time.monotonic() + 10
        for worker in self.workers.values():
            worker.join(timeout=max(0.0, deadline - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in (
        "kubeconfig",
        "node",
        "address",
        "region",
        "zone",
        "root",
        "netns-prefix",
        "cni-bin",
        "version",
        "tls-cert-file",
        "tls-private-key-file",
        "client-ca-file",
    ):
        parser.add_argument(f"--{flag}", required=True)
    for flag, default in MEMORY_DEFAULTS.items():
        parser.add_argument(f"--{flag}", default=default, help=f"default {default}")
    args = parser.parse_args()
    try:
        memory = Config.parse(
            args.memory_allocatable, args.eviction_hard, args.eviction_pressure_transition_period
        )
    except ValueError as error:
        parser.error(str(error))
    agent = Agent(args, memory)

    def terminate(_signum: int, _frame: FrameType | None) -> None:
        agent.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    agent.run()


if __name__ == "__main__":
    main()
