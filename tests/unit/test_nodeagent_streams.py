"""The node agent's stream framing and port forwarding, driven by hand-made client frames: the SPDY
session's events and answers, port forwarding over SPDY and WebSocket to a local server (dialled from
inside this process's own network namespace), its refusals, and a stdinOnce pipe."""

import asyncio
import os
import socket
import struct
import zlib
from pathlib import Path

import pytest

from harness.localfleet.nodeagent import portforward, streams
from harness.localfleet.nodeagent.runtime import StdinPipe

OWN_NETNS = Path("/proc/self/ns/net")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="joining a network namespace needs root")


class Wire:
    """The server's side of the connection as the client sees it: what was written, frame by frame."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.written = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.data += data
        self.written.set()

    async def drain(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def spdy_frames(self) -> list[tuple[bool, int, int, bytes]]:
        """(control?, type or stream id, flags, payload) of every frame written."""
        frames, offset = [], 0
        while offset + 8 <= len(self.data):
            first, flags_length = struct.unpack_from(">II", self.data, offset)
            size = flags_length & 0xFFFFFF
            payload = bytes(self.data[offset + 8 : offset + 8 + size])
            control = bool(first & 0x80000000)
            frames.append((control, first & (0xFFFF if control else 0x7FFFFFFF), flags_length >> 24, payload))
            offset += 8 + size
        return frames

    def ws_messages(self) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every WebSocket frame written (the server does not mask)."""
        messages, offset = [], 0
        while offset + 2 <= len(self.data):
            first, size = self.data[offset], self.data[offset + 1] & 0x7F
            offset += 2
            if size == 126:
                (size,) = struct.unpack_from(">H", self.data, offset)
                offset += 2
            messages.append((first & 0x0F, bytes(self.data[offset : offset + size])))
            offset += size
        return messages

    async def until(self, done, deadline_s: float = 10.0) -> None:
        """Wait (with a deadline) until done(self) holds."""

        async def poll() -> None:
            while not done(self):
                self.written.clear()
                await self.written.wait()

        await asyncio.wait_for(poll(), deadline_s)


class Client:
    """A SPDY/3.1 client's frames, headers compressed with the SPDY/3 dictionary."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(zdict=streams.SPDY_DICTIONARY)

    def syn_stream(self, stream_id: int, headers: dict[str, str]) -> bytes:
        block = struct.pack(">I", len(headers))
        for name, value in headers.items():
            block += (
                struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(value)) + value.encode()
            )
        packed = self.deflate.compress(block) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        payload = struct.pack(">IIH", stream_id, 0, 0) + packed
        return struct.pack(">HHI", 0x8003, streams.SYN_STREAM, len(payload)) + payload

    @staticmethod
    def data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", stream_id, (streams.FIN_FLAG_DATA if fin else 0) | len(data)) + data

    @staticmethod
    def control(kind: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8003, kind, len(payload)) + payload


def ws_message(data: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked binary WebSocket frame, as a client sends."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return struct.pack(">BB", 0x82, 0x80 | len(data)) + mask + masked


def test_spdy_session_events_and_answers() -> None:
    async def scenario() -> None:
        reader, wire, client = asyncio.StreamReader(), Wire(), Client()
        session = streams.SpdySession(reader, wire)
        reader.feed_data(client.syn_stream(1, {"streamtype": "error", "port": "80", "requestID": "0"}))
        reader.feed_data(client.data(1, b"hi", fin=True))
        reader.feed_data(client.control(streams.PING, struct.pack(">I", 7)))
        reader.feed_data(client.control(streams.RST_STREAM, struct.pack(">II", 3, streams.CANCEL)))
        reader.feed_eof()
        opened = await session.receive()
        assert opened == streams.Opened(1, {"streamtype": "error", "port": "80", "requestid": "0"})
        session.accept(1)
        assert await session.receive() == streams.Data(1, b"hi", True)
        assert await session.receive() == streams.Data(3, b"", True)  # RST_STREAM: no more from the client
        assert await session.receive() is None
        reply, ping = wire.spdy_frames()
        assert reply[:2] == (True, streams.SYN_REPLY) and struct.unpack_from(">I", reply[3])[0] == 1
        assert ping == (True, streams.PING, 0, struct.pack(">I", 7))  # the client's ping, echoed

    asyncio.run(scenario())


def test_websocket_port_list() -> None:
    assert portforward.ports_of({"port": ["80,8080", "9000"]}) == [80, 8080, 9000]
    for query, message in (
        ({}, 'query parameter "port" is required'),
        ({"port": [""]}, 'query parameter "port" cannot be empty'),
        ({"port": ["http"]}, 'unable to parse "http" as a port'),
        ({"port": ["70000"]}, 'unable to parse "70000" as a port'),
        ({"port": ["0"]}, 'port "0" must be > 0'),
    ):
        with pytest.raises(streams.Refusal) as refused:
            portforward.ports_of(query)
        assert (refused.value.code, refused.value.message) == (400, message)


async def _uppercase_server() -> tuple[asyncio.Server, int]:
    """A server on 127.0.0.1 that answers one line (or what came before EOF) in capitals, then closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _refused_port() -> tuple[socket.socket, int]:
    """A port bound on 127.0.0.1 that nobody listens on (connecting to it is refused)."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    return held, held.getsockname()[1]


@needs_root
def test_spdy_port_forward_copies_both_ways_then_ends_the_pair() -> None:
    async def scenario() -> None:
        server, port = await _uppercase_server()
        reader, wire, client = asyncio.StreamReader(), Wire(), Client()
        target = portforward.Target("web", "u1", OWN_NETNS)
        serving = asyncio.ensure_future(
            portforward.SpdyPortForward(streams.SpdySession(reader, wire), target).serve()
        )
        headers = {"port": str(port), "requestID": "0"}
        reader.feed_data(client.syn_stream(1, {"streamtype": "error", **headers}))
        reader.feed_data(client.syn_stream(3, {"streamtype": "data", **headers}))
        reader.feed_data(client.data(3, b"ping\n", fin=True))
        await wire.until(lambda w: (False, 1, 1, b"") in w.spdy_frames())  # FIN on the error stream
        frames = wire.spdy_frames()
        assert [f[:2] for f in frames[:2]] == [(True, streams.SYN_REPLY)] * 2
        assert (False, 3, 0, b"PING\n") in frames and (False, 3, 1, b"") in frames
        assert not [f for f in frames if f[:2] == (False, 1) and f[3]]  # nothing on the error stream
        reader.feed_eof()
        await asyncio.wait_for(serving, 10)
        server.close()

    asyncio.run(scenario())


@needs_root
def test_spdy_port_forward_reports_a_refused_port_on_the_error_stream() -> None:
    async def scenario() -> None:
        held, port = _refused_port()
        reader, wire, client = asyncio.StreamReader(), Wire(), Client()
        target = portforward.Target("web", "u1", OWN_NETNS)
        serving = asyncio.ensure_future(
            portforward.SpdyPortForward(streams.SpdySession(reader, wire), target).serve()
        )
        reader.feed_data(client.syn_stream(1, {"streamtype": "error", "port": str(port), "requestID": "7"}))
        reader.feed_data(client.syn_stream(3, {"streamtype": "data", "port": str(port), "requestID": "7"}))
        reader.feed_data(client.syn_stream(5, {"streamtype": "data"}))  # no port: refused
        await wire.until(lambda w: (False, 1, 1, b"") in w.spdy_frames())
        frames = wire.spdy_frames()
        [error] = [f[3].decode() for f in frames if f[:3] == (False, 1, 0)]
        assert error.startswith(
            f"error forwarding port {port} to pod web, uid u1: failed to connect to localhost:"
        )
        assert f"dial 127.0.0.1:{port}: connection refused" in error
        assert (True, streams.RST_STREAM, 0, struct.pack(">II", 5, streams.CANCEL)) in frames
        reader.feed_eof()
        await asyncio.wait_for(serving, 10)
        held.close()

    asyncio.run(scenario())


@needs_root
def test_websocket_port_forward_announces_ports_then_forwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(portforward, "LINGER_S", 0.01)

    async def scenario() -> None:
        server, port = await _uppercase_server()
        held, refused = _refused_port()
        reader, wire = asyncio.StreamReader(), Wire()
        channels = streams.WebSocketChannels(reader, wire, streams.V4)
        target = portforward.Target("web", "u1", OWN_NETNS)
        serving = asyncio.ensure_future(portforward.serve_websocket(channels, target, [port, refused]))
        reader.feed_data(ws_message(b"\x00ping\n"))
        await wire.until(lambda w: any(op == streams.OP_CLOSE for op, _ in w.ws_messages()))
        messages = [m for op, m in wire.ws_messages() if op == streams.OP_BINARY]
        announced = [
            struct.pack("<BH", ch, p) for ch, p in ((0, port), (1, port), (2, refused), (3, refused))
        ]
        assert messages[:4] == announced  # each channel's first message: its port, little-endian
        assert b"\x00PING\n" in messages
        [error] = [m[1:].decode() for m in messages[4:] if m[0] == 3]
        assert f"error forwarding port {refused} to pod web" in error and "connection refused" in error
        reader.feed_eof()
        await asyncio.wait_for(serving, 10)
        server.close()
        held.close()

    asyncio.run(scenario())


def test_port_forward_websocket_subprotocols() -> None:
    """v4 is chosen from what the Python client offers; a client that offers none is served without one;
    v5 alone is refused (the kubelet's port forwarding has no v5)."""
    key = {"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}

    async def upgrade(offered: str | None, wire: Wire) -> streams.WebSocketChannels:
        headers = key | ({"sec-websocket-protocol": offered} if offered else {})
        return streams.upgrade_websocket(
            headers, asyncio.StreamReader(), wire, portforward.WEBSOCKET_PROTOCOLS
        )

    for offered, chosen in ((f"{streams.V5}, {streams.V4}", streams.V4), (None, "")):
        wire = Wire()
        channels = asyncio.run(upgrade(offered, wire))
        head = wire.data.decode()
        assert (
            head.startswith("HTTP/1.1 101 ") and "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        )
        assert (f"Sec-WebSocket-Protocol: {chosen}" in head) == bool(chosen) and not channels.half_close
    with pytest.raises(streams.Refusal) as refused:
        asyncio.run(upgrade(streams.V5, Wire()))
    assert refused.value.code == 400 and "supports ['v4.channel.k8s.io']" in refused.value.message


def test_stdin_pipe_once_closes_for_good() -> None:
    pipe = StdinPipe(once=True)
    try:
        copy = pipe.dup()
        os.write(copy, b"x")
        os.close(copy)
        pipe.close()
        assert pipe.dup() is None
        assert os.read(pipe.child_end, 8) == b"x" and os.read(pipe.child_end, 8) == b""  # EOF
    finally:
        os.close(pipe.child_end)
