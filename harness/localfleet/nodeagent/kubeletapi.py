"""The kubelet's HTTP API on the node's InternalIP, port 10250: container logs, exec and the Summary API.

Only the API server calls it: pods/log, pods/exec and nodes/proxy proxy here
(--kubelet-preferred-address-types).
Authentication: TLS with a client certificate signed by the fleet CA; without one the answer is 401,
and a certificate from another CA fails the handshake.
Authorization: the kubelet would send the API server a SubjectAccessReview for nodes/stats (/stats/*)
or nodes/proxy (the rest; webhook mode, pkg/kubelet/server/auth.go). Here the certificate's groups must
include system:masters instead. That gives the same answer for every identity the fleet issues: the API
server's kubelet client is in system:masters, and the node and viewer identities have neither
subresource. It also needs no round trip to an API server that a drill may have just taken away.
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

from harness.localfleet.nodeagent import containerexec, containerlogs, streams
from harness.localfleet.nodeagent.pods import PodWorker
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
    ) -> None:
        self.workers, self.stats, self.address = workers, stats, address
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.load_verify_locations(client_ca)
        self.context.verify_mode = ssl.CERT_OPTIONAL
        self.clock = containerlogs.LogClock()

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
            self._authorize(writer, request)
            match request.parts:
                case ["containerLogs", namespace, pod, container] if request.method == "GET":
                    await self._logs(request, reader, writer, namespace, pod, container)
                case ["exec", namespace, pod, *_, container] if len(request.parts) in (4, 5):
                    await self._exec(request, reader, writer, namespace, pod, container)
                case ["stats", "summary"] if request.method == "GET":
                    await self._summary(writer)
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

    def _authorize(self, writer: asyncio.StreamWriter, request: Request) -> None:
        cert = writer.get_extra_info("peercert")
        if not cert:
            raise streams.Refusal(HTTPStatus.UNAUTHORIZED, "Unauthorized")
        subject = [pair for rdn in cert["subject"] for pair in rdn]
        if ("organizationName", "system:masters") not in subject:
            user = next((value for name, value in subject if name == "commonName"), "")
            verb = VERBS.get(request.method, request.method.lower())
            subresource = "stats" if request.parts[0] == "stats" else "proxy"
            raise streams.Refusal(
                HTTPStatus.FORBIDDEN,
                f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{subresource}])\n",
            )

    def _worker(self, namespace: str, name: str) -> PodWorker | None:
        """The pod's worker (the live one if the name was reused)."""
        found = [
            w
            for w in list(self.workers.values())
            if (w.pod.metadata.namespace, w.pod.metadata.name) == (namespace, name)
        ]
        return next((w for w in found if w.is_alive()), found[0] if found else None)

    async def _summary(self, writer: asyncio.StreamWriter) -> None:
        """GET /stats/summary: the node's and its pods' CPU and memory, read now."""
        body = json.dumps(self.stats.summary(list(self.workers.values())), separators=(",", ":")).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()

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
        namespace: str,
        pod: str,
        name: str,
    ) -> None:
        """/exec/NS/POD/[UID/]CONTAINER?command=..&input=1&output=1&error=1&tty=1 (the API server's
        names for stdin, stdout, stderr, tty): run a command in the container over a stream session."""
        flag = {key: request.query.get(key, [""])[0] == "1" for key in ("input", "output", "error", "tty")}
        wanted = {
            "stdin": flag["input"],
            "stdout": flag["output"],
            "stderr": flag["error"] and not flag["tty"],
            "tty": flag["tty"],
        }
        if not (wanted["stdin"] or wanted["stdout"] or wanted["stderr"]):
            raise streams.Refusal(
                HTTPStatus.BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr"
            )
        worker = self._worker(namespace, pod)
        if worker is None:
            raise streams.Refusal(HTTPStatus.NOT_FOUND, "pod does not exist")
        process = next((c.process for c in worker.containers if c.spec.name == name and c.process), None)
        try:
            if process is None:
                raise ProcessLookupError(name)
            env = containerexec.container_env(process.pid)
        except OSError as error:
            raise streams.Refusal(
                HTTPStatus.INTERNAL_SERVER_ERROR, f'container not found ("{name}")'
            ) from error
        first_output = next(
            (ch for key, ch in (("stdout", streams.STDOUT), ("stderr", streams.STDERR)) if wanted[key]),
            streams.ERROR,
        )
        channels = await streams.upgrade(
            request.headers, reader, writer, sum(wanted.values()) + 1, first_output
        )
        await containerexec.run_session(channels, process.pid, request.query.get("command", []), wanted, env)
