"""Continuous HTTP probes on a fixed schedule: one ProbeSample per request (ARCHITECTURE.md, flow step 4).

Each target has a slot every 1/rate_hz seconds on a fixed grid (targets staggered across the interval). At
each slot a GET goes out whatever earlier requests are doing: up to max_in_flight run at once per target. A
slot is missed, and recorded as a MissedSlot, when max_in_flight requests are outstanding ("busy") or when
the prober woke after the next slot was already due ("late": starved of CPU); the grid never drifts.

One asyncio loop in one background thread drives every target with a small HTTP/1.1 client written on
asyncio protocols (callbacks, no task per request): 1000 requests/s cost about 15% of one core
(bench/probe_overhead.py), where bare aiohttp requests alone cost 22-32%. Connections are kept alive, one
request at a time each; a connection that failed, timed out, was closed by the server or is older than
max_conn_age_s is never reused, so a restart or failover shows in the samples instead of hiding behind a
dead pooled socket (and a DNS or route change shows within max_conn_age_s).

A probe succeeds only when the app answered as its contract says: a status among the accepted ones
(default 2xx; 5xx never) and, when an identity is declared (a response header, or a top-level field of a
JSON body), that identity; its value is kept as the sample's served_by. Any other answer is a failed sample
that keeps its status. When probing stops, the probes in flight are awaited up to their timeout; any still
unanswered are recorded as failed, never dropped. A target whose last DOWN_AT_STOP probes all went
unanswered (a lost endpoint, whose probes in flight could only time out) is not awaited: its probes in
flight are recorded as failed at once.

A failed sample's error reads "<kind>: <detail>", kind one of: timeout, refused, reset, closed (the
connection ended before a complete response), dns, tls, protocol (a malformed response), network, status
(a status the app does not accept), identity (an answer without the declared identity: not the app),
stopped (still in flight when probing stopped).

Every sample keeps the address it went to (connected or not: a failed connect to a lost cluster's address
keeps that address; a host name the system resolves is known only once connected). A target given a
resolver (resolvers: target -> ADDR[:PORT] of a DNS server) has its host name resolved through that server
for each new connection, with the probe's own deadline, as a client behind that resolver would
(harness.dnswatch: DNS-based failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import resource
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from itertools import takewhile
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from harness.background import Background
from harness.dnswatch import ask
from harness.errors import ConfigError, FleetDrillError
from harness.measure import availability, probe_failed
from harness.samples import MissedSlot, ProbeSample

if TYPE_CHECKING:  # the credential only: a probe process imports no kubernetes client
    from harness.auth import RequestAuth

log = logging.getLogger(__name__)

PROBE_NICE = -10
"""The probing thread's scheduling priority (nice), where the harness may raise it (root or CAP_SYS_NICE).
On a machine that runs the fleet too (the local fleet, a busy CI runner) the instrument must send on
schedule whatever the system under test costs; it takes little CPU itself. Where it may not, it probes at
the harness's priority, and the coverage check still tells slots sent late."""

_MAX_RESPONSE = 1 << 20
_CLOSED = "closed: the connection ended before a complete response"
_STOPPED = "stopped: still in flight when probing stopped"
DOWN_AT_STOP = 5
"""A target whose last this many probes went unanswered is not awaited at stop (module docstring)."""
STATUS_SPEC = 'a status code from 200 to 499 or a class "2xx", "3xx" or "4xx"'
_KINDS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ConnectionRefusedError, "refused"),
    ((ConnectionResetError, ConnectionAbortedError, BrokenPipeError), "reset"),
    (socket.gaierror, "dns"),
    (ssl.SSLError, "tls"),
    (TimeoutError, "timeout"),
)


def status_codes(spec: object) -> range:
    """The statuses one accepted-status spec stands for: a code (200-499) or a class ("2xx", "3xx", "4xx").

    5xx is never accepted (measure.probe_failed fails it whatever an app says); ValueError otherwise.
    """
    if isinstance(spec, str) and len(spec) == 3 and spec[0] in "234" and spec[1:] == "xx":
        return range(int(spec[0]) * 100, int(spec[0]) * 100 + 100)
    if isinstance(spec, int) and not isinstance(spec, bool) and 200 <= spec <= 499:
        return range(spec, spec + 1)
    raise ValueError(f"expected {STATUS_SPEC}, got {spec!r}")


@dataclass(frozen=True)
class TargetStats:
    """Live counters of one target; failed counts the failed probes (measure.probe_failed)."""

    target: str
    sent: int
    recorded: int
    failed: int
    missed: int
    in_flight: int


@dataclass(frozen=True)
class _Endpoint:
    host: str
    port: int
    tls: bool
    head: bytes
    """The request without its credentials' headers and the blank line that ends it."""

    @classmethod
    def parse(cls, name: str, url: str) -> _Endpoint:
        parts = urlsplit(url)
        try:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http:// or https:// URL with a host")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.netloc.rpartition("@")[2]
            head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fleetdrill-probe\r\nAccept: */*\r\n"
            return cls(parts.hostname, port, parts.scheme == "https", head.encode("ascii"))
        except ValueError as exc:
            raise ConfigError(f"probe target {name!r}: bad URL {url!r}: {exc}") from None


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    keep_alive: bool
    body: bytes


def _parse_response(buf: bytearray, eof: bool) -> _Response | None:
    """The response at the start of buf, None while incomplete; ValueError when malformed."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = buf[:head_end].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    status, headers = int(rest[:3]), {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    start = head_end + 4
    if status < 200:  # interim (100 Continue, 103 Early Hints): the final response follows
        del buf[:start]
        return _parse_response(buf, eof)
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    body: bytes | None = None
    if status in (204, 304):
        end: int | None = start
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        end, body = _chunked(buf, start)
    elif "content-length" in headers:
        if (length := int(headers["content-length"])) < 0:
            raise ValueError(f"negative content-length {length}")
        end = start + length
    elif eof:  # no framing: the body runs to the end of the connection
        end, keep_alive = len(buf), False
    else:
        return None
    if end is None or len(buf) < end:
        return None
    body = bytes(buf[start:end]) if body is None else body
    return _Response(status, headers, keep_alive and len(buf) == end, body)


def _chunked(buf: bytearray, pos: int) -> tuple[int | None, bytes]:
    """Where a chunked body starting at pos ends (after its trailers, None while incomplete), and its data."""
    data = bytearray()
    while (eol := buf.find(b"\r\n", pos)) >= 0:
        size = int(buf[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            while (eol := buf.find(b"\r\n", pos)) >= 0:
                if eol == pos:
                    return eol + 2, bytes(data)
                pos = eol + 2
            return None, b""
        data += buf[pos : pos + size]
        pos += size + 2
    return None, b""


def _error_text(exc: BaseException) -> str:
    detail = str(exc) or type(exc).__name__
    kind = next((kind for types, kind in _KINDS if isinstance(exc, types)), "network")
    return f"{kind}: {detail}"


def _header(response: _Response, name: str) -> str | None:
    """The value of the (lowercase) header `name`, None when absent or empty."""
    return response.headers.get(name) or None


def _json_field(response: _Response, name: str) -> str | None:
    """The string at the top-level `name` of a JSON object body, None when there is none."""
    if "json" not in response.headers.get("content-type", "").lower():
        return None
    try:
        document = json.loads(response.body)
    except ValueError:
        return None
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class _Contract:
    """What makes an answer a successful probe: a status the app accepts and, when it declares one, its
    identity (whose value is kept as the sample's served_by)."""

    accepted: frozenset[int]
    accepts: str  # the accepted statuses as given, for error texts
    identity: Callable[[_Response], str | None] | None
    not_the_app: str

    @classmethod
    def of(cls, statuses: Iterable[int | str], header: str | None, field: str | None) -> _Contract:
        specs = tuple(statuses)
        try:
            accepted = frozenset(code for spec in specs for code in status_codes(spec))
        except ValueError as exc:
            raise ConfigError(f"Prober accepted_statuses: {exc}") from None
        if not accepted:
            raise ConfigError('Prober accepted_statuses: expected at least one code or class such as "2xx"')
        if header is not None and field is not None:
            raise ConfigError("Prober takes identity_header or identity_field, not both: an app has one")
        if header == "" or field == "":
            raise ConfigError("Prober identity_header and identity_field must not be empty")
        accepts = ", ".join(map(str, specs))
        if field is not None:
            missing = f"identity: answer without JSON field {field!r}: not the app"
            return cls(accepted, accepts, partial(_json_field, name=field), missing)
        if header is not None:
            missing = f"identity: answer without {header}: not the app"
            return cls(accepted, accepts, partial(_header, name=header.lower()), missing)
        return cls(accepted, accepts, None, "")

    def judge(self, target: str, sent: float, received: float, response: _Response) -> ProbeSample:
        """The sample of an answer: failed, with its status kept, unless its status is accepted and it
        carries the declared identity."""
        served_by = self.identity(response) if self.identity is not None else None
        error = None
        if response.status not in self.accepted:
            error = f"status: HTTP {response.status} not an accepted status (accepted: {self.accepts})"
        elif served_by is None and self.identity is not None:
            error = self.not_the_app
        return ProbeSample.of(
            target, sent, received, ok=error is None, status=response.status, error=error, served_by=served_by
        )


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one request at a time; `done` gets a _Response or an error text."""

    def __init__(self, opened: float, tls: ssl.SSLContext | None) -> None:
        self.opened, self.tls = opened, tls
        self.closed = False
        self.peer: str | None = None
        self._transport: asyncio.Transport
        self._buffer = bytearray()
        self._done: Callable[[_Response | str], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else None

    def send(self, request: bytes, done: Callable[[_Response | str], None]) -> None:
        self._done = done
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self._done is None:  # bytes nobody asked for: the framing is lost
            self.abort()
            return
        self._buffer += data
        self._parse(eof=False)

    def eof_received(self) -> bool:
        self.closed = True
        if self._done is not None:
            self._parse(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish(_CLOSED if exc is None else _error_text(exc))

    def abort(self) -> None:
        self.closed, self._done = True, None
        self._transport.abort()

    def _parse(self, eof: bool) -> None:
        try:
            if len(self._buffer) > _MAX_RESPONSE:
                raise ValueError(f"response over {_MAX_RESPONSE} bytes; probe a smaller health path")
            response = _parse_response(self._buffer, eof)
        except ValueError as exc:
            self._finish(f"protocol: {exc}")
            self.abort()
            return
        if response is not None:
            self._buffer.clear()
            self._finish(response)
        elif eof:
            self._finish(_CLOSED)

    def _finish(self, result: _Response | str) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(result)


class _Exchange:
    """One probe request, from its slot to its sample."""

    __slots__ = ("address", "conn", "connecting", "done", "issued", "sent", "target", "timer")

    def __init__(self, target: _Target, sent: float) -> None:
        self.target, self.sent, self.done = target, sent, False
        self.issued = 0  # the number of the credential it carries (RequestAuth.issued)
        self.address: str | None = None  # where it connects to, once known (before it is connected)
        self.conn: _Conn | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle


class _Target:
    """One target's grid, connections and records; records change under the prober's lock."""

    def __init__(self, name: str, endpoint: _Endpoint, resolver: str | None = None) -> None:
        self.name, self.endpoint, self.resolver = name, endpoint, resolver
        self.origin = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.idle: deque[_Conn] = deque()
        self.exchanges: set[_Exchange] = set()
        self.samples: list[ProbeSample] = []
        self.missed: list[MissedSlot] = []
        self.sent = self.failed = 0


class Prober(Background):
    """Probes every target (name -> URL) on a fixed schedule from a background thread; a context manager.

    The app's contract: accepted_statuses (codes and classes, see status_codes) and at most one identity,
    identity_header (a response header) or identity_field (a top-level field of a JSON body); declared, an
    answer without it is a failed probe. timeout_s is when a probe is given up; latency_bound_s, the latency
    objective, only judges the answers (an answer slower than it keeps its real latency).

    max_in_flight defaults to rate_hz x timeout_s + 1: a slow target then never costs a slot, as each
    request answers or times out before its place is needed again. Enough file descriptors for that many
    connections per target are ensured by raising the soft RLIMIT_NOFILE up to the hard one if needed.
    """

    what = "the probes"

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        rate_hz: float = 100.0,
        timeout_s: float = 1.0,
        latency_bound_s: float | None = None,
        accepted_statuses: Iterable[int | str] = ("2xx",),
        identity_header: str | None = None,
        identity_field: str | None = None,
        max_in_flight: int | None = None,
        max_conn_age_s: float = 5.0,
        auth: RequestAuth | None = None,
        resolvers: Mapping[str, str] | None = None,
    ) -> None:
        if not targets:
            raise ConfigError("Prober needs at least one target")
        settings = {"rate_hz": rate_hz, "timeout_s": timeout_s, "max_conn_age_s": max_conn_age_s}
        for name, value in settings.items():
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"Prober {name} must be a positive number, got {value!r}")
        if latency_bound_s is not None and not 0 < latency_bound_s <= timeout_s:
            raise ConfigError(
                f"Prober latency_bound_s must be in (0, timeout_s={timeout_s:g}], got {latency_bound_s!r}: "
                "a probe is given up at the timeout, so a larger bound could never be judged"
            )
        self._contract = _Contract.of(accepted_statuses, identity_header, identity_field)
        default_in_flight = math.ceil(rate_hz * timeout_s) + 1
        self._max_in_flight = default_in_flight if max_in_flight is None else max_in_flight
        if self._max_in_flight < 1:
            raise ConfigError(f"Prober max_in_flight must be at least 1, got {max_in_flight!r}")
        self._interval, self._timeout, self._bound = 1.0 / rate_hz, timeout_s, latency_bound_s
        self._timed_out = f"timeout: no response within {timeout_s:g} s"
        self._max_age = max_conn_age_s
        resolvers = resolvers or {}
        if unknown := set(resolvers) - set(targets):
            raise ConfigError(f"Prober resolvers name no target: {', '.join(sorted(unknown))}")
        self._targets = {
            name: _Target(name, _Endpoint.parse(name, url), resolvers.get(name))
            for name, url in targets.items()
        }
        self._ssl = (
            ssl.create_default_context() if any(t.endpoint.tls for t in self._targets.values()) else None
        )
        self._auth = auth
        self._renewing: asyncio.Future[None] | None = None
        _ensure_descriptors(len(targets) * self._max_in_flight + 64)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._drain_s = timeout_s
        self._drained: asyncio.Event | None = None
        self._scheduled = False  # the schedule ran: a later failure is the run's, not the start's

    @property
    def timeout_s(self) -> float:
        """When a probe is given up, and how long stop() awaits the requests in flight by default."""
        return self._timeout

    def start(self) -> Prober:
        """Start probing; returns once the schedule runs."""
        if self._thread is not None:
            raise FleetDrillError("this Prober was already started; make a new one")
        if self._auth is not None:
            self._auth.fresh()  # the first credential, before the schedule: later ones are renewed off it
        self._thread = threading.Thread(target=self._main, name="fleetdrill-prober", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None and not self._scheduled:
            self._thread.join()
            raise FleetDrillError(f"the prober could not start: {self._error!r}") from self._error
        return self

    def stop(self, deadline_s: float = 5.0, drain_s: float | None = None) -> None:
        """Stop sending, await the requests in flight (a down target's excepted: module docstring) for at
        most drain_s (default: the timeout, by which each has answered or timed out), record any still
        unanswered as failed ("stopped: ..."), close
        every connection and join the thread, allowing deadline_s beyond the drain.

        Idempotent. Raises FleetDrillError when the thread outlives the deadline or the loop failed.
        """
        drain = self._timeout if drain_s is None else drain_s
        if not (drain >= 0 and math.isfinite(drain)):
            raise ConfigError(f"Prober.stop drain_s must be a number >= 0, got {drain_s!r}")
        with self._lock:
            if self._thread is None or self._stopped:
                return
            self._stopped = True
        self._drain_s = drain
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended on its own
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(drain + deadline_s)
        if self._thread.is_alive():
            raise FleetDrillError(
                f"the prober thread did not stop within {drain + deadline_s:g} s (a DNS lookup may hang); "
                "it is a daemon thread and will not keep the process alive"
            )
        self._raise_failure()

    def samples(self, target: str | None = None) -> list[ProbeSample]:
        """One target's samples, or every target's, in order of send time."""
        with self._lock:
            chosen = [self._target(target)] if target is not None else self._targets.values()
            merged = [s for t in chosen for s in t.samples]
        return sorted(merged, key=lambda s: (s.sent, s.received))

    def missed(self, target: str) -> list[MissedSlot]:
        """The target's missed slots, in time order."""
        with self._lock:
            return list(self._target(target).missed)

    def recorded_after(
        self, target: str, samples_seen: int, missed_seen: int
    ) -> tuple[list[ProbeSample], list[MissedSlot]]:
        """The target's samples and missed slots after the first samples_seen and missed_seen, in the order
        they were recorded: what a follower of the prober has not seen yet."""
        with self._lock:
            t = self._target(target)
            return t.samples[samples_seen:], t.missed[missed_seen:]

    def stats(self, target: str) -> TargetStats:
        """Live counters of one target; raises FleetDrillError once the prober has failed."""
        self._raise_failure()
        with self._lock:
            t = self._target(target)
            return TargetStats(t.name, t.sent, len(t.samples), t.failed, len(t.missed), len(t.exchanges))

    def availability(self, target: str, last_s: float) -> float | None:
        """Successful share of the target's probes that completed in the last last_s seconds (None: none).

        The live figure for abort conditions; a hanging target shows once its requests time out. Raises
        FleetDrillError once the prober has failed, rather than let the figure freeze.
        """
        self._raise_failure()
        since = time.monotonic() - last_s
        with self._lock:
            recent = list(takewhile(lambda s: s.received >= since, reversed(self._target(target).samples)))
        return availability(recent, latency_bound=self._bound)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise FleetDrillError(f"the prober failed and stopped early: {self._error!r}") from self._error

    def _target(self, name: str) -> _Target:
        try:
            return self._targets[name]
        except KeyError:
            raise KeyError(f"no probe target {name!r}; targets: {', '.join(self._targets)}") from None

    def _main(self) -> None:
        raise_priority()
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()  # its time() is time.monotonic()
        loop.set_exception_handler(self._on_loop_error)
        self._stopping = asyncio.Event()
        start, n = time.monotonic(), len(self._targets)
        for i, target in enumerate(self._targets.values()):
            target.origin = start + i * self._interval / n
            target.timer = loop.call_at(target.origin, self._tick, target, 0)
        self._scheduled = True
        self._ready.set()
        try:
            await self._stopping.wait()
            await self._drain()
        finally:
            for target in self._targets.values():
                self._close(target)
            await asyncio.sleep(0)  # let the aborted transports close their sockets

    async def _drain(self) -> None:
        """Stop every schedule, await the requests in flight (at most the drain bound, none once the loop
        failed, none of a down target) and record those still unanswered as failed."""
        for target in self._targets.values():
            if target.timer is not None:
                target.timer.cancel()
            if _down(target):
                for ex in list(target.exchanges):
                    self._finish(ex, _STOPPED)
        self._drained = asyncio.Event()
        if self._error is None and any(t.exchanges for t in self._targets.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self._drain_s)
        for target in self._targets.values():
            for ex in list(target.exchanges):
                self._finish(ex, _STOPPED)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        self._error = self._error or context.get("exception") or FleetDrillError(context["message"])
        if self._stopping is not None:
            self._stopping.set()

    def _close(self, target: _Target) -> None:
        if target.timer is not None:
            target.timer.cancel()
        for ex in target.exchanges:
            ex.done = True
            ex.timer.cancel()
            if ex.connecting is not None:
                ex.connecting.cancel()
            if ex.conn is not None:
                ex.conn.abort()
        for conn in target.idle:
            conn.abort()
        with self._lock:
            target.exchanges.clear()
            target.idle.clear()

    def _tick(self, target: _Target, k: int) -> None:
        """Send slot k, or the latest slot due when the loop woke late (the skipped ones are missed)."""
        behind = int((time.monotonic() - target.origin) / self._interval) - k
        if behind > 0:
            slots = (target.origin + j * self._interval for j in range(k, k + behind))
            late = [MissedSlot(target.name, slot, "late") for slot in slots]
            with self._lock:
                target.missed.extend(late)
            k += behind
        self._dispatch(target, target.origin + k * self._interval)
        next_slot = target.origin + (k + 1) * self._interval
        target.timer = asyncio.get_running_loop().call_at(next_slot, self._tick, target, k + 1)

    def _dispatch(self, target: _Target, slot: float) -> None:
        if len(target.exchanges) >= self._max_in_flight:
            with self._lock:
                target.missed.append(MissedSlot(target.name, slot, "busy"))
            return
        loop = asyncio.get_running_loop()
        ex = _Exchange(target, time.monotonic())
        request, tls, ex.issued = self._credentials(target.endpoint)
        ex.timer = loop.call_at(ex.sent + self._timeout, self._finish, ex, self._timed_out)
        with self._lock:
            target.exchanges.add(ex)
            target.sent += 1
        while target.idle and ex.conn is None:  # first in, first out: every idle one is checked in turn
            conn = target.idle.popleft()
            if not conn.closed and ex.sent - conn.opened < self._max_age and conn.tls is tls:
                ex.conn = conn
            else:
                conn.abort()
        if ex.conn is None:
            ex.connecting = loop.create_task(self._connect(ex, request, tls))
        else:
            ex.conn.send(request, partial(self._finish, ex))

    def _credentials(self, endpoint: _Endpoint) -> tuple[bytes, ssl.SSLContext | None, int]:
        """The next request to the endpoint, the TLS of a new connection and the credential's number
        (RequestAuth.issued): the auth's credential as of now. When it is due for renewal, the renewal
        (which may run a plugin) runs off the loop meanwhile."""
        if self._auth is None:
            return endpoint.head + b"\r\n", self._ssl if endpoint.tls else None, 0
        if self._renewing is None and self._auth.due():
            self._renewing = asyncio.get_running_loop().run_in_executor(None, self._auth.fresh)
            self._renewing.add_done_callback(self._renewed)
        issued = self._auth.issued()  # before the headers: a renewal in between makes a 401 renew nothing
        extra = "".join(f"{key}: {value}\r\n" for key, value in self._auth.headers().items())
        tls = self._auth.ssl_context() if endpoint.tls else None
        return endpoint.head + extra.encode("latin-1") + b"\r\n", tls, issued

    def _renewed(self, renewal: asyncio.Future[None]) -> None:
        """A renewal ended: a failed one is logged (its message holds no credential) and tried again once due;
        the probes tell what the old credential still gets."""
        self._renewing = None
        if not renewal.cancelled() and renewal.exception() is not None:
            log.warning("probes: credentials not renewed: %s", renewal.exception())

    async def _connect(self, ex: _Exchange, request: bytes, tls: ssl.SSLContext | None) -> None:
        endpoint = ex.target.endpoint
        host = endpoint.host
        if ex.target.resolver is not None:
            left = max(0.01, ex.sent + self._timeout - time.monotonic())
            answer = await asyncio.to_thread(ask, host, ex.target.resolver, "resolver", left)
            if not answer.addresses:
                ex.connecting = None
                self._finish(ex, f"dns: {host} at {ex.target.resolver}: {answer.error or 'no address'}")
                return
            host = answer.addresses[0]
        with contextlib.suppress(ValueError):  # a name the system resolves is known once connected
            ex.address = str(ipaddress.ip_address(host))
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Conn(time.monotonic(), tls),
                host,
                endpoint.port,
                ssl=tls,
                server_hostname=endpoint.host if tls else None,
            )
        except OSError as exc:
            ex.connecting = None
            self._finish(ex, _error_text(exc))
            return
        ex.connecting = None
        if ex.done:
            conn.abort()
            return
        ex.conn = conn
        conn.send(request, partial(self._finish, ex))

    def _finish(self, ex: _Exchange, result: _Response | str) -> None:
        if ex.done:
            return
        ex.done, received, target = True, time.monotonic(), ex.target
        ex.timer.cancel()
        if ex.connecting is not None:
            ex.connecting.cancel()
        address = ex.conn.peer if ex.conn is not None else ex.address
        if isinstance(result, str):
            sample = ProbeSample.of(target.name, ex.sent, received, ok=False, error=result, address=address)
        else:
            if result.status == 401 and self._auth is not None:
                self._auth.rejected(ex.issued)  # renewed for the next probes, off the loop
            sample = replace(self._contract.judge(target.name, ex.sent, received, result), address=address)
        if ex.conn is not None:
            if isinstance(result, _Response) and result.keep_alive and not ex.conn.closed:
                target.idle.append(ex.conn)
            else:
                ex.conn.abort()
        failed = probe_failed(sample, self._bound)
        with self._lock:
            target.exchanges.discard(ex)
            target.samples.append(sample)
            target.failed += failed
        if self._drained is not None and not any(t.exchanges for t in self._targets.values()):
            self._drained.set()


def _down(target: _Target) -> bool:
    """The target's last DOWN_AT_STOP probes all failed without an answer (timeout, refused, reset...)."""
    last = target.samples[-DOWN_AT_STOP:]
    return len(last) == DOWN_AT_STOP and all(sample.status is None for sample in last)


def _ensure_descriptors(needed: int) -> None:
    """Raise the soft open-files limit to cover needed descriptors, up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"probing may need {needed} open files, over this process's hard limit of {hard}: "
            "raise it (ulimit -Hn), or lower max_in_flight, timeout_s or the number of targets"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def raise_priority() -> bool:
    """Give the calling thread PROBE_NICE (Linux: a nice value per thread); False where not permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PROBE_NICE)
    except OSError:
        return False
    return True
