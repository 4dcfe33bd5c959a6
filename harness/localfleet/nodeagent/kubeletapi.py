"""The kubelet's HTTP API on the node's InternalIP, port 10250: container logs, exec, attach, port
forwarding, the Summary API and the metrics endpoints (/metrics, /metrics/resource: nodeagent/metrics.py).

Only the API server calls it: pods/log, pods/exec, pods/attach, pods/portforward and nodes/proxy proxy
here (--kubelet-preferred-address-types).
Authentication: TLS with a client certificate signed by the fleet CA; without one the answer is 401,
and a certificate from another CA fails the handshake.
Authorization: a certificate in system:masters may do anything, with no round trip to an API server
that a drill may have just taken away (the API server's kubelet client is in it). Any other identity
gets the kubelet's webhook mode (nodeagent/authz.py): a SubjectAccessReview for nodes/stats (/stats/*),
nodes/metrics (/metrics/*) or nodes/proxy (the rest), as metrics-server's client certificate does for
/metrics/resource; the node and viewer identities have none of those subresources. Prometheus scrapes
/metrics and /metrics/resource through the API server (nodes/proxy:
/api/v1/nodes/NODE/proxy/metrics/resource), as the API server's client.
Refusals are worded as the kubelet words them (pkg/kubelet/server/server.go).
"""

import asyncio
import contextlib
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from harness.localfleet.nodeagent import (
    attach,
    authz,
    containerexec,
    containerlogs,
    metrics,
    portforward,
    streams,
)
from harness.localfleet.nodeagent.pods import Container, PodWorker
from harness.localfleet.nodeagent.summary import NodeSummary

PORT = 10250
HEAD_TIMEOUT_S = 30.0
HANDSHAKE_TIMEOUT_S = 10.0
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Request:
    """An HTTP request head: method, path segments, query, headers (lower-case; repeats joined)."""

    method: str
    parts: list[str]
    query: dict[str, list[str]]
    headers: dict[str, str]

    @classmethod
    async def read(cls, reader: asyncio.StreamReader) -> "Request":
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *fields = head.split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers: dict[str, str] = {}
        for field in filter(None, fields):
            name, _, value = field.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        url = urllib.parse.urlsplit(target)
        parts = [urllib.parse.unquote(part) for part in url.path.strip("/").split("/")]
        return cls(method, parts, urllib.parse.parse_qs(url.query), headers)


class KubeletApi:
    """The HTTPS server, on an event loop of its own in a daemon thread of the node agent."""

    def __init__(
        self,
        workers: dict[str, PodWorker],
        stats: NodeSummary,
        address: str,
        cert: Path,
        key: Path,
        client_ca: Path,
        reviewer: authz.Reviewer | None = None,
    ) -> None:
        self.workers, self.stats, self.address, self.reviewer = workers, stats, address, reviewer
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.load_verify_locations(client_ca)
        self.context.verify_mode = ssl.CERT_OPTIONAL
        self.clock = containerlogs.LogClock()
        self.registry = metrics.kubelet_registry(stats.node, lambda: list(self.workers.values()))

    def start(self) -> None:
        threading.Thread(target=asyncio.run, args=(self._serve(),), name="kubelet-api", daemon=True).start()

    async def _serve(self) -> None:
        server = await asyncio.start_server(
            self._connection, self.address, PORT, ssl=self.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
        )
        print(f"kubelet API serving on https://{self.address}:{PORT}", flush=True)
        async with server:
            await asyncio.gather(server.serve_forever(), self.clock.run(self.workers))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (the response says Connection: close)."""
        try:
            request = await asyncio.wait_for(Request.read(reader), HEAD_TIMEOUT_S)
            await self._authorize(writer, request)
            match request.parts:
                case ["containerLogs", namespace, pod, container] if request.method == "GET":
                    await self._logs(request, reader, writer, namespace, pod, container)
                case ["exec" | "attach" as kind, namespace, pod, *uid, container] if len(uid) <= 1:
                    wanted = _stream_options(request.query)
                    running = self._running(namespace, pod, uid, container)
                    session = self._exec if kind == "exec" else self._attach
                    await session(request, reader, writer, wanted, *running)
                case ["portForward", namespace, pod, *uid] if len(uid) <= 1:
                    await self._port_forward(request, reader, writer, namespace, pod, uid)
                case ["stats", "summary"] if request.method == "GET":
                    await self._summary(writer)
                case ["metrics"] if request.method == "GET":
                    await _reply(
                        writer, metrics.CONTENT_TYPE, metrics.kubelet_metrics(self.registry).encode()
                    )
                case ["metrics", "resource"] if request.method == "GET":
                    await _reply(writer, metrics.CONTENT_TYPE, self._resource_metrics().encode())
                case _:
                    raise streams.Refusal(HTTPStatus.NOT_FOUND, "404 page not found\n")
        except streams.Refusal as refusal:
            streams.respond(writer, refusal.code, refusal.message, refusal.headers | {"Connection": "close"})
        except (*streams.PROTOCOL_ERRORS, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
                await writer.wait_closed()

    async def _authorize(self, writer: asyncio.StreamWriter, request: Request) -> None:
        cert = writer.get_extra_info("peercert")
        if not cert:
            raise streams.Refusal(HTTPStatus.UNAUTHORIZED, "Unauthorized")
        subject = [pair for rdn in cert["subject"] for pair in rdn]
        groups = tuple(value for name, value in subject if name == "organizationName")
        if "system:masters" not in groups:
            user = next((value for name, value in subject if name == "commonName"), "")
            verb = VERBS.get(request.method, request.method.lower())
            subresource = request.parts[0] if request.parts[0] in ("stats", "metrics") else "proxy"
            if self.reviewer and await asyncio.to_thread(
                self.reviewer.allowed, user, groups, verb, subresource
            ):
                return
            raise streams.Refusal(
                HTTPStatus.FORBIDDEN,
                f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])\n",
            )

    def _worker(self, namespace: str, name: str, uid: list[str] | None = None) -> PodWorker | None:
        """The pod's worker (the live one if the name was reused; the one with the UID if one is given)."""
        found = [
            w
            for w in list(self.workers.values())
            if (w.pod.metadata.namespace, w.pod.metadata.name) == (namespace, name)
            and (not uid or w.pod.metadata.uid == uid[0])
        ]
        return next((w for w in found if w.is_alive()), found[0] if found else None)

    def _running(self, namespace: str, pod: str, uid: list[str], name: str) -> tuple[PodWorker, Container]:
        """The pod's worker and its running container `name`, refused as the kubelet refuses."""
        worker = self._worker(namespace, pod, uid)
        if worker is None:
            raise streams.Refusal(HTTPStatus.NOT_FOUND, "pod does not exist")
        container = next((c for c in worker.containers if c.spec.name == name and c.process), None)
        if container is None:
            raise streams.Refusal(HTTPStatus.INTERNAL_SERVER_ERROR, f'container not found ("{name}")')
        return worker, container

    async def _summary(self, writer: asyncio.StreamWriter) -> None:
        """GET /stats/summary: the node's and its pods' CPU and memory, read now."""
        body = json.dumps(self.stats.summary(list(self.workers.values())), separators=(",", ":")).encode()
        await _reply(writer, "application/json", body)

    def _resource_metrics(self) -> str:
        """GET /metrics/resource: the same figures in the kubelet's resource metrics."""
        try:
            found = self.stats.read(list(self.workers.values()))
        except OSError:
            found = None
        return metrics.resource_metrics(found)

    async def _logs(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        namespace: str,
        pod: str,
        name: str,
    ) -> None:
        """GET /containerLogs/NS/POD/CONTAINER, answered as the kubelet's getContainerLogs answers."""
        options = containerlogs.LogOptions.parse(request.query)
        worker = self._worker(namespace, pod)
        if worker is None:
            raise streams.Refusal(HTTPStatus.NOT_FOUND, f'pod "{pod}" does not exist')
        container = next((c for c in worker.containers if c.spec.name == name), None)
        if container is None:
            raise streams.Refusal(HTTPStatus.NOT_FOUND, f'container "{name}" not found in pod "{pod}"')
        try:
            run = containerlogs.chosen_run(pod, container, options.previous)
        except containerlogs.LogError as error:
            raise streams.Refusal(HTTPStatus.BAD_REQUEST, str(error)) from error
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        hung_up = asyncio.ensure_future(reader.read(1))
        try:
            async for chunk in self.clock.read(worker, container, run, options, hung_up):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            hung_up.cancel()

    async def _exec(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        wanted: dict[str, bool],
        worker: PodWorker,
        container: Container,
    ) -> None:
        """/exec/NS/POD/[UID/]CONTAINER?command=..&input=1&output=1&error=1&tty=1: run a command in the
        container over a stream session."""
        name, process = container.spec.name, container.process
        try:
            env = containerexec.container_env(process.pid)
        except OSError as error:
            raise streams.Refusal(
                HTTPStatus.INTERNAL_SERVER_ERROR, f'container not found ("{name}")'
            ) from error
        channels = await streams.upgrade(request.headers, reader, writer, *_stream_counts(wanted))
        await containerexec.run_session(channels, process.pid, request.query.get("command", []), wanted, env)

    async def _attach(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        wanted: dict[str, bool],
        worker: PodWorker,
        container: Container,
    ) -> None:
        """/attach/NS/POD/[UID/]CONTAINER?input=1&output=1&error=1&tty=1: join the running container's
        stdin and output over a stream session."""
        channels = await streams.upgrade(request.headers, reader, writer, *_stream_counts(wanted))
        await attach.run_session(channels, worker, container, wanted)

    async def _port_forward(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        namespace: str,
        pod: str,
        uid: list[str],
    ) -> None:
        """/portForward/NS/POD[/UID]: forward connections to the pod's ports, over SPDY or WebSocket."""
        worker = self._worker(namespace, pod, uid)
        if worker is None:
            raise streams.Refusal(HTTPStatus.NOT_FOUND, "pod does not exist")
        sandbox = worker.sandbox
        if sandbox is None or not worker.is_alive():
            raise streams.Refusal(HTTPStatus.INTERNAL_SERVER_ERROR, f'pod not found ("{pod}_{namespace}")')
        target = portforward.Target(pod, worker.pod.metadata.uid, sandbox.path)
        if streams.is_websocket(request.headers):
            ports = portforward.ports_of(request.query)
            channels = streams.upgrade_websocket(
                request.headers, reader, writer, portforward.WEBSOCKET_PROTOCOLS
            )
            await portforward.serve_websocket(channels, target, ports)
        else:
            streams.upgrade_spdy(request.headers, writer, portforward.PROTOCOL)
            await portforward.SpdyPortForward(streams.SpdySession(reader, writer), target).serve()


async def _reply(writer: asyncio.StreamWriter, content_type: str, body: bytes) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (content_type.encode(), len(body), body)
    )
    await writer.drain()


def _stream_options(query: dict[str, list[str]]) -> dict[str, bool]:
    """stdin, stdout, stderr and tty from the API server's names (input, output, error, tty); stderr is
    dropped with a tty (the kubelet's remotecommand NewOptions)."""
    flag = {key: query.get(key, [""])[0] == "1" for key in ("input", "output", "error", "tty")}
    wanted = {
        "stdin": flag["input"],
        "stdout": flag["output"],
        "stderr": flag["error"] and not flag["tty"],
        "tty": flag["tty"],
    }
    if not (wanted["stdin"] or wanted["stdout"] or wanted["stderr"]):
        raise streams.Refusal(HTTPStatus.BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr")
    return wanted


def _stream_counts(wanted: dict[str, bool]) -> tuple[int, int]:
    """How many channels the client opens (the wanted ones, resize with a tty, and error), and the first
    output channel (a WebSocket session's first, empty, message goes there)."""
    first_output = next(
        (ch for key, ch in (("stdout", streams.STDOUT), ("stderr", streams.STDERR)) if wanted[key]),
        streams.ERROR,
    )
    return sum(wanted.values()) + 1, first_output
