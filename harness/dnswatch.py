"""What a DNS-based failover does, seen from outside: the app's global name as its authoritative server and
the runner's resolver answer it, about once a second, beside the probes (apps[].dns in the fleet file).

DnsWatcher asks both servers for the name's A records from a thread of its own, each query with its own
deadline, and keeps every answer (its addresses and TTL) or failure as a DnsAnswer. split() turns those
series, t0 and the global probes into the phases of the RTO (dns_phases.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from harness.errors import FleetDrillError

if TYPE_CHECKING:
    from harness.config import GlobalDns

Server = Literal["authoritative", "resolver"]
DEFAULT_PORT = 53


@dataclass(frozen=True)
class DnsAnswer:
    """One query of the global name: who was asked, when (monotonic seconds), and what came back.

    addresses are the A records, sorted; ttl the smallest of their TTLs (None without records); error says
    why no answer came (timeout, refused, a failure rcode: SERVFAIL, NXDOMAIN)."""

    server: Server
    sent: float
    received: float
    addresses: tuple[str, ...]
    ttl: int | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def address_of(server: str) -> tuple[str, int]:
    """ADDR[:PORT] as (ADDR, PORT), port 53 unless given."""
    host, _, port = server.partition(":")
    return host, int(port) if port else DEFAULT_PORT


def ask(name: str, server: str, who: Server, timeout_s: float) -> DnsAnswer:
    """One A query of `name` at `server` over UDP, given up after timeout_s."""
    host, port = address_of(server)
    query = dns.message.make_query(dns.name.from_text(name), dns.rdatatype.A)
    sent = time.monotonic()
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout_s)
    except dns.exception.Timeout:
        return DnsAnswer(who, sent, time.monotonic(), (), None, f"timeout: no answer within {timeout_s:g} s")
    except (dns.exception.DNSException, OSError) as error:
        return DnsAnswer(who, sent, time.monotonic(), (), None, f"{type(error).__name__}: {error}")
    received = time.monotonic()
    if response.rcode() != dns.rcode.NOERROR:
        return DnsAnswer(who, sent, received, (), None, dns.rcode.to_text(response.rcode()))
    records = [r for r in response.answer if r.rdtype == dns.rdatatype.A]
    addresses = tuple(sorted({item.address for rrset in records for item in rrset}))
    ttl = min((rrset.ttl for rrset in records), default=None)
    return DnsAnswer(who, sent, received, addresses, ttl)


class DnsWatcher:
    """Asks the authoritative server and the resolver (when the fleet file names one) for the global name
    every interval_s, from a background thread, until stopped; a context manager."""

    def __init__(self, settings: GlobalDns, interval_s: float = 1.0, timeout_s: float = 0.5) -> None:
        if not 0 < timeout_s <= interval_s:
            raise FleetDrillError(
                f"DnsWatcher: timeout_s {timeout_s} must be in (0, interval_s={interval_s}]"
            )
        self.settings, self.interval_s, self.timeout_s = settings, interval_s, timeout_s
        self._servers: list[tuple[Server, str]] = [("authoritative", settings.authoritative)]
        if settings.resolver:
            self._servers.append(("resolver", settings.resolver))
        self._answers: list[DnsAnswer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DnsWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> DnsWatcher:
        if self._thread is not None:
            raise FleetDrillError("this DnsWatcher was already started; make a new one")
        self._thread = threading.Thread(target=self._run, name="fleetdrill-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop asking; returns once the last query (at most timeout_s per server) is over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s * len(self._servers) + self.interval_s)

    def answers(self, server: Server | None = None) -> list[DnsAnswer]:
        """The answers so far, in the order asked (of one server when given)."""
        with self._lock:
            return [a for a in self._answers if server is None or a.server == server]

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            for who, server in self._servers:
                answer = ask(self.settings.name, server, who, self.timeout_s)
                with self._lock:
                    self._answers.append(answer)
            due += self.interval_s
            self._stop.wait(max(0.0, due - time.monotonic()))
