"""The nodes of a cluster: their namespaces, identities, node agents and kube-proxies."""

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.localfleet import controlplane, pki
from harness.localfleet.addresses import ClusterPlan

PROXY_HEALTHZ_PORT = 10256
PROXY_METRICS_PORT = 10249


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


def _write_kubeconfig(
    files: controlplane.ClusterFiles,
    ca: pki.KeyPair,
    plan: ClusterPlan,
    stem: str,
    user: str,
    groups: tuple[str, ...] = (),
) -> Path:
    """A client certificate for user (in groups) and a kubeconfig that uses it against the API server."""
    pki.issue(ca, user, organizations=groups, client=True).write(files.pki, stem)
    server = f"https://{plan.control_plane}:{controlplane.APISERVER_PORT}"
    path = files.kubeconfig(stem)
    path.write_text(yaml.safe_dump(controlplane.component_kubeconfig(files, stem, server)))
    return path


def write_identity(
    files: controlplane.ClusterFiles, ca: pki.KeyPair, node: NodeSpec, plan: ClusterPlan
) -> Path:
    """The node's kubeconfig with its own identity (system:node:NAME in system:nodes), as a kubelet has,
    and the serving certificate of its kubelet API (`node-NAME-serving`, for the node's address)."""
    pki.issue(
        ca, f"system:node:{node.name}", ips=(plan.node(node.number),), dns=(node.name,), server=True
    ).write(files.pki, f"node-{node.name}-serving")
    return _write_kubeconfig(
        files, ca, plan, f"node-{node.name}", f"system:node:{node.name}", ("system:nodes",)
    )


def write_proxy_identity(
    files: controlplane.ClusterFiles, ca: pki.KeyPair, node: NodeSpec, plan: ClusterPlan
) -> Path:
    """The kubeconfig of the node's kube-proxy: user system:kube-proxy, which the default RBAC binds to
    the system:node-proxier ClusterRole."""
    return _write_kubeconfig(files, ca, plan, f"proxy-{node.name}", "system:kube-proxy")


def proxy_argv(
    files: controlplane.ClusterFiles, node: NodeSpec, plan: ClusterPlan, binary: Path
) -> list[str]:
    """The real kube-proxy's command line, in nftables mode, for a process in the node's namespace.

    It learns the node's address from the Node's status.addresses. With the conntrack flags at 0 it
    leaves the kernel's conntrack settings alone (nf_conntrack_max is read-only outside the initial
    namespace, and its hash size is global); its health and metrics servers listen on the node's
    address only.
    """
    address = plan.node(node.number)
    return [
        str(binary),
        f"--kubeconfig={files.kubeconfig(f'proxy-{node.name}')}",
        "--proxy-mode=nftables",
        f"--hostname-override={node.name}",
        f"--cluster-cidr={plan.pod_cidr}",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0",
        f"--healthz-bind-address={address}:{PROXY_HEALTHZ_PORT}",
        f"--metrics-bind-address={address}:{PROXY_METRICS_PORT}",
        "--v=1",
    ]


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
        f"--version={version}",
        f"--tls-cert-file={files.cert(f'node-{node.name}-serving')}",
        f"--tls-private-key-file={files.key(f'node-{node.name}-serving')}",
        f"--client-ca-file={files.ca_cert}",
    ]
