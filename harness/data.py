"""Sentinel writes and their read-back, for measured RPO (ARCHITECTURE.md, "Measurement definitions").

The sample app's API: `POST {write_url}` with JSON `{"seq": N, "payload": "...", "stream": "..."}`,
acknowledged by any 2xx; `GET {base}/orders?since=SEQ&stream=...` answers `{"orders": [{"seq": N, ...},
...], "next": SEQ | null}`, paginated while "next" is set; `GET {base}/orders/{seq}?stream=...` answers the
order, or 404. `since` goes to the app as given (the sample app answers the seqs above it).

Two drills never collide, twice over. Each writer writes to its own stream, by default
"fleetdrill-<seq base>". And its seqs run up from its seq base, by default the wall-clock time in
microseconds when it was made (new_seq_base), so even an app without streams keeps drills apart: a later
drill starts above every seq an earlier one wrote (a writer adds far fewer than one seq per microsecond;
unless the clock was set back in between), and one started a second after another that is still running
stays clear of it for 10**6 writes (14 hours at 20 Hz). Seqs stay below 2**53, exact in any JSON parser.
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from harness.errors import ConfigError, FleetDrillError
from harness.samples import SentinelWrite, WriteOutcome


def new_seq_base() -> int:
    """The default seq base: wall-clock microseconds since the epoch."""
    return time.time_ns() // 1000


def _connection(
    url: str, timeout_s: float, ssl_context: ssl.SSLContext | None
) -> tuple[http.client.HTTPConnection, str]:
    """An unopened HTTP(S) connection to url's host, and the path (with query) to ask for."""
    parts = urlsplit(url)
    try:
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http:// or https:// URL with a host")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"bad URL {url!r}: {exc}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        context = ssl_context or ssl.create_default_context()
        return http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context), path
    return http.client.HTTPConnection(host, port, timeout=timeout_s), path


class SentinelWriter:
    """Writes seqs seq_base, seq_base + 1, ... to its stream at rate_hz from a background thread.

    One write at a time, on a fixed grid: a write that overruns its slot pushes the next to the next free
    slot. A write is acknowledged when a 2xx answer comes within timeout_s (per socket operation); another
    answer refuses it; with no answer (timeout, connection error) its outcome is unknown. errors() says why
    each was not acknowledged. The connection is kept alive and reopened after any error.
    A context manager; read back with read_present(base, writer.seq_base - 1, stream=writer.stream).
    """

    def __init__(
        self,
        write_url: str,
        rate_hz: float = 20.0,
        *,
        stream: str | None = None,
        seq_base: int | None = None,
        timeout_s: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        identity_header: str | None = None,
    ) -> None:
        for name, value in (("rate_hz", rate_hz), ("timeout_s", timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"SentinelWriter {name} must be a positive number, got {value!r}")
        self.seq_base = new_seq_base() if seq_base is None else seq_base
        self.stream = stream or f"fleetdrill-{self.seq_base}"
        self._interval = 1.0 / rate_hz
        self._identity = identity_header
        self._conn, self._path = _connection(write_url, timeout_s, ssl_context)
        self._deadline_s = 3 * timeout_s + 1.0  # connect, send and receive may each take timeout_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writes: list[SentinelWrite] = []
        self._errors: dict[int, str] = {}
        self._thread: threading.Thread | None = None
        self._joined = False
        self._failure: BaseException | None = None

    def __enter__(self) -> SentinelWriter:
        return self.start()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.stop()
        except FleetDrillError as error:
            if exc is None:
                raise
            exc.add_note(f"while stopping the sentinel writer: {error}")

    def start(self) -> SentinelWriter:
        """Start writing."""
        if self._thread is not None or self._stop.is_set():
            raise FleetDrillError("this SentinelWriter was already started; make a new one")
        self._thread = threading.Thread(target=self._run, name="fleetdrill-sentinel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the write in progress (within timeout_s) and join the thread; idempotent."""
        self._stop.set()
        if self._thread is None or self._joined:
            return
        self._joined = True
        self._thread.join(self._deadline_s)
        if self._thread.is_alive():
            raise FleetDrillError(f"the sentinel writer did not stop within {self._deadline_s:g} s")
        if self._failure is not None:
            raise FleetDrillError(f"the sentinel writer failed: {self._failure!r}") from self._failure

    def writes(self) -> list[SentinelWrite]:
        """Every write so far, in seq order."""
        with self._lock:
            return list(self._writes)

    def errors(self) -> dict[int, str]:
        """Why each unacknowledged write was not acknowledged, by seq."""
        with self._lock:
            return dict(self._errors)

    def _run(self) -> None:
        seq, due = self.seq_base, time.monotonic()
        try:
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                outcome, ended_at, error, served_by = self._write(seq)
                acked_at = ended_at if outcome == "acked" else None
                with self._lock:
                    self._writes.append(SentinelWrite(seq, acked_at, outcome, ended_at, served_by))
                    if error is not None:
                        self._errors[seq] = error
                seq += 1
                due += self._interval * max(1, math.ceil((time.monotonic() - due) / self._interval))
        except BaseException as exc:
            self._failure = exc
        finally:
            self._conn.close()

    def _write(self, seq: int) -> tuple[WriteOutcome, float, str | None, str | None]:
        """Write seq: its outcome, when the attempt ended, why it was not acked (None when it was), and the
        cluster the answer names (identity_header, up to its first "/")."""
        body = json.dumps({"seq": seq, "payload": "fleetdrill sentinel", "stream": self.stream}).encode()
        try:
            self._conn.request("POST", self._path, body, {"Content-Type": "application/json"})
            with self._conn.getresponse() as response:
                response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()  # the next request opens a new connection
            return "unknown", time.monotonic(), f"{type(exc).__name__}: {exc}", None
        identity = response.getheader(self._identity) if self._identity else None
        served_by = (identity or "").split("/")[0] or None
        if 200 <= response.status < 300:
            return "acked", time.monotonic(), None, served_by
        return "refused", time.monotonic(), f"HTTP {response.status} {response.reason}", served_by


def read_present(
    base_url: str,
    since: int = 0,
    *,
    stream: str | None = None,
    timeout_s: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> set[int]:
    """Every seq the app lists after `since` (in `stream`, or the app's default one), page by page; `headers`
    go with every request (e.g. credentials for an API server's service proxy).

    Raises FleetDrillError when a page cannot be read or makes no sense: a failed read is never "lost".
    """
    present: set[int] = set()
    cursor: int | None = since
    while cursor is not None:
        url = _url(base_url, "/orders", since=cursor, stream=stream)
        page = _get_json(url, timeout_s, ssl_context, headers=headers)
        orders = page.get("orders") if isinstance(page, dict) else None
        if not isinstance(orders, list) or None in (seqs := [_seq_of(o) for o in orders]):
            raise FleetDrillError(
                f'GET {url}: expected {{"orders": [{{"seq": N, ...}}, ...]}}, got {page!r:.200}'
            )
        present.update(seqs)
        following = page.get("next")
        if following is not None and (not isinstance(following, int) or following <= cursor):
            raise FleetDrillError(f'GET {url}: "next" {following!r} does not move past since={cursor}')
        cursor = following
    return present


def read_order(
    base_url: str,
    seq: int,
    *,
    stream: str | None = None,
    timeout_s: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any] | None:
    """The order with this seq (in `stream`, or the app's default one), or None when the app answers 404."""
    url = _url(base_url, f"/orders/{seq}", stream=stream)
    order = _get_json(url, timeout_s, ssl_context, missing_ok=True)
    if order is not None and not isinstance(order, dict):
        raise FleetDrillError(f"GET {url}: expected a JSON object, got {order!r:.200}")
    return order


def _url(base_url: str, path: str, **query: object) -> str:
    given = {name: value for name, value in query.items() if value is not None}
    return f"{base_url.rstrip('/')}{path}" + (f"?{urlencode(given)}" if given else "")


def _seq_of(order: object) -> int | None:
    seq = order.get("seq") if isinstance(order, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _get_json(
    url: str,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    missing_ok: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Any:
    conn, path = _connection(url, timeout_s, ssl_context)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", **(headers or {})})
        with conn.getresponse() as response:
            body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise FleetDrillError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
    if response.status == 404 and missing_ok:
        return None
    if not 200 <= response.status < 300:
        raise FleetDrillError(f"GET {url} answered HTTP {response.status} {response.reason}: {body[:200]!r}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FleetDrillError(f"GET {url} answered no JSON ({exc}): {body[:200]!r}") from None
