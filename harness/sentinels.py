"""The app's sentinel store (`apps[].sentinels` in the fleet file): how numbered sentinel records are written
to the app and read back from one of its copies, for RPO and data integrity (ARCHITECTURE.md,
"Measurement definitions").

Three adapters, chosen per app:
- `http`: the app's own API. A write is a request (`write.method` to `write.path`, its JSON body from the
  `write.body` template), acknowledged by a 2xx and refused by any other answer; no answer leaves it
  unknown. A read is `GET {read.path}?since=SEQ&stream=STREAM`, answering `{ITEMS: [{"seq": N, ...}, ...],
  NEXT: SEQ | null}` (`read.items`, `read.next`), page by page while NEXT is set.
- `command`: the user's scripts (a database table, a queue), argv lists without a shell. A write exits 0
  when acknowledged; a read prints the records, one per line.
- `postgresql`: a table in the app's own database (pgsentinels.py): an INSERT on the primary, a SELECT
  from a cluster's database or a restored copy's.

A failed read is never "lost": it raises FleetDrillError, and the drill's verdict is an error.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit

from harness.auth import RequestAuth
from harness.config import App, CommandSentinels, HttpSentinels, PostgresqlSentinels, fill_json
from harness.errors import ConfigError, FleetDrillError
from harness.infra.command import render, stderr_tail
from harness.samples import ReplicaLag, WriteOutcome

GLOBAL = "global"
"""The target of writes through the app's global endpoint (the postgresql adapter: its primary)."""
RESTORED = "restored"
"""The target of a restored copy of the app."""
READ_TIMEOUT_S = 10.0
"""How long one HTTP read (a page) may take."""


@dataclass(frozen=True)
class Where:
    """Where sentinels go or are read: the app in one cluster, its global endpoint (target "global"), or a
    restored copy reached through a proxy (`auth`: its credentials, read per request)."""

    target: str
    endpoint: str
    context: str = ""
    namespace: str = ""
    auth: RequestAuth | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Attempt:
    """One write's outcome, why it was not acknowledged (None when it was), and the cluster the answer
    names (None when it names none)."""

    outcome: WriteOutcome
    error: str | None = None
    served_by: str | None = None


class WriteChannel(Protocol):
    """One writer's way to the app: sends one write at a time."""

    timeout_s: float

    def send(self, seq: int, stream: str) -> Attempt: ...

    def close(self) -> None: ...


class SentinelStore(ABC):
    """An app's sentinels: written through a channel, read back as records by seq."""

    @abstractmethod
    def channel(self, where: Where) -> WriteChannel:
        """A channel writing to `where`."""

    @abstractmethod
    def records(self, where: Where, since: int, stream: str) -> dict[int, Any]:
        """Every record of `stream` above seq `since` kept at `where`, by seq; FleetDrillError when they
        cannot be read."""

    def present(self, where: Where, since: int, stream: str) -> set[int]:
        """The seqs of `stream` above `since` kept at `where`."""
        return set(self.records(where, since, stream))

    def replication_lag(self) -> list[ReplicaLag]:
        """How far each cluster's copy is behind the primary now, as the store's database reports it
        (the postgresql adapter); [] for a store that cannot tell (the app's API, the user's commands)."""
        return []


def store_for(app: App, where_in_file: str, identity_header: str | None = None) -> SentinelStore:
    """The app's sentinel store; ConfigError naming `where_in_file` (apps[N].sentinels) when the fleet file
    declares none."""
    if isinstance(app.sentinels, HttpSentinels):
        return HttpStore(app.sentinels, identity_header)
    if isinstance(app.sentinels, CommandSentinels):
        return CommandStore(app.sentinels)
    if isinstance(app.sentinels, PostgresqlSentinels):
        from harness.pgsentinels import PostgresqlStore  # here: psycopg loads only for apps that use it

        return PostgresqlStore(app.sentinels, where_in_file)
    raise ConfigError(
        f"app {app.name!r} declares no sentinels, so its data cannot be written and read back: set "
        f"{where_in_file} (adapter http, command or postgresql)"
    )


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


def _on(endpoint: str, path: str) -> str:
    """`path` on `endpoint` (an absolute URL stays as it is); the endpoint's own path is kept."""
    return path if "://" in path else urljoin(endpoint.rstrip("/") + "/", path.lstrip("/"))


class HttpChannel:
    """Writes over one kept-alive connection, reopened after any error."""

    def __init__(
        self, spec: HttpSentinels, where: Where, identity_header: str | None, timeout_s: float
    ) -> None:
        self.timeout_s = timeout_s
        self._spec, self._identity, self._auth = spec, identity_header, where.auth
        self._url = _on(where.endpoint, spec.write.path)
        self._tls = _credentials(where.auth)[1]
        self._conn, self._path = _connection(self._url, timeout_s, self._tls)

    def send(self, seq: int, stream: str) -> Attempt:
        body = json.dumps(fill_json(self._spec.write.body, {"seq": seq, "stream": stream})).encode()
        try:
            auth, tls, issued = _credentials(self._auth)
        except FleetDrillError as exc:  # its message names the context, never the credential
            return Attempt("unknown", f"credentials: {exc}")
        if tls is not self._tls:  # a new client certificate: a new connection
            self._conn.close()
            self._tls = tls
            self._conn, self._path = _connection(self._url, self.timeout_s, tls)
        headers = {"Content-Type": "application/json", **auth}
        try:
            self._conn.request(self._spec.write.method, self._path, body, headers)
            with self._conn.getresponse() as response:
                response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()  # the next request opens a new connection
            return Attempt("unknown", f"{type(exc).__name__}: {exc}")
        _rejected(self._auth, issued, response.status)
        identity = response.getheader(self._identity) if self._identity else None
        served_by = (identity or "").split("/")[0] or None
        if 200 <= response.status < 300:
            return Attempt("acked", None, served_by)
        return Attempt("refused", f"HTTP {response.status} {response.reason}", served_by)

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class HttpStore(SentinelStore):
    """Sentinels kept by the app's HTTP API (adapter http)."""

    spec: HttpSentinels
    identity_header: str | None = None
    write_timeout_s: float = 2.0

    def channel(self, where: Where) -> WriteChannel:
        return HttpChannel(self.spec, where, self.identity_header, self.write_timeout_s)

    def records(self, where: Where, since: int, stream: str) -> dict[int, Any]:
        read, found = self.spec.read, {}
        cursor: int | None = since
        while cursor is not None:
            url = f"{_on(where.endpoint, read.path)}?{urlencode({'since': cursor, 'stream': stream})}"
            page = _get_json(url, where)
            items = page.get(read.items) if isinstance(page, dict) else None
            if not isinstance(items, list) or None in (seqs := [_seq_of(item) for item in items]):
                raise FleetDrillError(
                    f'GET {url}: expected {{"{read.items}": [{{"seq": N, ...}}, ...]}}, got {page!r:.200}'
                )
            found.update(zip(seqs, items, strict=True))
            following = page.get(read.next)
            if following is not None and (not isinstance(following, int) or following <= cursor):
                moved = f'"{read.next}" {following!r} does not move past since={cursor}'
                raise FleetDrillError(f"GET {url}: {moved}")
            cursor = following
        return found


def _seq_of(record: object) -> int | None:
    seq = record.get("seq") if isinstance(record, dict) else record
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _credentials(auth: RequestAuth | None) -> tuple[dict[str, str], ssl.SSLContext | None, int]:
    """The headers, TLS and number (RequestAuth.issued) of a request's credential as of now, renewed first
    when due (none without auth)."""
    if auth is None:
        return {}, None, 0
    auth.fresh()
    return auth.headers(), auth.ssl_context(), auth.issued()


def _rejected(auth: RequestAuth | None, issued: int, status: int) -> None:
    """A 401 Unauthorized to the credential numbered `issued` renews it for the next request."""
    if auth is not None and status == 401:
        auth.rejected(issued)


def _get_json(url: str, where: Where) -> Any:
    headers, tls, issued = _credentials(where.auth)
    conn, path = _connection(url, READ_TIMEOUT_S, tls)
    try:
        conn.request("GET", path, headers={"Accept": "application/json", **headers})
        with conn.getresponse() as response:
            body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise FleetDrillError(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
    _rejected(where.auth, issued, response.status)
    if not 200 <= response.status < 300:
        raise FleetDrillError(f"GET {url} answered HTTP {response.status} {response.reason}: {body[:200]!r}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FleetDrillError(f"GET {url} answered no JSON ({exc}): {body[:200]!r}") from None


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run argv without a shell; FleetDrillError when it cannot start."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise FleetDrillError(f"sentinels: cannot run {argv[0]!r}: {exc}") from None


@dataclass(frozen=True)
class CommandChannel:
    """Writes by running the write command once per sentinel."""

    spec: CommandSentinels
    where: Where

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout

    def send(self, seq: int, stream: str) -> Attempt:
        values = {"seq": seq, "stream": stream, "target": self.where.target, "endpoint": self.where.endpoint}
        argv = render(self.spec.write, values)
        try:
            done = _run(argv, self.spec.timeout)
        except subprocess.TimeoutExpired:
            return Attempt("unknown", f"`{argv[0]}` still ran after {self.spec.timeout:g} s")
        words = done.stdout.split()
        served_by = words[0].split("/")[0] if words else None
        if done.returncode == 0:
            return Attempt("acked", None, served_by)
        said = stderr_tail(done.stderr) or "no stderr"
        return Attempt("refused", f"`{argv[0]}` exited {done.returncode}: {said}", served_by)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class CommandStore(SentinelStore):
    """Sentinels kept wherever the user's scripts keep them (adapter command)."""

    spec: CommandSentinels

    def channel(self, where: Where) -> WriteChannel:
        return CommandChannel(self.spec, where)

    def records(self, where: Where, since: int, stream: str) -> dict[int, Any]:
        values = {
            "since": since,
            "stream": stream,
            "cluster": where.target,
            "context": where.context,
            "namespace": where.namespace,
            "endpoint": where.endpoint,
        }
        argv = render(self.spec.read, values)
        shown = " ".join(argv)
        try:
            done = _run(argv, self.spec.timeout)
        except subprocess.TimeoutExpired:
            ran = f"still ran after {self.spec.timeout:g} s"
            raise FleetDrillError(f"sentinels read `{shown}` {ran}") from None
        if done.returncode != 0:
            said = stderr_tail(done.stderr) or "no stderr"
            raise FleetDrillError(f"sentinels read `{shown}` exited {done.returncode}: {said}")
        found = {}
        for number, line in enumerate(done.stdout.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            seq = _seq_of(record)
            if seq is None:
                raise FleetDrillError(
                    f"sentinels read `{shown}`, line {number}: expected a number or a JSON object with its "
                    f"seq, got {line[:100]!r}"
                )
            found[seq] = record
        return found
