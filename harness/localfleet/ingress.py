"""The per-cluster ingress: an HTTP/1.1 reverse proxy over the ready endpoints of one Service.

Endpoints come from the Service's EndpointSlices through a list+watch (kwatch.Reflector), never by
polling. Requests go round robin to the endpoints whose `ready` condition is true (or unset, which
the API says to read as ready); a connection error moves the request to the next endpoint once,
then 502. While the API is unreachable it keeps the endpoints it last saw. The proxy is asyncio (on
uvloop's event loop) with keep-alive pools towards upstreams; bodies are buffered whole. The GSLB
(gslb.py) reuses `serve`, `Pool` and `forward`.

With --metrics-listen it serves Prometheus metrics there (GET /metrics, as ingress-nginx does on its
port 10254): ingress_requests_total{upstream, method, status} (ingress-nginx's requests counter has
method and status too) and ingress_ready_endpoints{upstream} (the Service).

    python -m harness.localfleet.ingress --kubeconfig K --context C --listen ADDR:PORT \
        --namespace NS --service SVC [--port-name NAME] [--metrics-listen ADDR:PORT]
"""

import argparse
import asyncio
import functools
import itertools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import prometheus_client
import uvloop
from kubernetes import client, config

from harness.localfleet.kwatch import Reflector

# Hop-by-hop headers, and the ones the proxy writes itself.
NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te"}
    | {"trailer", "transfer-encoding", "upgrade", "expect", "content-length"}
)
CONNECT_TIMEOUT_S = 2.0
RESPONSE_TIMEOUT_S = 60.0
IDLE_PER_UPSTREAM = 512
Address = tuple[str, int]
Headers = list[tuple[str, str]]
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
log = logging.getLogger("ingress")
REQUESTS = prometheus_client.Counter(
    "ingress_requests_total", "Requests answered by the ingress", ["upstream", "method", "status"]
)
READY_ENDPOINTS = prometheus_client.Gauge(
    "ingress_ready_endpoints", "Ready endpoints of the ingress's Service", ["upstream"]
)
OWN_ERRORS = (502, 503, 504)
"""The statuses the ingress answers itself (no endpoint, none answered, none in time)."""
METHODS = ("GET", "POST")
"""The methods whose own errors are exported at zero from the start (reads and writes)."""


@dataclass
class Request:
    method: str
    target: str
    headers: Headers
    body: bytes
    client: str


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes


class UpstreamDown(Exception):
    """The upstream refused, reset or closed the connection before answering."""


def header(headers: Headers, name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def text(status: int, reason: str, body: str) -> Response:
    return Response(status, reason, [("Content-Type", "text/plain; charset=utf-8")], body.encode() + b"\n")


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, Headers]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in lines[1:] if line)
    return lines[0], [(name.strip(), value.strip()) for name, _, value in fields]


async def _read_body(reader: asyncio.StreamReader, headers: Headers, to_eof: bool) -> bytes:
    if "chunked" in (header(headers, "transfer-encoding") or "").lower():
        chunks = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while (await reader.readline()).strip():  # trailers
            pass
        return b"".join(chunks)
    length = header(headers, "content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    return await reader.read() if to_eof else b""


def _render(first: str, headers: Headers, body: bytes, length: bool = True) -> bytes:
    lines = [first, *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _end_to_end(headers: Headers) -> Headers:
    named = {t.strip().lower() for t in (header(headers, "connection") or "").split(",")}
    return [(k, v) for k, v in headers if k.lower() not in NOT_FORWARDED and k.lower() not in named]


class Pool:
    """Idle keep-alive connections per upstream address."""

    def __init__(self) -> None:
        self._idle: dict[Address, list[Conn]] = defaultdict(list)

    async def send(self, address: Address, request: Request) -> Response:
        """One exchange; a reused connection the upstream had closed is retried once on a new one."""
        payload = _render(f"{request.method} {request.target} HTTP/1.1", request.headers, request.body)
        while self._idle[address]:
            conn = self._idle[address].pop()
            if not conn[0].at_eof():
                try:
                    return await self._exchange(address, conn, payload, request.method)
                except UpstreamDown:
                    break
            conn[1].close()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                conn = await asyncio.open_connection(*address)
        except (OSError, TimeoutError) as error:
            raise UpstreamDown(f"{address[0]}:{address[1]}: {error or 'connect timed out'}") from error
        return await self._exchange(address, conn, payload, request.method)

    async def _exchange(self, address: Address, conn: Conn, payload: bytes, method: str) -> Response:
        reader, writer = conn
        try:
            writer.write(payload)
            try:
                first, headers = await _read_head(reader)
            except (OSError, asyncio.IncompleteReadError) as error:
                raise UpstreamDown(f"{address[0]}:{address[1]}: {error or 'closed'}") from error
            version, status, reason = [*first.split(" ", 2), ""][:3]
            bodyless = method == "HEAD" or status[:1] == "1" or status in ("204", "304")
            body = b"" if bodyless else await _read_body(reader, headers, to_eof=True)
        except BaseException:
            writer.close()
            raise
        closing = "close" in (header(headers, "connection") or "").lower() or version != "HTTP/1.1"
        if closing or reader.at_eof() or len(self._idle[address]) >= IDLE_PER_UPSTREAM:
            writer.close()
        else:
            self._idle[address].append(conn)
        return Response(int(status), reason, headers, body)

    def retain(self, addresses: set[Address]) -> None:
        """Close idle connections to upstreams no longer in use."""
        for address in [a for a in self._idle if a not in addresses]:
            for _, writer in self._idle.pop(address):
                writer.close()


async def forward(pool: Pool, request: Request, candidates: list[Address]) -> Response:
    """Send to the first candidate; on a connection error to the next one, once; then 502."""
    forwarded = header(request.headers, "x-forwarded-for")
    headers = [(k, v) for k, v in _end_to_end(request.headers) if k.lower() != "x-forwarded-for"]
    headers.append(("X-Forwarded-For", f"{forwarded}, {request.client}" if forwarded else request.client))
    if header(headers, "host") is None:
        headers.append(("Host", f"{candidates[0][0]}:{candidates[0][1]}"))
    upstream = Request(request.method, request.target, headers, request.body, request.client)
    errors = []
    for address in candidates[:2]:
        try:
            async with asyncio.timeout(RESPONSE_TIMEOUT_S):
                response = await pool.send(address, upstream)
        except UpstreamDown as error:
            errors.append(str(error))
            continue
        except TimeoutError:
            return text(504, "Gateway Timeout", f"upstream {address[0]}:{address[1]} did not answer in time")
        kept = _end_to_end(response.headers)
        length = header(response.headers, "content-length")
        if request.method == "HEAD" and length is not None:
            kept.append(("Content-Length", length))
        return Response(response.status, response.reason, kept, response.body)
    return text(502, "Bad Gateway", "no upstream answered: " + "; ".join(errors))


Handler = Callable[[Request], Awaitable[Response]]


async def serve(handle: Handler, listen: Address) -> asyncio.Server:
    """An HTTP/1.1 server with keep-alive; each request is answered by `handle`."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        try:
            while True:
                first, headers = await _read_head(reader)
                method, target, version = first.split(" ", 2)
                if (header(headers, "expect") or "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await _read_body(reader, headers, to_eof=False)
                response = await handle(Request(method, target, headers, body, peer))
                token = (header(headers, "connection") or "").lower()
                keep = "keep-alive" in token if version == "HTTP/1.0" else "close" not in token
                out = [*response.headers, ("Connection", "keep-alive" if keep else "close")]
                head_only = method == "HEAD"
                first_line = f"HTTP/1.1 {response.status} {response.reason}"
                writer.write(_render(first_line, out, b"" if head_only else response.body, not head_only))
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError):
            pass  # the client went away or spoke something else than HTTP/1.x
        finally:
            writer.close()

    return await asyncio.start_server(connection, *listen, backlog=1024)


def parse_address(value: str) -> Address:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def ready_endpoints(slices: list[dict], port_name: str | None) -> tuple[list[Address], int]:
    """Ready (address, port) pairs over every slice, deduplicated and sorted; and the not-ready count."""
    ready, not_ready = set(), set()
    for eps in slices:
        if eps.get("addressType") not in ("IPv4", "IPv6"):
            continue
        ports = [p for p in eps.get("ports") or [] if port_name is None or p.get("name") == port_name]
        if not ports or ports[0].get("port") is None:
            continue
        for endpoint in eps.get("endpoints") or []:
            is_ready = (endpoint.get("conditions") or {}).get("ready") is not False
            for address in endpoint.get("addresses") or []:
                (ready if is_ready else not_ready).add((address, int(ports[0]["port"])))
    return sorted(ready), len(not_ready - ready)


class ServiceEndpoints:
    """A Service's ready endpoints as the reflector last saw them, kept on the event loop, and the turn of
    a round robin over them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service: str, port_name: str | None) -> None:
        self.service = service
        self.endpoints: list[Address] = []
        self._loop = loop
        self._port_name = port_name
        self._turn = itertools.count()

    def on_slices(self, reflector: Reflector) -> None:
        """Reflector callback (its thread): hand the new endpoint set to the event loop."""
        ready, not_ready = ready_endpoints(list(reflector.store.values()), self._port_name)
        self._loop.call_soon_threadsafe(self._apply, ready, not_ready)

    def _apply(self, ready: list[Address], not_ready: int) -> None:
        if ready != self.endpoints:
            listed = ", ".join(f"{a}:{p}" for a, p in ready) or "none"
            log.info("endpoints of %s changed: ready %s (%d not ready)", self.service, listed, not_ready)
            self.endpoints = ready
            self._changed(ready)

    def _changed(self, ready: list[Address]) -> None:
        """What else follows a new set of ready endpoints (nothing here)."""


class Ingress(ServiceEndpoints):
    """Round robin over the ready endpoints the reflector last saw."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service: str, port_name: str | None) -> None:
        super().__init__(loop, service, port_name)
        self.pool = Pool()
        # Every series at zero from the start: a rate() or increase() needs the counter's value before the
        # first error (a series born at 30 errors counts none of them), an alert its gauge before a change.
        READY_ENDPOINTS.labels(service).set(0)
        for method in METHODS:
            for status in OWN_ERRORS:
                REQUESTS.labels(service, method, str(status))

    def _changed(self, ready: list[Address]) -> None:
        self.pool.retain(set(ready))
        READY_ENDPOINTS.labels(self.service).set(len(ready))

    async def handle(self, request: Request) -> Response:
        response = await self._answer(request)
        REQUESTS.labels(self.service, request.method, str(response.status)).inc()
        return response

    async def _answer(self, request: Request) -> Response:
        endpoints = self.endpoints
        if not endpoints:
            return text(503, "Service Unavailable", f"no ready endpoint for service {self.service}")
        turn = next(self._turn)
        candidates = [endpoints[(turn + i) % len(endpoints)] for i in range(min(2, len(endpoints)))]
        return await forward(self.pool, request, candidates)


def watch_service(args: argparse.Namespace, on_slices: Callable[[Reflector], None]) -> None:
    """List and watch the Service's EndpointSlices (args: service_arguments'), calling on_slices with the
    reflector on each change."""
    api = config.new_client_from_config(args.kubeconfig, context=args.context)
    lister = functools.partial(
        client.DiscoveryV1Api(api).list_namespaced_endpoint_slice,
        args.namespace,
        label_selector=f"kubernetes.io/service-name={args.service}",
    )
    Reflector(f"endpointslices of {args.namespace}/{args.service}", lister, on_slices, log.info).start()


def service_arguments(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line of a process relaying one port to a Service's ready endpoints."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--context", required=True)
    parser.add_argument("--listen", required=True, help="ADDR:PORT (port 0: any; the log says which)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--port-name", help="the Service port to use (default: each slice's first port)")
    return parser


def log_to_stderr() -> None:
    """Timestamped log lines, without urllib3's (its retries)."""
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger().handlers[0].addFilter(lambda r: not r.name.startswith("urllib3"))


async def run(args: argparse.Namespace) -> None:
    ingress = Ingress(asyncio.get_running_loop(), f"{args.namespace}/{args.service}", args.port_name)
    watch_service(args, ingress.on_slices)
    if args.metrics_listen:
        host, port = parse_address(args.metrics_listen)
        prometheus_client.start_http_server(port, host)
    server = await serve(ingress.handle, parse_address(args.listen))
    host, port = server.sockets[0].getsockname()[:2]
    log.info("listening on %s:%d for %s in %s", host, port, ingress.service, args.context)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = service_arguments("python -m harness.localfleet.ingress", __doc__)
    parser.add_argument("--metrics-listen", help="ADDR:PORT to serve Prometheus metrics on (default: none)")
    args = parser.parse_args(argv)
    log_to_stderr()
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
