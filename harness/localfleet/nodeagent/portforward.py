"""Port forwarding for the kubelet's API: /portForward/NAMESPACE/POD[/UID], as the kubelet serves it
(k8s.io/kubelet cri-streaming portforward: httpstream.go, websocket.go).

Which way each client arrives (pkg/registry/core/pod/rest/subresources.go PortForwardREST):
- kubectl port-forward (1.36) tunnels SPDY through a WebSocket to the API server (subprotocol
  `SPDY/3.1+portforward.k8s.io`); the API server's TunnelingHandler unwraps it and speaks SPDY/3.1 to
  the kubelet (k8s.io/apiserver pkg/util/proxy/streamtunnel.go), because our Nodes do not declare
  ExtendWebSocketsToKubelet. With KUBECTL_PORT_FORWARD_WEBSOCKETS=false, and for client-go's SPDY
  dialer, SPDY goes through the API server's upgrade-aware proxy as it is. Either way: SPDY here.
- The Python client (kubernetes.stream.portforward) offers `v5.channel.k8s.io, v4.channel.k8s.io`: not a
  tunnelling protocol, so the API server passes the WebSocket through, with the ports as `?port=A,B`;
  the kubelet's WebSocket end chooses v4 (or no subprotocol, for a client that offers none).

SPDY (protocol `portforward.k8s.io`): for each forwarded connection the client opens two streams with
headers `streamtype` (error, data), `port` and `requestID` (pairs without one are matched by stream id,
as the kubelet does for old clients). Once a pair is complete the port is dialled and bytes copied both
ways; the pair ends with FIN on both streams, after a failure written on the error stream. A pair not
completed within STREAMS_TIMEOUT_S is dropped with "timed out waiting for streams".
WebSocket: for the i-th port channel 2i carries data and 2i+1 errors; the first message on each is the
port, 2 bytes little-endian. The session closes once every port's connection has ended.

The port is dialled at localhost inside the pod's network namespace, as the container runtime does
(containerd's PortForward): a thread of its own joins the namespace with setns (which moves only that
thread), connects to 127.0.0.1, else ::1, and ends; the socket stays in the pod's namespace. Dialling the
pod IP from the node would miss servers bound to localhost and would go through the packet rules a
drill may have put on the pod (a deny-all policy), which port forwarding on a real node does not.
When the pod closes its end, what the client still sends has LINGER_S to arrive (containerd waits 1 s);
when the client closes its end first, the pod's side is half-closed and its answer still flows back.
"""

import asyncio
import contextlib
import functools
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from harness.localfleet.nodeagent import podexec, streams

PROTOCOL = "portforward.k8s.io"
WEBSOCKET_PROTOCOLS = (streams.V4, "")
DIAL_TIMEOUT_S = 10.0
LINGER_S = 1.0
STREAMS_TIMEOUT_S = 30.0  # the kubelet's DefaultStreamCreationTimeout
FINISH_TIMEOUT_S = 10.0  # how long a closed WebSocket session waits for its client to hang up
CHUNK = 1 << 16


class DialError(Exception):
    """The pod's port could not be reached."""


@dataclass(frozen=True)
class Target:
    """The pod whose ports are forwarded: its name and UID (for messages) and its network namespace."""

    pod: str
    uid: str
    netns: Path

    def failure(self, port: int, error: DialError) -> str:
        """The error stream's message, worded as the kubelet's."""
        return f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {error}"


def ports_of(query: dict[str, list[str]]) -> list[int]:
    """The WebSocket request's ports (`port`, comma-separated, repeatable), checked as the kubelet's
    NewV4Options checks them; Refusal 400 when they are not right."""
    values = query.get("port", [])
    if not values:
        raise streams.Refusal(HTTPStatus.BAD_REQUEST, 'query parameter "port" is required')
    ports = []
    for value in values:
        if not value:
            raise streams.Refusal(HTTPStatus.BAD_REQUEST, 'query parameter "port" cannot be empty')
        for text in value.split(","):
            if problem := port_problem(text):
                raise streams.Refusal(HTTPStatus.BAD_REQUEST, problem)
            ports.append(int(text))
    return ports


def port_problem(text: str) -> str:
    """Why `text` is not a port, worded as the kubelet words it, or ""."""
    if not text.isdigit() or int(text) > 0xFFFF:
        return f'unable to parse "{text}" as a port'
    if int(text) < 1:
        return f'port "{text}" must be > 0'
    return ""


def _connect_inside(netns: Path, port: int) -> socket.socket:
    """On a thread that ends afterwards: join the namespace, connect to localhost:port."""
    try:
        podexec.join_network(str(netns))
    except OSError as error:
        raise DialError(f"cannot enter the pod's network namespace: {error}") from error
    failures = []
    for family, host, shown in (
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "[::1]"),
    ):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(DIAL_TIMEOUT_S)
        try:
            sock.connect((host, port))
            return sock
        except OSError as error:
            sock.close()
            failures.append(f"dial {shown}:{port}: {(error.strerror or str(error) or 'timed out').lower()}")
    raise DialError(
        f"failed to connect to localhost:{port} inside the pod's network namespace: {'; '.join(failures)}"
    )


async def dial(netns: Path, port: int) -> socket.socket:
    """A TCP connection to localhost:port inside the network namespace (see the module docstring)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def settle(sock: socket.socket | None, error: DialError | None) -> None:
        if done.cancelled():
            if sock is not None:
                sock.close()
        elif error is not None:
            done.set_exception(error)
        else:
            done.set_result(sock)

    def connect() -> None:
        try:
            sock, error = _connect_inside(netns, port), None
        except DialError as failure:
            sock, error = None, failure
        loop.call_soon_threadsafe(settle, sock, error)

    threading.Thread(target=connect, name=f"dial-port-{port}", daemon=True).start()
    return await done


class Forward:
    """One forwarded connection: what the client sends goes to the pod's port, what the pod answers
    goes to `send` (the client's data stream or channel)."""

    def __init__(self, target: Target, port: int, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.target, self.port, self.send = target, port, send
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[bytes] = []  # what the client sent before the pod's port was dialled
        self.client_done = asyncio.Event()

    async def from_client(self, data: bytes, fin: bool) -> None:
        """Data the client sent; `fin`: it sends no more (the pod's side is half-closed)."""
        if self.writer is None:
            self.pending.append(data)
        elif data and not (self.client_done.is_set() or self.writer.is_closing()):
            with contextlib.suppress(OSError):
                self.writer.write(data)
                await self.writer.drain()
        if fin and not self.client_done.is_set():
            self.client_done.set()
            self._half_close()

    async def run(self) -> str:
        """Dial, then copy until the connection ends; the error for the error stream, or ""."""
        try:
            sock = await dial(self.target.netns, self.port)
        except DialError as error:
            return self.target.failure(self.port, error)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"".join(self.pending))
        self.writer, self.pending = writer, []
        if self.client_done.is_set():
            self._half_close()
        try:
            while data := await reader.read(CHUNK):
                await self.send(data)
            await asyncio.wait_for(self.client_done.wait(), LINGER_S)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
        return ""

    def _half_close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.writer.write_eof()


class _Pair:
    """The two streams of one forwarded connection, as they arrive, and its Forward."""

    def __init__(self, session: streams.SpdySession, target: Target, port: int) -> None:
        self.session = session
        self.streams: dict[str, int] = {}  # "data" / "error" -> stream id
        self.complete = asyncio.Event()
        self.forward = Forward(target, port, self.send_data)

    async def send_data(self, data: bytes) -> None:
        await self.session.send(self.streams["data"], data)

    async def error(self, message: str) -> None:
        if "error" in self.streams:
            await self.session.send(self.streams["error"], message.encode())

    async def close(self) -> None:
        """FIN on both streams: the kubelet is done with this connection."""
        for stream_id in self.streams.values():
            await self.session.send(stream_id, b"", fin=True)


def _stream_problem(headers: dict[str, str]) -> str:
    """Why a stream's headers are refused (the kubelet's httpStreamReceived), or ""."""
    port, kind = headers.get("port", ""), headers.get("streamtype", "")
    if not port:
        return '"port" header is required'
    if problem := port_problem(port):
        return problem
    if not kind:
        return '"streamtype" header is required'
    if kind not in ("data", "error"):
        return f'invalid stream type "{kind}"'
    return ""


class SpdyPortForward:
    """The SPDY session: pairs of streams in, one Forward per pair, until the client hangs up."""

    def __init__(self, session: streams.SpdySession, target: Target) -> None:
        self.session, self.target = session, target
        self.pairs: dict[str, _Pair] = {}  # requestID -> pair
        self.tasks: set[asyncio.Task] = set()

    async def serve(self) -> None:
        try:
            while (event := await self.session.receive()) is not None:
                if isinstance(event, streams.Opened):
                    await self._opened(event)
                elif pair := self._data_pair(event.stream_id):
                    await pair.forward.from_client(event.data, event.fin)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _data_pair(self, stream_id: int) -> _Pair | None:
        return next((p for p in self.pairs.values() if p.streams.get("data") == stream_id), None)

    async def _opened(self, event: streams.Opened) -> None:
        if problem := _stream_problem(event.headers):
            print(f"port forward to pod {self.target.pod}: stream refused: {problem}", flush=True)
            self.session.reset(event.stream_id)
            return
        self.session.accept(event.stream_id)
        kind, port = event.headers["streamtype"], int(event.headers["port"])
        request = event.headers.get("requestid") or str(event.stream_id - (2 if kind == "data" else 0))
        pair = self.pairs.get(request)
        if pair is None:
            pair = self.pairs[request] = _Pair(self.session, self.target, port)
            self._start(self._expire(request, pair))
        if kind in pair.streams:
            await pair.error(f"error processing stream for request {request}: {kind} stream already assigned")
            return
        pair.streams[kind] = event.stream_id
        if len(pair.streams) == 2:
            pair.complete.set()
            self._start(self._forward(request, pair))

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _forward(self, request: str, pair: _Pair) -> None:
        """Run the pair's Forward, report its failure, then FIN both streams."""
        if message := await pair.forward.run():
            await pair.error(message)
        await pair.close()
        self.pairs.pop(request, None)

    async def _expire(self, request: str, pair: _Pair) -> None:
        """Drop a pair whose second stream does not come in time (the kubelet's monitorStreamPair)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pair.complete.wait(), STREAMS_TIMEOUT_S)
            return
        await pair.error(f"(request={request}) timed out waiting for streams")
        await pair.close()
        self.pairs.pop(request, None)


async def serve_websocket(channels: streams.WebSocketChannels, target: Target, ports: list[int]) -> None:
    """Forward one connection per port over the WebSocket's channels; close once all have ended."""
    forwards = []
    for index, port in enumerate(ports):
        for channel in (2 * index, 2 * index + 1):
            await channels.send(channel, struct.pack("<H", port))
        forwards.append(Forward(target, port, functools.partial(channels.send, 2 * index)))

    async def forward(index: int) -> None:
        if message := await forwards[index].run():
            await channels.send(2 * index + 1, message.encode())

    async def inbound() -> None:
        while (event := await channels.receive()) is not None:
            channel, data, ended = event
            if channel % 2 == 0 and channel // 2 < len(forwards):
                await forwards[channel // 2].from_client(data, ended)

    work = asyncio.gather(*(forward(index) for index in range(len(forwards))))
    client = asyncio.ensure_future(inbound())
    try:
        await asyncio.wait([work, client], return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            with contextlib.suppress(OSError):
                await channels.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client, FINISH_TIMEOUT_S)
    finally:
        work.cancel()
        client.cancel()
        await asyncio.gather(work, client, return_exceptions=True)
