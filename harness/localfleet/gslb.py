"""The fleet's global endpoint: health-checks every cluster's ingress and proxies to the serving ones.

The strategy comes from a k8gb-style Gslb resource (manifests/gslb-crd.yaml) watched in every
cluster whose API answers. Clusters may disagree (a promoter wrote some of them, or one was lost):
the object changed most recently wins. Its time is the annotation `fleetdrill.io/changed-at`
(RFC 3339) when present, else the latest `metadata.managedFields[].time` outside the status
subresource, else its creationTimestamp; on a tie the earlier context in --contexts wins. A lost
cluster's last known object still counts, so its API being gone changes nothing by itself.

Health: the first check of a backend sets its state; then `fall` failures in a row mark it
unhealthy and `rise` successes healthy. failover serves the first healthy backend whose name or
geo tag is primaryGeoTag, else the first healthy one in --backends order; roundRobin serves every
healthy backend in turn. overflow (ours: k8gb has no such mode) is failover with a capacity: a request
goes to the first healthy backend in failover order that is not full, full meaning its requests in
flight through us reach its ready endpoints (of --service, by list+watch of its EndpointSlices in that
cluster) times spec.strategy.capacityPerEndpoint; when all are full, to the least loaded for its
capacity. Pods left Pending never become ready endpoints, so a cluster out of room stops growing its
capacity and the excess spills to the next cluster. GET /-/gslb reports the state as JSON.

With --dns-zone-file, every change of the serving clusters or the strategy rewrites that zone file
(dnsserver.py: CoreDNS serves it): the Gslb host's A records are the serving clusters' ingress
addresses (with overflow, only the primary's: DNS cannot know when it is full), with
spec.strategy.dnsTtlSeconds as TTL (k8gb's default, 30 s, when unset), as k8gb publishes them.

    python -m harness.localfleet.gslb --kubeconfig K --contexts A,B,C --listen ADDR:PORT --namespace NS
        --name GSLB --backends A=http://ADDR:PORT,... [--geo-tags A=TAG,...] [--interval 1.0]
        [--timeout 1.0] [--fall 2] [--rise 2] [--health-path /readyz] [--ground-truth PATH]
        [--positions-interval 0.25] [--dns-zone-file PATH --dns-server ADDR] [--service NAME]
"""

import argparse
import asyncio
import functools
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import uvloop
from kubernetes import client, config

from harness.localfleet import dnsserver, groundtruth
from harness.localfleet.ingress import (
    Address,
    Pool,
    Request,
    Response,
    forward,
    header,
    parse_address,
    ready_endpoints,
    serve,
    text,
)
from harness.localfleet.kwatch import Reflector, changed_at, choose, gslb_lister, patch_gslb_status
from harness.localfleet.replication_truth import watch_positions

log = logging.getLogger("gslb")
FLUSH_INTERVAL_S = 0.2
DEFAULT_TTL_S = 30
"""k8gb's dnsTtlSeconds when the Gslb sets none."""
POSITIONS_TIMEOUT_S = 0.5
"""How long one read of a cluster's replication position may take (a lost cluster's must not hold up the
next round of the others' by more)."""


def _hostport(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


@dataclass
class Backend:
    """One cluster's ingress and what the health checks think of it."""

    name: str
    geo: str
    address: Address
    healthy: bool | None = None
    streak: int = 0
    since: float = 0.0
    error: str = ""
    ready: int = 0
    """Ready endpoints of the Service in this cluster, as last seen (overflow's capacity)."""
    in_flight: int = 0
    """Requests we sent it that have not been answered yet."""

    def record(self, ok: bool, error: str, fall: int, rise: int) -> bool:
        """Count one check; return whether the health state flipped."""
        self.error = error
        self.streak = self.streak + 1 if ok != self.healthy else 0
        if self.healthy is None or self.streak >= (rise if ok else fall):
            self.healthy, self.streak, self.since = ok, 0, time.time()
            return True
        return False


@dataclass(frozen=True)
class Strategy:
    type: str
    primary: str
    host: str
    ttl: int = DEFAULT_TTL_S
    capacity: int = 0
    """overflow: requests in flight per ready endpoint (spec.strategy.capacityPerEndpoint)."""

    def __str__(self) -> str:
        per = f", capacityPerEndpoint {self.capacity}" if self.type == "overflow" else ""
        primary, host = self.primary or "-", self.host or "-"
        return f"{self.type}, primaryGeoTag {primary}, host {host}, TTL {self.ttl} s{per}"


def failover_order(healthy: list[Backend], primary: str) -> list[Backend]:
    """The backends whose name or geo tag is `primary` first, then the others in their order."""
    first = [b for b in healthy if primary in (b.name, b.geo)]
    return first + [b for b in healthy if b not in first]


def overflow_pick(order: list[Backend], per_endpoint: int) -> Backend:
    """The first backend that is not full (in flight below ready endpoints x per_endpoint); when all are
    full, the one least loaded for its capacity (the earlier on a tie; no ready endpoint is no capacity)."""
    for backend in order:
        if backend.in_flight < backend.ready * per_endpoint:
            return backend
    return min(order, key=lambda b: b.in_flight / (b.ready * per_endpoint) if b.ready else float("inf"))


class Gslb:
    """Health checks, the strategy of the winning Gslb object, and the proxy that follows them."""

    def __init__(self, args: argparse.Namespace, backends: list[Backend]) -> None:
        self.args, self.backends = args, backends
        self.loop = asyncio.get_running_loop()
        self.views: dict[str, dict | None] = dict.fromkeys(args.contexts)
        self.apis_state: dict[str, dict] = {ctx: {"synced": False, "error": ""} for ctx in args.contexts}
        self.strategy: Strategy | None = None
        self.source: tuple[str, str] | None = None
        self.preference: list[Backend] = []
        self.serving: list[str] = []
        self.since = time.time()
        self.pool, self.health_pool = Pool(), Pool()
        self._turn = itertools.count()
        self._serial = int(time.time())
        self._status_due = threading.Event()
        self.batch = groundtruth.Batch(Path(args.ground_truth)) if args.ground_truth else None

    def on_gslb(self, ctx: str, reflector: Reflector) -> None:
        """Reflector callback (its thread): hand the context's view to the event loop."""
        obj = next(iter(reflector.store.values()), None)
        self.loop.call_soon_threadsafe(self._view, ctx, obj, reflector.synced, reflector.error)

    def _view(self, ctx: str, obj: dict | None, synced: bool, error: str) -> None:
        self.views[ctx], self.apis_state[ctx] = obj, {"synced": synced, "error": error}
        won = choose(self.views)
        strategy, self.source = None, None
        if won:
            spec = won[1].get("spec") or {}
            rules = (spec.get("ingress") or {}).get("rules") or [{}]
            kind = spec.get("strategy") or {}
            ttl = kind.get("dnsTtlSeconds", DEFAULT_TTL_S)
            strategy = Strategy(
                kind.get("type", ""),
                kind.get("primaryGeoTag", ""),
                rules[0].get("host", ""),
                ttl,
                kind.get("capacityPerEndpoint", 0),
            )
            self.source = (won[0], changed_at(won[1]).isoformat())
        if strategy != self.strategy:
            self.strategy = strategy
            log.info("strategy: %s (from %s)", strategy, self.source and ", changed at ".join(self.source))
            self._truth("strategy", strategy=strategy and strategy.__dict__, source=self.source)
            self._decide()
            self._publish()

    async def check_forever(self) -> None:
        """Check every backend each interval, concurrently."""
        while True:
            started = self.loop.time()
            flipped = await asyncio.gather(*(self._check(b) for b in self.backends))
            if any(flipped):
                self._decide()
                self._status_due.set()
            await asyncio.sleep(max(0.0, started + self.args.interval - self.loop.time()))

    async def _check(self, backend: Backend) -> bool:
        host, port = backend.address
        probe = Request("GET", self.args.health_path, [("Host", f"{host}:{port}")], b"", "gslb")
        try:
            async with asyncio.timeout(self.args.timeout):
                response = await self.health_pool.send(backend.address, probe)
            ok, error = 200 <= response.status < 400, f"HTTP {response.status}"
        except Exception as failure:
            ok, error = False, f"{type(failure).__name__}: {failure}"
        if not backend.record(ok, "" if ok else error, self.args.fall, self.args.rise):
            return False
        log.info(
            "backend %s is %s%s", backend.name, "healthy" if ok else "unhealthy", f" ({error})" * (not ok)
        )
        self._truth("health", backend=backend.name, healthy=ok, error=backend.error)
        return True

    def _decide(self) -> None:
        if any(b.healthy is None for b in self.backends):
            return  # the first round of checks is not over: no decision on half the facts
        healthy = [b for b in self.backends if b.healthy]
        strategy = self.strategy
        if strategy and strategy.type == "failover":
            self.preference = failover_order(healthy, strategy.primary)
            serving = self.preference[:1]
        elif strategy and strategy.type == "overflow" and _valid_capacity(strategy.capacity):
            self.preference = failover_order(healthy, strategy.primary)
            serving = self.preference
        else:
            self.preference = healthy if strategy and strategy.type == "roundRobin" else []
            serving = self.preference
        names = [b.name for b in serving]
        if names != self.serving:
            log.info("serving: %s (%s)", ", ".join(names) or "none", self._why())
            self._truth("serving", serving=names, previous=self.serving, reason=self._why())
            self.serving, self.since = names, time.time()
            self._status_due.set()
            self._publish()

    def _publish(self) -> None:
        """Write the DNS zone: the serving clusters' ingress addresses for the Gslb host."""
        if not self.args.dns_zone_file or any(b.healthy is None for b in self.backends):
            return
        host = self.strategy.host if self.strategy else ""
        records = {host: [b.address[0] for b in self.backends if b.name in self._published()]}
        ttl = self.strategy.ttl if self.strategy else DEFAULT_TTL_S
        self._serial += 1
        text = dnsserver.zone_text(
            dnsserver.ZONE,
            self.args.dns_server,
            records if dnsserver.in_zone(host) else {},
            ttl,
            self._serial,
        )
        dnsserver.write_zone(Path(self.args.dns_zone_file), text)
        log.info("DNS: %s -> %s (TTL %d s, serial %d)", host, records.get(host), ttl, self._serial)
        self._truth("dns", host=host, addresses=records.get(host, []), ttl=ttl, serial=self._serial)

    def _published(self) -> list[str]:
        """The serving clusters DNS and the status name: with overflow only the primary, as DNS cannot
        know when it is full."""
        overflow = self.strategy and self.strategy.type == "overflow"
        return self.serving[:1] if overflow else self.serving

    def _why(self) -> str:
        strategy = self.strategy
        if not strategy:
            return f"no Gslb {self.args.namespace}/{self.args.name} in {', '.join(self.args.contexts)}"
        if strategy.type not in ("failover", "roundRobin", "overflow"):
            return f"unsupported strategy {strategy.type!r}"
        if strategy.type == "overflow" and not _valid_capacity(strategy.capacity):
            wrong = strategy.capacity
            return f"overflow needs spec.strategy.capacityPerEndpoint, a positive integer, not {wrong!r}"
        primary = f", primary {strategy.primary}" if strategy.type != "roundRobin" else ""
        healthy = [b.name for b in self.backends if b.healthy]
        return f"{strategy.type}{primary}; healthy: {', '.join(healthy) or 'none'}"

    async def handle(self, request: Request) -> Response:
        if request.target == "/-/gslb":
            body = json.dumps(self.report(), indent=1).encode()
            return Response(200, "OK", [("Content-Type", "application/json")], body)
        started = time.monotonic()
        response = await self._route(request)
        if self.batch is not None:
            served_by = header(response.headers, "x-served-by") or ""
            self.batch.add(
                "request",
                method=request.method,
                target=request.target[:200],
                status=response.status,
                cluster=served_by.split("/", 1)[0],
                served_by=served_by,
                started=started,
            )
        return response

    async def _route(self, request: Request) -> Response:
        preference = self.preference
        if not preference:
            return text(503, "Service Unavailable", f"no cluster to serve: {self._why()}")
        if self.strategy.type == "overflow":
            start = preference.index(overflow_pick(preference, self.strategy.capacity))
        else:
            start = next(self._turn) % len(preference) if self.strategy.type == "roundRobin" else 0
        chosen = preference[start]
        candidates = [
            preference[(start + i) % len(preference)].address for i in range(min(2, len(preference)))
        ]
        chosen.in_flight += 1
        try:
            return await forward(self.pool, request, candidates)
        finally:
            chosen.in_flight -= 1

    def on_slices(self, cluster: str, reflector: Reflector) -> None:
        """Reflector callback (its thread): the count of the Service's ready endpoints in one cluster."""
        ready = len(ready_endpoints(list(reflector.store.values()), None)[0])
        self.loop.call_soon_threadsafe(self._ready, cluster, ready)

    def _ready(self, cluster: str, ready: int) -> None:
        for backend in self.backends:
            if backend.name == cluster and backend.ready != ready:
                log.info("ready endpoints of %s in %s: %d", self.args.service, cluster, ready)
                self._truth("endpoints", backend=cluster, service=self.args.service, ready=ready)
                backend.ready = ready

    async def flush_forever(self) -> None:
        """Append the batched ground truth each FLUSH_INTERVAL_S."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await asyncio.to_thread(self.batch.flush)

    def on_positions(self, positions: dict) -> None:
        self.batch.add("replication", clusters=positions)

    def report(self) -> dict:
        """The state GET /-/gslb returns."""
        return {
            "gslb": f"{self.args.namespace}/{self.args.name}",
            "strategy": self.strategy and self.strategy.__dict__,
            "source": self.source and {"context": self.source[0], "changedAt": self.source[1]},
            "serving": self.serving,
            "target": self.serving[0] if self.serving else None,
            "since": _iso(self.since),
            "reason": self._why(),
            "backends": {
                b.name: {"address": _hostport(b.address), "geoTag": b.geo, "healthy": b.healthy}
                | {"since": _iso(b.since) if b.since else None, "error": b.error}
                | {"readyEndpoints": b.ready, "inFlight": b.in_flight}
                for b in self.backends
            },
            "apis": {
                ctx: {
                    **state,
                    "changedAt": changed_at(view).isoformat() if (view := self.views[ctx]) else None,
                }
                for ctx, state in self.apis_state.items()
            },
        }

    def _truth(self, event: str, **fields: object) -> None:
        if self.args.ground_truth:
            groundtruth.record(Path(self.args.ground_truth), event, **fields)

    def write_status(self, apis: dict[str, client.ApiClient]) -> None:
        """Status writer thread: after a change, patch the status of the object in every synced context."""
        while self._status_due.wait():
            self._status_due.clear()
            health = {
                b.name: "Unknown" if b.healthy is None else ("Healthy" if b.healthy else "Unhealthy")
                for b in self.backends
            }
            host = self.strategy.host if self.strategy else ""
            records = [_hostport(b.address) for b in self.backends if b.name in self._published()]
            status = {"servingClusters": self.serving, "clusterHealth": health}
            if host:
                status |= {
                    "healthyRecords": {host: records},
                    "serviceHealth": {host: "Healthy" if records else "Unhealthy"},
                }
            for ctx, api in apis.items():
                if self.views[ctx] and self.apis_state[ctx]["synced"]:
                    try:
                        patch_gslb_status(api, self.args.namespace, self.args.name, status)
                    except Exception as error:
                        log.info("could not write the status in %s: %s", ctx, str(error).splitlines()[0])


async def run(args: argparse.Namespace, backends: list[Backend]) -> None:
    gslb = Gslb(args, backends)
    gslb._truth("start", backends={b.name: _hostport(b.address) for b in backends}, contexts=args.contexts)
    apis = {ctx: config.new_client_from_config(args.kubeconfig, context=ctx) for ctx in args.contexts}
    for ctx, api in apis.items():
        lister, on_change = gslb_lister(api, args.namespace, args.name), functools.partial(gslb.on_gslb, ctx)
        Reflector(f"Gslb in {ctx}", lister, on_change, log.info).start()
        slices = functools.partial(
            client.DiscoveryV1Api(api).list_namespaced_endpoint_slice,
            args.namespace,
            label_selector=f"kubernetes.io/service-name={args.service}",
        )
        on_slices = functools.partial(gslb.on_slices, ctx)
        Reflector(f"endpointslices of {args.service} in {ctx}", slices, on_slices, log.info).start()
    threading.Thread(target=gslb.write_status, args=(apis,), name="status", daemon=True).start()
    server = await serve(gslb.handle, parse_address(args.listen))
    host, port = server.sockets[0].getsockname()[:2]
    log.info("listening on %s:%d for Gslb %s/%s", host, port, args.namespace, args.name)
    tasks = [server.serve_forever(), gslb.check_forever()]
    if gslb.batch is not None:
        clusters = {b.name: b.address for b in backends}
        positions = watch_positions(clusters, args.positions_interval, POSITIONS_TIMEOUT_S, gslb.on_positions)
        tasks += [gslb.flush_forever(), positions]
    await asyncio.gather(*tasks)


def _valid_capacity(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _pairs(value: str) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in value.split(",") if item)
    if not all(pairs) or not all(pairs.values()):
        raise argparse.ArgumentTypeError(f"expected name=value[,name=value...], got {value!r}")
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m harness.localfleet.gslb", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--contexts", required=True, type=lambda v: [c for c in v.split(",") if c])
    parser.add_argument("--listen", required=True, help="ADDR:PORT (port 0: any; the log says which)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True, help="the Gslb object's name")
    parser.add_argument(
        "--backends", required=True, type=_pairs, help="cluster=http://ADDR:PORT,... in failover order"
    )
    parser.add_argument(
        "--geo-tags", type=_pairs, default={}, help="cluster=tag,... (default: the cluster's name)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between health checks")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds a health check may take")
    parser.add_argument("--fall", type=int, default=2, help="failures in a row that make a backend unhealthy")
    parser.add_argument("--rise", type=int, default=2, help="successes in a row that make it healthy again")
    parser.add_argument("--health-path", default="/readyz")
    parser.add_argument("--ground-truth", help="append the ground truth to this file as JSON lines")
    parser.add_argument(
        "--positions-interval", type=float, default=0.25, help="seconds between replication-position reads"
    )
    parser.add_argument("--dns-zone-file", help="publish the serving clusters in this zone file")
    parser.add_argument("--dns-server", default="", help="the authoritative server's address (its NS record)")
    parser.add_argument(
        "--service", help="the Service whose ready endpoints are a cluster's capacity (default: --name)"
    )
    args = parser.parse_args(argv)
    args.service = args.service or args.name
    backends = []
    for name, url in args.backends.items():
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            parser.error(f"--backends: {name}={url} is not http://ADDR:PORT")
        backends.append(Backend(name, args.geo_tags.get(name, name), (parts.hostname, parts.port)))
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger().handlers[0].addFilter(lambda r: not r.name.startswith("urllib3"))  # its retries
    uvloop.run(run(args, backends))


if __name__ == "__main__":
    main()
