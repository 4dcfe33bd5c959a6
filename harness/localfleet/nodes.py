"""The nodes of a cluster: their namespaces, identities and node-agent processes."""

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.localfleet import controlplane, pki
from harness.localfleet.addresses import ClusterPlan


@dataclass(frozen=True)
class NodeSpec:
    """One node: its name, zone, number in the cluster's address plan and namespace."""

    name: str
    zone: str
    number: int
    netns: str


def node_specs(cluster: str, region: str, count: int, netns_prefix: str) -> list[NodeSpec]:
    """`count` nodes spread over two zones of the region (a, b, a, ...)."""
    return [
        NodeSpec(f"{cluster}-node-{k}", f"{region}-{'ab'[k % 2]}", k, f"{netns_prefix}n{k}")
        for k in range(count)
    ]


def write_identity(
    files: controlplane.ClusterFiles, ca: pki.KeyPair, node: NodeSpec, plan: ClusterPlan
) -> Path:
    """The node's kubeconfig with its own identity (system:node:NAME in system:nodes), as a kubelet has."""
    stem = f"node-{node.name}"
    pki.issue(ca, f"system:node:{node.name}", organizations=("system:nodes",), client=True).write(
        files.pki, stem
    )
    server = f"https://{plan.control_plane}:{controlplane.APISERVER_PORT}"
    path = files.kubeconfig(stem)
    path.write_text(yaml.safe_dump(controlplane.component_kubeconfig(files, stem, server)))
    return path


def agent_argv(
    files: controlplane.ClusterFiles,
    node: NodeSpec,
    region: str,
    plan: ClusterPlan,
    cni_bin: Path,
    version: str,
) -> list[str]:
    """The node agent's command line."""
    return [
        sys.executable,
        "-m",
        "harness.localfleet.nodeagent",
        f"--kubeconfig={files.kubeconfig(f'node-{node.name}')}",
        f"--node={node.name}",
        f"--address={plan.node(node.number)}",
        f"--region={region}",
        f"--zone={node.zone}",
        f"--root={files.root / 'nodes' / node.name}",
        f"--netns-prefix={node.netns}-",
        f"--cni-bin={cni_bin}",
        f"--api-host={plan.control_plane}",
        f"--version={version}",
    ]
