"""The node's own object: registration with status, the heartbeat Lease, and status updates.

The Lease is renewed on its own ApiClient and thread, as the kubelet's heartbeat client is, so a
backlog of pod-status writes can never make the node look dead.
"""

import datetime as dt
import os
import platform
import threading
import time
import uuid

from kubernetes import client

from harness.localfleet.nodeagent import POD_CAPACITY, STRATEGIC

LEASE_SECONDS = 40
RENEW_INTERVAL_S = 5.0
STATUS_INTERVAL_S = 10.0


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def micro(moment: dt.datetime) -> str:
    """MicroTime as the API parses it: exactly six fractional digits."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def conditions(memory_pressure: bool = False) -> list[dict]:
    stamp = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    pressure = (
        ("True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
        if memory_pressure
        else ("False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
    )
    rows = [
        ("MemoryPressure", *pressure),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    return [
        {"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": stamp} for t, s, r, m in rows
    ]


class NodeReporter:
    """Registers the Node, keeps its Lease fresh and its status true."""

    def __init__(
        self,
        api: client.ApiClient,
        heartbeat_api: client.ApiClient,
        name: str,
        address: str,
        region: str,
        zone: str,
        version: str,
        memory_bytes: int,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(heartbeat_api)
        self.name, self.address, self.region, self.zone, self.version = name, address, region, zone, version
        self.memory_bytes = memory_bytes
        self.memory_pressure = False  # set by the eviction manager
        self.stopping = threading.Event()
        self.uid = ""
        self.lease_version = ""  # resourceVersion of the Lease as we last wrote it

    def capacity(self) -> dict[str, str]:
        """The node's resources; its memory is what the agent was given (all of it allocatable)."""
        return {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{self.memory_bytes // 1024}Ki",
            "pods": str(POD_CAPACITY),
            "ephemeral-storage": "20Gi",
        }

    def status(self) -> dict:
        return {
            "capacity": self.capacity(),
            "allocatable": self.capacity(),
            "conditions": conditions(),
            "addresses": [
                {"type": "InternalIP", "address": self.address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.name).hex,
                "systemUUID": str(uuid.uuid4()),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": "fleetdrill node agent",
                "containerRuntimeVersion": "fleetdrill://0.1.0",
                "kubeletVersion": self.version,
                "kubeProxyVersion": self.version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        """Create the Node with its status in the same call (later writes to the main resource drop it)."""
        body = {
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/region": self.region,
                    "topology.kubernetes.io/zone": self.zone,
                },
            },
            "status": self.status(),
        }
        try:
            self.uid = self.core.create_node(body).metadata.uid
        except client.ApiException as error:
            if error.status != 409:
                raise
            self.uid = self.core.read_node(self.name).metadata.uid
            self.post_status()

    def post_status(self) -> None:
        self.core.patch_node_status(
            self.name, {"status": {"conditions": conditions(self.memory_pressure)}}, _content_type=STRATEGIC
        )

    def renew_lease(self) -> None:
        lease = {
            "metadata": {
                "name": self.name,
                "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro(now()),
            },
        }
        for attempt in range(2):
            try:
                written = self.leases.replace_namespaced_lease(
                    self.name, "kube-node-lease", self._with_version(lease)
                )
                break
            except client.ApiException as error:
                self.lease_version = ""
                if error.status == 409 and attempt == 0:  # written by someone else: read it, then again
                    continue
                if error.status != 404:
                    raise
                written = self.leases.create_namespaced_lease("kube-node-lease", lease)
                break
        self.lease_version = written.metadata.resource_version

    def _with_version(self, lease: dict) -> dict:
        """The lease at the version of our last write, as the kubelet's lease controller updates the
        lease it last wrote: a read only when that is unknown (first renewal, or after a conflict)."""
        if not self.lease_version:
            current = self.leases.read_namespaced_lease(self.name, "kube-node-lease")
            self.lease_version = current.metadata.resource_version
        lease["metadata"]["resourceVersion"] = self.lease_version
        return lease

    def heartbeat_forever(self) -> None:
        """Renew the Lease every few seconds, retrying quickly after a failure; post status now and then."""
        last_status = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.renew_lease()
                if time.monotonic() - last_status > STATUS_INTERVAL_S:
                    self.post_status()
                    last_status = time.monotonic()
                self.stopping.wait(RENEW_INTERVAL_S)
            except Exception as error:
                print(f"heartbeat failed: {error}", flush=True)
                self.stopping.wait(0.5)
