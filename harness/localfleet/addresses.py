"""The address plan of one local fleet: every address lives in a namespace the fleet made itself.

Infrastructure (control planes, nodes, ingresses, the global endpoint, the backup store) takes a
/21 per fleet from 198.18.0.0/15, the range reserved for network benchmarking (RFC 2544), split into
/26 segments, one Linux bridge each in the fleet's router namespace. Pods take a /16 per fleet from
100.64.0.0/10, a /20 per cluster and a /24 per node. Service IPs are never routed (kube-proxy
rewrites them inside each node), so every cluster of a fleet uses the same service range.
"""

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from harness.errors import ConfigError

INFRA = IPv4Network("198.18.0.0/15")
PODS = IPv4Network("100.64.0.0/10")
MAX_FLEETS = 64
MAX_CLUSTERS = 15
SEGMENT_PREFIX = 26
FIRST_CLUSTER_SEGMENT = 3
NODE_CIDR_MASK = 24
FIRST_NODE_HOST = 10
MAX_NODES = 16


@dataclass(frozen=True)
class Segment:
    """One bridge in the router namespace: a /26 whose first address is the router's."""

    index: int
    network: IPv4Network

    @property
    def bridge(self) -> str:
        return f"seg{self.index}"

    @property
    def gateway(self) -> IPv4Address:
        return self.network.network_address + 1

    def host(self, offset: int) -> IPv4Address:
        """The member address at `offset` (2 and up; 1 is the gateway)."""
        if not 2 <= offset < self.network.num_addresses - 1:
            raise ValueError(f"offset {offset} outside segment {self.network}")
        return self.network.network_address + offset


@dataclass(frozen=True)
class ClusterPlan:
    """Addresses of one cluster: its segment, control plane, ingress, nodes and pod ranges."""

    index: int
    segment: Segment
    pod_cidr: IPv4Network
    service_cidr: IPv4Network

    @property
    def control_plane(self) -> IPv4Address:
        return self.segment.host(2)

    @property
    def ingress(self) -> IPv4Address:
        return self.segment.host(3)

    def node(self, n: int) -> IPv4Address:
        """Address of node number n (0-based)."""
        if not 0 <= n < MAX_NODES:
            raise ValueError(f"node {n} outside 0..{MAX_NODES - 1}")
        return self.segment.host(FIRST_NODE_HOST + n)

    @property
    def kubernetes_service_ip(self) -> IPv4Address:
        """The ClusterIP the API server gives the `kubernetes` Service (first of the range)."""
        return self.service_cidr.network_address + 1


@dataclass(frozen=True)
class FleetPlan:
    """The whole plan of fleet number `index`."""

    index: int

    @property
    def infra(self) -> IPv4Network:
        return list(INFRA.subnets(new_prefix=21))[self.index]

    @property
    def pods(self) -> IPv4Network:
        return list(PODS.subnets(new_prefix=16))[self.index]

    def segment(self, index: int) -> Segment:
        return Segment(index, list(self.infra.subnets(new_prefix=SEGMENT_PREFIX))[index])

    @property
    def transit(self) -> IPv4Network:
        """The /30 between the host and the router namespace (segment 0)."""
        return IPv4Network((self.infra.network_address, 30))

    @property
    def host_address(self) -> IPv4Address:
        return self.transit.network_address + 1

    @property
    def router_address(self) -> IPv4Address:
        return self.transit.network_address + 2

    @property
    def global_segment(self) -> Segment:
        return self.segment(1)

    @property
    def backup_segment(self) -> Segment:
        return self.segment(2)

    @property
    def service_cidr(self) -> IPv4Network:
        return list(self.pods.subnets(new_prefix=20))[MAX_CLUSTERS]

    def cluster(self, index: int) -> ClusterPlan:
        if not 0 <= index < MAX_CLUSTERS:
            raise ConfigError(
                f"a local fleet has at most {MAX_CLUSTERS} clusters, asked for cluster {index + 1}"
            )
        return ClusterPlan(
            index=index,
            segment=self.segment(FIRST_CLUSTER_SEGMENT + index),
            pod_cidr=list(self.pods.subnets(new_prefix=20))[index],
            service_cidr=self.service_cidr,
        )

    @property
    def routed(self) -> tuple[IPv4Network, IPv4Network]:
        """The ranges the host routes into the fleet through its router namespace."""
        return self.infra, self.pods


def plan(index: int) -> FleetPlan:
    if not 0 <= index < MAX_FLEETS:
        raise ValueError(f"fleet index {index} outside 0..{MAX_FLEETS - 1}")
    return FleetPlan(index)
