"""The fleet network: a router namespace joining every segment, and the host's way in.

```
host --veth-- [router netns: seg1 (global), seg2 (backup), seg3.. (one bridge per cluster)]
                                   |veth                |veth          |veth
                             global netns         backup netns   control plane, nodes, ingress
```
The router has no default route, so nothing inside a fleet can reach beyond it; the host routes only
the fleet's own ranges into it. Traffic between clusters, regions, the backup store and the host all
crosses the router, which is where partitions drop packets.
"""

import subprocess
from ipaddress import IPv4Address, IPv4Network

from harness.localfleet import netns
from harness.localfleet.addresses import FleetPlan, Segment

PARTITION_PREFIX = "fdpart_"


def prefix(plan: FleetPlan) -> str:
    """Name prefix of every namespace and host link of the fleet."""
    return f"fd{plan.index}-"


def router_ns(plan: FleetPlan) -> str:
    return f"{prefix(plan)}wan"


def host_link(plan: FleetPlan) -> str:
    return f"fd{plan.index}h"


def build_router(plan: FleetPlan) -> None:
    """The router namespace, its link to the host, and the host routes to the fleet's ranges."""
    router = router_ns(plan)
    netns.create(router)
    netns.sysctl(router, "net.ipv4.ip_forward", "1")
    transit = plan.transit.prefixlen
    netns.ip("link", "add", host_link(plan), "type", "veth", "peer", "name", "host0", "netns", router)
    commands = [
        f"addr add {plan.host_address}/{transit} dev {host_link(plan)}",
        f"link set {host_link(plan)} up",
    ]
    commands += [f"route replace {net} via {plan.router_address}" for net in plan.routed]
    netns.ip_batch(commands)
    netns.ip_batch([f"addr add {plan.router_address}/{transit} dev host0", "link set host0 up"], netns=router)


def add_segment(plan: FleetPlan, segment: Segment) -> None:
    """A bridge in the router namespace with the segment's gateway address."""
    netns.ip_batch(
        [
            f"link add {segment.bridge} type bridge",
            f"addr add {segment.gateway}/{segment.network.prefixlen} dev {segment.bridge}",
            f"link set {segment.bridge} up",
        ],
        netns=router_ns(plan),
    )


def attach(plan: FleetPlan, segment: Segment, member: str, offset: int) -> IPv4Address:
    """Wire namespace `member` to the segment as eth0 at the segment's host `offset`; return its address."""
    address = segment.host(offset)
    router = router_ns(plan)
    link = f"v{segment.index}-{offset}"
    netns.ip_batch(
        [
            f"link add {link} type veth peer name eth0 netns {member}",
            f"link set {link} master {segment.bridge}",
            f"link set {link} up",
        ],
        netns=router,
    )
    netns.ip_batch(
        [
            f"addr add {address}/{segment.network.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {segment.gateway}",
        ],
        netns=member,
    )
    return address


def set_segment_links(plan: FleetPlan, segment: Segment, up: bool) -> None:
    """Take every member's link of the segment down (a site that lost power: its addresses stop answering,
    packets to them go unanswered) or bring them back up."""
    router = router_ns(plan)
    listed = netns.ip("-o", "link", "show", "master", segment.bridge, netns=router).stdout
    links = [line.split(":")[1].strip().split("@")[0] for line in listed.splitlines() if line.strip()]
    netns.ip_batch(
        [f"link set {link} {'up' if up else 'down'}" for link in links] or ["link show lo"], netns=router
    )


def _nft(plan: FleetPlan, script: str) -> subprocess.CompletedProcess[str]:
    argv = netns.enter_argv(router_ns(plan), ["nft", "-f", "-"])
    return subprocess.run(argv, input=script, capture_output=True, text=True, timeout=30)


def partition(
    plan: FleetPlan, name: str, side_a: list[IPv4Network], side_b: list[IPv4Network], refuse: bool = False
) -> None:
    """Drop every packet the router forwards between the two sides, both ways (a real WAN partition:
    connections across it time out); with refuse, answer each with ICMP administratively prohibited
    instead (a firewall that rejects: connections across it fail at once). Traffic within a side, and to and
    from the host, still flows."""
    a, b = ", ".join(map(str, side_a)), ", ".join(map(str, side_b))
    verdict = "reject with icmpx admin-prohibited" if refuse else "drop"
    script = (
        f"table inet {PARTITION_PREFIX}{name} {{\n chain forward {{\n"
        f"  type filter hook forward priority -10; policy accept;\n"
        f"  ip saddr {{ {a} }} ip daddr {{ {b} }} {verdict}\n"
        f"  ip saddr {{ {b} }} ip daddr {{ {a} }} {verdict}\n }}\n}}\n"
    )
    done = _nft(plan, script)
    if done.returncode != 0:
        raise netns.NetworkError(f"nft in {router_ns(plan)}: {done.stderr.strip()}")


def heal(plan: FleetPlan, name: str) -> None:
    """Remove the partition (idempotent)."""
    _nft(plan, f"delete table inet {PARTITION_PREFIX}{name}\n")


def partitions(plan: FleetPlan) -> list[str]:
    """Names of the partitions in force."""
    listed = subprocess.run(
        netns.enter_argv(router_ns(plan), ["nft", "list", "tables"]),
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [
        line.split()[-1].removeprefix(PARTITION_PREFIX)
        for line in listed.splitlines()
        if line.split()[-1:] and line.split()[-1].startswith(PARTITION_PREFIX)
    ]


def route(plan: FleetPlan, network: IPv4Network, via: IPv4Address) -> None:
    """Route a range (a node's pod CIDR) through a member of a segment."""
    netns.ip("route", "replace", str(network), "via", str(via), netns=router_ns(plan))


def teardown(plan: FleetPlan) -> None:
    """Delete every namespace of the fleet and its host link (routes go with the link)."""
    for name in netns.names(prefix(plan)):
        netns.delete(name)
    netns.ip("link", "delete", host_link(plan), check=False)
