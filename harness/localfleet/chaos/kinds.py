"""What each chaos kind does to one record: select its targets, apply, recover, and (pod-failure) hold.

A record id is `namespace/pod` for pod-level faults and `namespace/pod/container` for container-level
ones (StressChaos, container-kill), as in Chaos Mesh. apply and recover return a message for the
record's event and raise (InjectionError, NotRunning, ValueError, ApiException) when they cannot.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client

from harness.localfleet.chaos import containers, netfaults, selection, stressing

Pods = Callable[[], list[dict]]


@dataclass
class Cluster:
    """What the kinds need from the cluster: the pods the controller mirrors, nodes' labels, the API."""

    pods: Pods
    node_labels: Callable[[], dict[str, dict[str, str]]]
    core: client.CoreV1Api
    rng: random.Random

    def pod(self, namespace: str, name: str) -> dict | None:
        return next(
            (
                p
                for p in self.pods()
                if p["metadata"]["namespace"] == namespace and p["metadata"]["name"] == name
            ),
            None,
        )

    def select(self, spec_part: dict, namespace: str) -> list[dict]:
        labels = self.node_labels() if (spec_part.get("selector") or {}).get("nodeSelectors") else {}
        return selection.select(self.pods(), spec_part, namespace, labels, self.rng)


def _split(record_id: str) -> tuple[str, str, str]:
    namespace, name, *rest = record_id.split("/")
    return namespace, name, rest[0] if rest else ""


def _containers(pod: dict, wanted: list[str] | None) -> list[str]:
    names = [c["name"] for c in pod["spec"]["containers"]]
    return [n for n in names if n in wanted] if wanted else names


def _pod_key(pod: dict) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


class Kind:
    """The default: pod-level records, nothing held."""

    plural = ""

    def record_ids(self, obj: dict, cluster: Cluster) -> list[str]:
        return [_pod_key(p) for p in cluster.select(obj["spec"], obj["metadata"]["namespace"])]

    def one_shot(self, obj: dict) -> bool:
        return False

    def apply(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        raise NotImplementedError

    def recover(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        raise NotImplementedError

    def hold(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        """Keep an injected fault in force after the pod changed; "" when nothing had to be done."""
        return ""


class NetworkChaos(Kind):
    plural = "networkchaos"

    def _netns(self, record_id: str, cluster: Cluster) -> str | None:
        namespace, name, _ = _split(record_id)
        pod = cluster.pod(namespace, name)
        if pod is None:
            return None
        return containers.netns_path(pod["metadata"]["uid"], _containers(pod, None))

    def peers(self, obj: dict, cluster: Cluster) -> list[str]:
        spec, found = obj["spec"], []
        if spec.get("target"):
            chosen = cluster.select(spec["target"], obj["metadata"]["namespace"])
            found += [p["status"]["podIP"] for p in chosen if (p.get("status") or {}).get("podIP")]
        return netfaults.peers(found + list(spec.get("externalTargets") or []))

    def apply(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        netns = self._netns(record_id, cluster)
        if netns is None:
            raise containers.NotRunning(f"pod {record_id} is gone")
        networks = self.peers(obj, cluster)
        used = netfaults.apply(netns, obj["metadata"]["uid"], obj["spec"], networks)
        return f"{used}; peers: {', '.join(networks) or 'every address'}"

    def recover(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        try:
            netns = self._netns(record_id, cluster)
        except containers.NotRunning:
            netns = None
        if netns is None:
            return "the pod is gone; its rules went with its network namespace"
        netfaults.recover(netns, obj["metadata"]["uid"], obj["spec"])
        return "rules removed"


class StressChaos(Kind):
    plural = "stresschaos"

    def record_ids(self, obj: dict, cluster: Cluster) -> list[str]:
        chosen = cluster.select(obj["spec"], obj["metadata"]["namespace"])
        wanted = obj["spec"].get("containerNames")
        return [f"{_pod_key(p)}/{c}" for p in chosen for c in _containers(p, wanted)]

    def _uid(self, record_id: str, cluster: Cluster) -> tuple[str | None, str]:
        namespace, name, container = _split(record_id)
        pod = cluster.pod(namespace, name)
        return (pod["metadata"]["uid"] if pod else None), container

    def apply(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        uid, container = self._uid(record_id, cluster)
        if uid is None:
            raise containers.NotRunning(f"pod of {record_id} is gone")
        args = stressing.stress_args(obj["spec"].get("stressors") or {})
        pid = stressing.start(uid, container, obj["metadata"]["uid"], obj["spec"].get("stressors") or {})
        return f"stress-ng {' '.join(args)} in the container's cgroups (pid {pid})"

    def recover(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        uid, container = self._uid(record_id, cluster)
        if uid is None:
            return "the pod is gone; its stress workers went with its cgroups"
        stopped = stressing.stop(uid, container, obj["metadata"]["uid"])
        return f"stopped {len(stopped)} stress process(es)"


class PodChaos(Kind):
    plural = "podchaos"

    def record_ids(self, obj: dict, cluster: Cluster) -> list[str]:
        if obj["spec"]["action"] != "container-kill":
            return super().record_ids(obj, cluster)
        chosen = cluster.select(obj["spec"], obj["metadata"]["namespace"])
        wanted = obj["spec"].get("containerNames")
        return [f"{_pod_key(p)}/{c}" for p in chosen for c in _containers(p, wanted)]

    def one_shot(self, obj: dict) -> bool:
        return obj["spec"]["action"] in ("pod-kill", "container-kill")

    def _kill(self, record_id: str, cluster: Cluster, names: list[str] | None) -> list[str]:
        namespace, name, container = _split(record_id)
        pod = cluster.pod(namespace, name)
        if pod is None:
            raise containers.NotRunning(f"pod {namespace}/{name} is gone")
        killed = []
        for each in [container] if container else _containers(pod, names):
            if containers.pids(pod["metadata"]["uid"], each):
                containers.kill(pod["metadata"]["uid"], each)
                killed.append(each)
        return killed

    def apply(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        action, namespace, name = obj["spec"]["action"], *_split(record_id)[:2]
        if action == "pod-kill":
            grace = obj["spec"].get("gracePeriod") or 0
            try:
                cluster.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace)
            except client.ApiException as error:
                if error.status != 404:
                    raise
            return f"pod deleted with grace period {grace}s"
        killed = self._kill(record_id, cluster, obj["spec"].get("containerNames"))
        if not killed:
            raise containers.NotRunning(f"no running container to kill in {record_id}")
        return f"killed container(s) {', '.join(killed)}"

    def recover(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        if obj["spec"]["action"] == "pod-failure":
            return "containers are no longer held down; the node agent restarts them"
        return "nothing to recover for a one-shot action"

    def hold(self, obj: dict, record_id: str, cluster: Cluster) -> str:
        if obj["spec"]["action"] != "pod-failure":
            return ""
        try:
            killed = self._kill(record_id, cluster, obj["spec"].get("containerNames"))
        except containers.NotRunning:
            return ""
        return f"killed restarted container(s) {', '.join(killed)}" if killed else ""


KINDS: dict[str, Kind] = {
    "NetworkChaos": NetworkChaos(),
    "StressChaos": StressChaos(),
    "PodChaos": PodChaos(),
}
