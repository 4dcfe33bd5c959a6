"""The server ends of the two transports of the kubelet's streams: remote commands (exec, attach) and
port forwarding (portforward.py).

Remote commands carry the same channels on both: stdin and resize in, stdout, stderr and error out.

- SPDY/3.1 with the stream protocol `v4.channel.k8s.io`. The API server speaks it to the kubelet
  when a client uses SPDY (client-go's SPDY executor, as Velero's hooks do). It also speaks it when
  a client uses WebSocket v5 (kubectl, the Python client) and the Node does not declare
  ExtendWebSocketsToKubelet: its StreamTranslatorHandler then talks SPDY to the kubelet
  (k8s.io/apiserver pkg/util/proxy/streamtranslator.go; pkg/registry/core/pod/rest/subresources.go).
  The client opens one stream per channel, and a `streamtype` header names its channel
  (SpdyChannels, over the stream-level SpdySession that port forwarding uses directly).
  The peer is moby/spdystream: there is no flow control, ids are odd (client) or even (server),
  and headers go through one zlib stream per direction that is primed with the SPDY/3 dictionary.
- WebSocket (RFC 6455) with `v4.channel.k8s.io` or `v5.channel.k8s.io`. The API server passes these
  through to the kubelet: v4 always, v5 when the Node declares ExtendWebSocketsToKubelet. Every
  message starts with the channel byte. In v5, the message [255, channel] half-closes a channel
  (k8s.io/streaming pkg/httpstream/wsstream/conn.go).

Ending a session: write the Status to the error channel, then close the client's read side (SPDY:
FIN on every output stream; WebSocket: a close frame). The caller then waits for the client to hang
up, so no output still in flight is lost (k8s.io/cri-streaming remotecommand/httpstream.go `finish`).
"""

import asyncio
import base64
import hashlib
import struct
import zlib
from dataclasses import dataclass
from http import HTTPStatus

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
CHANNEL_OF = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}
V4, V5 = "v4.channel.k8s.io", "v5.channel.k8s.io"
SPDY_PROTOCOL = V4
WEBSOCKET_PROTOCOLS = (V5, V4)
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

PROTOCOL_ERRORS = (EOFError, OSError, ValueError, struct.error, zlib.error)
"""What a broken or departed peer raises while a session is read (EOFError covers IncompleteReadError;
OSError covers TimeoutError)."""
STREAMS_TIMEOUT_S = 30.0  # the kubelet's streaming connection: the client opens its streams in time

Event = tuple[int, bytes, bool]
"""(channel, data, ended): data the client sent on a channel, and whether it closed that channel."""

_WORDS = (  # separated by "|"
    "options|head|post|put|delete|trace|accept|accept-charset|accept-encoding|accept-language|"
    "accept-ranges|age|allow|authorization|cache-control|connection|content-base|content-encoding|"
    "content-language|content-length|content-location|content-md5|content-range|content-type|date|"
    "etag|expect|expires|from|host|if-match|if-modified-since|if-none-match|if-range|"
    "if-unmodified-since|last-modified|location|max-forwards|pragma|proxy-authenticate|"
    "proxy-authorization|range|referer|retry-after|server|te|trailer|transfer-encoding|upgrade|"
    "user-agent|vary|via|warning|www-authenticate|method|get|status|200 OK|version|HTTP/1.1|url|"
    "public|set-cookie|keep-alive|origin"
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
SPDY_DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _WORDS.split("|")) + _TAIL.encode()
"""The SPDY/3 header dictionary: length-prefixed common words, then a run of common text."""

SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY = 1, 2, 3, 6, 7
FLAG_FIN = 0x01
FIN_FLAG_DATA = FLAG_FIN << 24
CANCEL = 5
MAX_FRAME = 1 << 24


class Refusal(Exception):
    """An answer given before any response has started: HTTP status, plain-text body, headers."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}


def respond(writer: asyncio.StreamWriter, code: int, body: str = "", headers: dict | None = None) -> None:
    """Write a whole HTTP/1.1 response head (and a plain-text body unless switching protocols)."""
    lines = [f"HTTP/1.1 {code} {HTTPStatus(code).phrase}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if code != HTTPStatus.SWITCHING_PROTOCOLS:
        lines += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body.encode())}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n" + body).encode())


def _header_block(block: bytes) -> dict[str, str]:
    """A decompressed SPDY/3 name/value block: count, then (length, name, length, value) pairs."""
    headers, offset = {}, 4
    for _ in range(struct.unpack_from(">I", block)[0]):
        pair = []
        for _ in range(2):
            (size,) = struct.unpack_from(">I", block, offset)
            pair.append(block[offset + 4 : offset + 4 + size].decode())
            offset += 4 + size
        headers[pair[0].lower()] = pair[1]
    return headers


@dataclass(frozen=True)
class Opened:
    """The client opened a stream, with these headers (names lower-case); answer with accept or reset."""

    stream_id: int
    headers: dict[str, str]


@dataclass(frozen=True)
class Data:
    """Data the client sent on a stream; `fin`: it will send no more there (FIN, or RST_STREAM)."""

    stream_id: int
    data: bytes
    fin: bool


class SpdySession:
    """The server end of a SPDY/3.1 session whose streams the client opens."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)

    async def receive(self) -> Opened | Data | None:
        """The next stream opened or data sent; None once the client has gone."""
        try:
            while True:
                if event := self._handle(*await self._frame()):
                    return event
        except PROTOCOL_ERRORS:
            return None

    def accept(self, stream_id: int) -> None:
        """SYN_REPLY: the stream is open both ways."""
        block = self.deflate.compress(struct.pack(">I", 0)) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self._control(SYN_REPLY, struct.pack(">I", stream_id) + block)

    def reset(self, stream_id: int) -> None:
        """RST_STREAM (CANCEL): refuse a stream, or stop the client sending on it."""
        self._control(RST_STREAM, struct.pack(">II", stream_id, CANCEL))

    async def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        if not self.writer.is_closing():
            head = struct.pack(">II", stream_id, (FIN_FLAG_DATA if fin else 0) | len(data))
            self.writer.write(head + data)
            await self.writer.drain()

    async def _frame(self) -> tuple[bool, int, int, bytes]:
        """(control?, frame type or stream id, flags, payload) of the next frame."""
        first, flags_length = struct.unpack(">II", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(flags_length & (MAX_FRAME - 1))
        control = bool(first & 0x80000000)
        return control, first & (0xFFFF if control else 0x7FFFFFFF), flags_length >> 24, payload

    def _handle(self, control: bool, kind: int, flags: int, payload: bytes) -> Opened | Data | None:
        if not control:
            return Data(kind, payload, bool(flags & FLAG_FIN))
        if kind == SYN_STREAM:
            stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            return Opened(stream_id, _header_block(self.inflate.decompress(payload[10:])))
        if kind == RST_STREAM:
            return Data(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF, b"", True)
        if kind == PING and struct.unpack(">I", payload)[0] % 2 == 1:  # the client's: echo it
            self._control(PING, payload)
        elif kind == GOAWAY:
            raise EOFError
        return None

    def _control(self, kind: int, payload: bytes) -> None:
        self.writer.write(struct.pack(">HHI", 0x8003, kind, len(payload)) + payload)


class SpdyChannels:
    """Remote-command channels over a SPDY session: one stream per channel, named by `streamtype`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.session = SpdySession(reader, writer)
        self.streams: dict[int, int] = {}  # channel -> stream id

    async def open(self, expected: int) -> None:
        """Accept the client's streams until all `expected` channels exist."""
        while len(self.streams) < expected:
            event = await self.session.receive()
            if event is None:
                raise EOFError("the client left before opening its streams")
            self._opened(event)

    async def receive(self) -> Event | None:
        """The next thing the client sent on a channel; None once it has gone."""
        while (event := await self.session.receive()) is not None:
            if isinstance(event, Opened):
                self._opened(event)
                continue
            channel = next((c for c, sid in self.streams.items() if sid == event.stream_id), None)
            if channel is not None:
                return channel, event.data, event.fin
        return None

    async def send(self, channel: int, data: bytes, fin: bool = False) -> None:
        if channel in self.streams:
            await self.session.send(self.streams[channel], data, fin)

    async def finish(self, status: bytes) -> None:
        """Stop input, write the Status, then FIN every output stream (the client reads up to it)."""
        for channel in (STDIN, RESIZE):
            if channel in self.streams:
                self.session.reset(self.streams[channel])
        await self.send(ERROR, status)
        for channel in (STDOUT, STDERR, ERROR):
            await self.send(channel, b"", fin=True)

    def _opened(self, event: Opened | Data) -> None:
        """Accept every stream the client opens; note the channel its `streamtype` names."""
        if isinstance(event, Opened):
            if event.headers.get("streamtype") in CHANNEL_OF:
                self.streams[CHANNEL_OF[event.headers["streamtype"]]] = event.stream_id
            self.session.accept(event.stream_id)


OP_CONTINUATION, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x2, 0x8, 0x9, 0xA
CLOSE_SIGNAL = 255


def websocket_accept(key: str) -> str:
    """The Sec-WebSocket-Accept answer to a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        head = struct.pack(">BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _unmask(data: bytes, mask: bytes) -> bytes:
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


class WebSocketChannels:
    """The server end of a channel.k8s.io WebSocket session (binary: the channel byte, then data)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str) -> None:
        self.reader, self.writer = reader, writer
        self.half_close = protocol == V5
        self.opcode, self.partial = OP_BINARY, b""

    async def receive(self) -> Event | None:
        """The next thing the client sent on a channel; None once it has gone."""
        try:
            while True:
                opcode, message = await self._message()
                if opcode == OP_CLOSE:
                    return None
                if opcode == OP_PING:
                    self.writer.write(_ws_frame(OP_PONG, message))
                elif opcode != OP_PONG and message:
                    if self.half_close and message[0] == CLOSE_SIGNAL and len(message) == 2:
                        return message[1], b"", True
                    return message[0], message[1:], False
        except PROTOCOL_ERRORS:
            return None

    async def send(self, channel: int, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(_ws_frame(OP_BINARY, bytes([channel]) + data))
            await self.writer.drain()

    async def finish(self, status: bytes) -> None:
        """Write the Status on the error channel, then a normal close frame."""
        await self.send(ERROR, status)
        await self.close()

    async def close(self) -> None:
        """A normal close frame: the session is over."""
        if not self.writer.is_closing():
            self.writer.write(_ws_frame(OP_CLOSE, struct.pack(">H", 1000)))
            await self.writer.drain()

    async def _message(self) -> tuple[int, bytes]:
        """The next whole message (fragments joined); control frames come as they arrive."""
        while True:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size >= 126:
                (size,) = struct.unpack(
                    ">H" if size == 126 else ">Q", await self.reader.readexactly(2 if size == 126 else 8)
                )
            mask = await self.reader.readexactly(4) if second & 0x80 else b""
            payload = await self.reader.readexactly(size)
            payload = _unmask(payload, mask) if mask else payload
            opcode = first & 0x0F
            if opcode >= OP_CLOSE:
                return opcode, payload
            if opcode != OP_CONTINUATION:
                self.opcode, self.partial = opcode, b""
            self.partial += payload
            if first & 0x80:
                return self.opcode, self.partial


Channels = SpdyChannels | WebSocketChannels


def upgrade_websocket(
    headers: dict[str, str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    protocols: tuple[str, ...],
) -> WebSocketChannels:
    """Switch to WebSocket with the first offered subprotocol that is in `protocols` ("" in it: a client
    that offers none is served too); raise Refusal before switching."""
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    protocol = next((p for p in offered if p in protocols), None)
    if protocol is None or "sec-websocket-key" not in headers:
        supported = [p for p in protocols if p]
        raise Refusal(
            HTTPStatus.BAD_REQUEST,
            f"requested protocol(s) are not supported: {offered}; supports {supported}",
        )
    answer = {"Upgrade": "websocket", "Connection": "Upgrade"}
    answer |= {"Sec-WebSocket-Protocol": protocol} if protocol else {}
    answer["Sec-WebSocket-Accept"] = websocket_accept(headers["sec-websocket-key"])
    respond(writer, HTTPStatus.SWITCHING_PROTOCOLS, headers=answer)
    return WebSocketChannels(reader, writer, protocol)


def upgrade_spdy(headers: dict[str, str], writer: asyncio.StreamWriter, protocol: str) -> None:
    """Switch to SPDY/3.1 when the client offers `protocol` (k8s.io/streaming httpstream.Handshake);
    raise Refusal before switching."""
    offered = [p.strip() for p in headers.get("x-stream-protocol-version", "").split(",") if p.strip()]
    if not offered:
        raise Refusal(HTTPStatus.BAD_REQUEST, "unable to upgrade: header X-Stream-Protocol-Version is empty")
    if protocol not in offered:
        raise Refusal(
            HTTPStatus.FORBIDDEN,
            f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
            f"server accepts [{protocol}]",
            {"X-Accepted-Stream-Protocol-Versions": protocol},
        )
    if "spdy/3.1" not in headers.get("upgrade", "").lower():
        raise Refusal(HTTPStatus.BAD_REQUEST, "unable to upgrade: missing upgrade headers in request")
    answer = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": protocol}
    respond(writer, HTTPStatus.SWITCHING_PROTOCOLS, headers=answer)


def is_websocket(headers: dict[str, str]) -> bool:
    return headers.get("upgrade", "").lower() == "websocket"


async def upgrade(
    headers: dict[str, str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    expected: int,
    first_output: int,
) -> Channels:
    """A remote-command session: WebSocket when asked, else SPDY/3.1, returned once the session
    carries its `expected` channels; raise Refusal before switching."""
    if is_websocket(headers):
        channels = upgrade_websocket(headers, reader, writer, WEBSOCKET_PROTOCOLS)
        await channels.send(first_output, b"")  # an empty message tells the client the session is up
        return channels
    upgrade_spdy(headers, writer, SPDY_PROTOCOL)
    spdy = SpdyChannels(reader, writer)
    await asyncio.wait_for(spdy.open(expected), STREAMS_TIMEOUT_S)
    return spdy
