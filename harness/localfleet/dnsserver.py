"""The fleet's DNS, opt-in (`fleet up --dns`): the real CoreDNS as the authoritative server of the apps'
global names, as k8gb answers them, and a second CoreDNS as the runner's caching resolver.

The authoritative server serves the zone file the GSLB writes (gslb.py: the serving clusters' ingress
addresses for each Gslb host, with the Gslb's spec.strategy.dnsTtlSeconds as TTL) through CoreDNS's `file`
plugin, which reloads it within a second of a new SOA serial. The resolver forwards to it and caches each
answer for its TTL (`cache`), so a client behind it keeps a lost cluster's address until the TTL runs
out, as behind any resolver. Each runs in a network namespace of its own on the global segment.
"""

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from harness.errors import FleetDrillError
from harness.localfleet import each, netns, network, processes
from harness.localfleet.state import FleetState, start_process

ZONE = "fleet.local"
PORT = 53
AUTHORITATIVE_HOST, RESOLVER_HOST = 4, 5
"""Offsets on the global segment (2 is the GSLB's)."""
RELOAD = "1s"
NEGATIVE_TTL_S = 1
"""The SOA minimum: how long a resolver may cache "no such record" (no cluster serving)."""


@dataclass(frozen=True)
class DnsPlan:
    """Where the fleet's DNS lives."""

    folder: Path
    authoritative: str
    resolver: str

    @property
    def zone_file(self) -> Path:
        return self.folder / f"{ZONE}.zone"


def plan_for(state: FleetState) -> DnsPlan:
    segment = state.plan.global_segment
    return DnsPlan(
        state.folder / "dns", str(segment.host(AUTHORITATIVE_HOST)), str(segment.host(RESOLVER_HOST))
    )


def zone_text(zone: str, nameserver: str, records: dict[str, list[str]], ttl_s: int, serial: int) -> str:
    """A zone file: SOA and NS (the authoritative server), and an A record per address of each name."""
    origin = zone.rstrip(".") + "."
    lines = [
        f"$ORIGIN {origin}",
        f"@ {ttl_s} IN SOA ns.{origin} hostmaster.{origin} {serial} 1 1 60 {NEGATIVE_TTL_S}",
        f"@ {ttl_s} IN NS ns.{origin}",
        f"ns {ttl_s} IN A {nameserver}",
    ]
    for name, addresses in sorted(records.items()):
        lines += [f"{name.rstrip('.')}. {ttl_s} IN A {address}" for address in addresses]
    return "\n".join(lines) + "\n"


def write_zone(path: Path, text: str) -> None:
    """Replace the zone file at once (CoreDNS never reads half of it)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(text)
    staging.rename(path)


def in_zone(name: str, zone: str = ZONE) -> bool:
    name, zone = name.rstrip(".").lower(), zone.rstrip(".").lower()
    return name == zone or name.endswith(f".{zone}")


def authoritative_corefile(dns: DnsPlan) -> str:
    return (
        f"{ZONE}:{PORT} {{\n  bind {dns.authoritative}\n  errors\n"
        f"  file {dns.zone_file} {{\n    reload {RELOAD}\n  }}\n}}\n"
    )


def resolver_corefile(dns: DnsPlan) -> str:
    """Forward everything to the authoritative server; cache each answer for its own TTL."""
    return (
        f".:{PORT} {{\n  bind {dns.resolver}\n  errors\n  cache\n  forward . {dns.authoritative}:{PORT}\n}}\n"
    )


def prepare(state: FleetState) -> DnsPlan:
    """The fleet's DNS folder with an empty zone (the GSLB, started next, writes it once it decides)."""
    dns = plan_for(state)
    dns.folder.mkdir(parents=True, exist_ok=True)
    write_zone(dns.zone_file, zone_text(ZONE, dns.authoritative, {}, 5, 1))
    return dns


def start(state: FleetState, coredns: Path, dns: DnsPlan) -> None:
    """Both CoreDNS servers, each in its namespace on the global segment (the GSLB's, made before)."""
    for role, offset, corefile in (
        ("authoritative", AUTHORITATIVE_HOST, authoritative_corefile(dns)),
        ("resolver", RESOLVER_HOST, resolver_corefile(dns)),
    ):
        namespace = f"{network.prefix(state.plan)}dns-{role[:4]}"
        netns.create(namespace)
        address = str(network.attach(state.plan, state.plan.global_segment, namespace, offset))
        conf = dns.folder / f"Corefile.{role}"
        conf.write_text(corefile)
        start_process(
            state,
            processes.ProcessSpec(
                f"global/dns-{role}",
                namespace,
                [str(coredns), "-conf", str(conf)],
                {"GOGC": "50"},
                str(state.folder / "logs" / "global" / f"dns-{role}.log"),
                address,
            ),
        )


def wait_answering(dns: DnsPlan, name: str, address: str, deadline_s: float) -> None:
    """Poll until both servers answer `name` with `address` alone (the GSLB published the active cluster;
    an answer the resolver cached while the GSLB's health checks still settled has expired)."""
    servers = (dns.authoritative, dns.resolver)
    checks = {server: functools.partial(_answers_alone, server, name, address) for server in servers}
    unmet = each.unmet_after(checks, deadline_s)
    if unmet:
        raise FleetDrillError(
            f"CoreDNS at {', '.join(unmet)} does not answer {name} with {address} after "
            f"{deadline_s:.0f} s; logs in {dns.folder.parent / 'logs' / 'global'}"
        )


def _answers_alone(server: str, name: str, address: str) -> bool:
    return _answer(server, name) == [address]


def _answer(server: str, name: str) -> list[str]:
    """The addresses `server` answers for `name` (none when it does not answer)."""
    try:
        query = dns.message.make_query(f"{name}.", dns.rdatatype.A)
        answer = dns.query.udp(query, server, timeout=0.5, port=PORT).answer
    except (dns.exception.DNSException, OSError):
        return []
    return sorted(item.address for rrset in answer for item in rrset if hasattr(item, "address"))
