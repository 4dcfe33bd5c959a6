"""The `postgresql` sentinel adapter: sentinels in a table of the app's own PostgreSQL database (psycopg 3).

A write is one autocommitted INSERT on its own connection (kept open, reopened after a lost one): through
`primary` for the drill's writes (target "global"), through `clusters[NAME]` for direct writes to one
cluster. Its outcome is what the database answered:
- acked: the INSERT committed;
- refused: the server answered an ERROR, so the statement was rolled back (a read-only transaction on a
  standby, a server-side statement timeout, a permission or constraint error);
- unknown: no answer (a connection that could not open or was lost, a FATAL, no answer within the
  statement timeout and a second): the write may or may not have committed.
The table (seq, stream, payload, written_at; keyed by stream and seq) is created if absent before a
channel's first write. A write is credited to the cluster whose database took it: the target's, or for
the primary, the cluster whose `clusters` entry lists the host and port libpq connected to (the
split-brain check counts who took writes by it).

The replication lag (`replication_lag`, read by the drill just before its first fault) is each cluster's
server as it reports itself: the replicas' replay positions and newest replayed commit time read first,
then the primary's (the one not in recovery) write position and pg_stat_replication, so a write between
the reads can only make a lag larger.

A read selects a stream's rows above a seq from `clusters[NAME]` (the survivor after failover) or
`restored` (a restored copy). A restored database is reached by its own conninfo entry: the proxy and TLS
settings of Where (the API server's service proxy, for HTTP) do not apply to SQL. A failed read (no
connection, no table, an error) raises FleetDrillError naming the cluster, never "lost".

The password is never in the fleet file: it comes from the variable `password_env` names or from libpq
(PGPASSWORD, PGPASSFILE). Errors name the cluster, the field and host, port, database and user only, and
any text that would repeat the password has it replaced.
"""

from __future__ import annotations

import math
import os
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from harness import pgreplication
from harness.config import PostgresqlSentinels
from harness.errors import ConfigError, FleetDrillError
from harness.samples import ReplicaLag
from harness.sentinels import GLOBAL, RESTORED, Attempt, SentinelStore, Where, WriteChannel

GRACE_S = 1.0
"""How much longer than the statement timeout the harness waits for the server's answer."""
PAYLOAD = "fleetdrill sentinel"
APPLICATION_NAME = "fleetdrill-sentinels"
DEFAULT_PORT = 5432
SHOWN = ("host", "hostaddr", "port", "dbname", "user")
"""The conninfo keys an error may name."""


class _Deadline:
    """Cuts a connection's socket when a block outlasts `seconds`: a server that stops answering (a frozen
    host, a cut path) ends the wait as a lost connection. `fired` says whether it did."""

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self._conn, self._lock, self.seconds = conn, threading.Lock(), seconds
        self._done = self.fired = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _cut(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            try:
                with socket.socket(fileno=os.dup(self._conn.fileno())) as copy:
                    copy.shutdown(socket.SHUT_RDWR)  # the connection's own socket: its wait wakes up
            except (OSError, psycopg.Error):
                pass  # closed meanwhile: nothing left to cut


@dataclass(frozen=True)
class Database:
    """One conninfo of the spec: the target it serves, the field it comes from, and how to connect."""

    target: str
    source: str
    conninfo: str
    spec: PostgresqlSentinels
    password: str | None = field(default=None, repr=False)

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit connection with the statement timeout set; psycopg.Error when it cannot open."""
        extra: dict[str, Any] = {"connect_timeout": math.ceil(self.spec.connect_timeout), "autocommit": True}
        if self.password is not None:
            extra["password"] = self.password
        if "application_name" not in conninfo_to_dict(self.conninfo):
            extra["application_name"] = APPLICATION_NAME
        conn = psycopg.connect(self.conninfo, **extra)
        try:
            with _Deadline(conn, self.spec.statement_timeout + GRACE_S):
                milliseconds = str(math.ceil(self.spec.statement_timeout * 1000))
                conn.execute("SELECT set_config('statement_timeout', %s, false)", [milliseconds])
        except BaseException:
            conn.close()
            raise
        return conn

    def describe(self) -> str:
        """The target, the field and the conninfo's non-secret parts, e.g. `eu-west's database
        (apps[0].sentinels.clusters.eu-west: host=db port=5432 dbname=shop)`."""
        params = conninfo_to_dict(self.conninfo)
        shown = " ".join(f"{key}={params[key]}" for key in SHOWN if str(params.get(key) or "").strip(","))
        return f"{self.target}'s database ({self.source}: {shown or 'libpq defaults'})"

    def scrub(self, text: str) -> str:
        """`text` with the password, if any, replaced."""
        return text.replace(self.password, "***") if self.password else text

    def why(self, exc: BaseException) -> str:
        """One line saying what went wrong, without the password."""
        said = " ".join(str(exc).split()) or type(exc).__name__
        return self.scrub(f"{type(exc).__name__}: {said}")


def addresses(conninfo: str) -> set[tuple[str, int]]:
    """The (host, port) pairs a conninfo lists, as written (one port for all hosts, 5432 by default)."""
    params = conninfo_to_dict(conninfo)
    hosts = str(params.get("host") or "").split(",")
    ports = [port or str(DEFAULT_PORT) for port in str(params.get("port") or "").split(",")]
    if len(ports) == 1:
        ports *= len(hosts)
    return {(host, int(port)) for host, port in zip(hosts, ports, strict=False) if port.isdigit()}


def answered_error(exc: BaseException) -> bool:
    """Whether the server answered the statement with an ERROR (rolled back, the session still open)."""
    return isinstance(exc, psycopg.Error) and exc.diag.severity_nonlocalized == "ERROR"


class PostgresqlChannel:
    """Writes sentinels with INSERTs over one connection, reopened after a lost one."""

    def __init__(self, database: Database, owners: Mapping[tuple[str, int], str] | None = None) -> None:
        """`owners`: which cluster's database each (host, port) is, to credit writes through the primary."""
        spec = database.spec
        hosts = len(str(conninfo_to_dict(database.conninfo).get("host") or "").split(","))
        self.timeout_s = max(spec.connect_timeout * hosts, spec.statement_timeout + GRACE_S)
        """The longest step of a write: opening the connection (each host in turn), a statement."""
        self._db: Database = database
        self._owners = owners or {}
        self._conn: psycopg.Connection[Any] | None = None
        self._served_by: str | None = None
        self._table = sql.Identifier(*spec.table.split("."))
        self._table_ready = False
        self._insert = sql.SQL("INSERT INTO {} (seq, stream, payload) VALUES (%s, %s, %s)").format(
            self._table
        )

    def send(self, seq: int, stream: str) -> Attempt:
        deadline: _Deadline | None = None
        try:
            if self._conn is None:
                self._conn = self._db.connect()
                self._served_by = self._owner(self._conn)
            served_by = self._served_by
            deadline = _Deadline(self._conn, self._db.spec.statement_timeout + GRACE_S)
            with deadline:
                self._ensure_table(self._conn)
                self._conn.execute(self._insert, [seq, stream, PAYLOAD])
        except psycopg.Error as exc:
            served_by = self._served_by if self._conn is not None else None
            fired = deadline is not None and deadline.fired
            if answered_error(exc) and not fired:
                return Attempt("refused", self._db.why(exc), served_by)
            self.close()
            if fired:
                return Attempt("unknown", f"no answer within {deadline.seconds:g} s", served_by)
            return Attempt("unknown", self._db.why(exc), served_by)
        return Attempt("acked", None, served_by)

    def _owner(self, conn: psycopg.Connection[Any]) -> str | None:
        """The cluster whose database the connection reached: the target's own, or for the primary, the
        cluster whose conninfo lists the host and port libpq chose (None when no cluster's does)."""
        if self._db.target != GLOBAL:
            return self._db.target
        return self._owners.get((conn.info.host, conn.info.port))

    def _ensure_table(self, conn: psycopg.Connection[Any]) -> None:
        """Create the sentinel table when it is absent (looked up first: a standby refuses any CREATE)."""
        if self._table_ready:
            return
        (found,) = conn.execute("SELECT to_regclass(%s)", [self._db.spec.table]).fetchone() or (None,)
        if found is None:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (seq bigint NOT NULL, stream text NOT NULL, payload text,"
                    " written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (stream, seq))"
                ).format(self._table)
            )
        self._table_ready = True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class PostgresqlStore(SentinelStore):
    """Sentinels kept in a table of the app's PostgreSQL database (adapter postgresql)."""

    spec: PostgresqlSentinels
    where_in_file: str
    """Where the spec is in the fleet file (apps[N].sentinels), for errors."""

    def database(self, target: str) -> Database:
        """The database serving `target` ("global": the primary, "restored", or a cluster's name) with its
        password; ConfigError naming the field when the fleet file gives none or the password is unset."""
        base = self.where_in_file
        if target == GLOBAL:
            conninfo, where = self.spec.primary, f"{base}.primary"
        elif target == RESTORED:
            conninfo, where = self.spec.restored, f"{base}.restored"
        else:
            conninfo, where = self.spec.clusters.get(target), f"{base}.clusters.{target}"
        if conninfo is None:
            raise ConfigError(f"no database for {target} in the fleet file: set {where} (a libpq conninfo)")
        return Database(target, where, conninfo, self.spec, self._password())

    def _password(self) -> str | None:
        name = self.spec.password_env
        if name is None:
            return None  # libpq's own: PGPASSWORD, PGPASSFILE or ~/.pgpass
        value = os.environ.get(name)
        if not value:
            raise ConfigError(
                f"environment variable {name} ({self.where_in_file}.password_env) is not set: "
                "export the sentinel database's password in it"
            )
        return value

    def channel(self, where: Where) -> WriteChannel:
        listed = [(address, name) for name, info in self.spec.clusters.items() for address in addresses(info)]
        owners = {address: name for address, name in listed if [a for a, _ in listed].count(address) == 1}
        return PostgresqlChannel(self.database(where.target), owners)

    def replication_lag(self) -> list[ReplicaLag]:
        return replication_lag(self)

    def records(self, where: Where, since: int, stream: str) -> dict[int, Any]:
        db = self.database(where.target)
        query = sql.SQL(
            "SELECT seq, stream, payload, written_at FROM {} WHERE stream = %s AND seq > %s ORDER BY seq"
        ).format(sql.Identifier(*self.spec.table.split(".")))
        try:
            conn = db.connect()
        except psycopg.Error as exc:
            raise FleetDrillError(f"sentinels: cannot connect to {db.describe()}: {db.why(exc)}") from None
        with conn:
            deadline = _Deadline(conn, self.spec.statement_timeout + GRACE_S)
            try:
                with deadline:
                    rows = conn.execute(query, [stream, since]).fetchall()
            except psycopg.errors.UndefinedTable:
                raise FleetDrillError(
                    f"sentinels: {db.describe()} has no table {self.spec.table}: not the app's database, or "
                    "a copy made without it"
                ) from None
            except psycopg.Error as exc:
                said = f"no answer within {deadline.seconds:g} s" if deadline.fired else db.why(exc)
                raise FleetDrillError(f"sentinels: cannot read {db.describe()}: {said}") from None
        return {
            seq: {"seq": seq, "stream": name, "payload": payload, "written_at": written.isoformat()}
            for seq, name, payload, written in rows
        }


@dataclass(frozen=True)
class _Copy:
    """One cluster's server as read for the replication lag: a replica's replay position and age, or a
    primary's write position and its walsenders' states by application name."""

    cluster: str
    replica: bool = False
    replayed: int | None = None
    age_s: float | None = None
    written: int = 0
    links: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


def _read(database: Database) -> _Copy:
    """The server of `database` as _Copy; its error (in a line, no password) when it cannot be read."""
    try:
        conn = database.connect()
    except psycopg.Error as exc:
        return _Copy(database.target, error=database.why(exc))
    with conn, _Deadline(conn, database.spec.statement_timeout + GRACE_S) as deadline:
        try:
            if pgreplication.in_recovery(conn):
                age = pgreplication.replay_age_s(conn)
                return _Copy(database.target, True, pgreplication.replayed_lsn(conn), age)
            hidden = "unknown: the user lacks pg_monitor"  # pg_stat_replication hides the state
            links = {s.application_name: s.state or hidden for s in pgreplication.standbys(conn)}
            return _Copy(database.target, written=pgreplication.current_lsn(conn), links=links)
        except psycopg.Error as exc:
            said = f"no answer within {deadline.seconds:g} s" if deadline.fired else database.why(exc)
            return _Copy(database.target, error=said)


def replication_lag(store: PostgresqlStore) -> list[ReplicaLag]:
    """Each replica's lag behind the primary, from the servers the fleet file's `clusters` name: every
    server connected to at once; a replica's link state is the primary's pg_stat_replication row whose
    application_name is the replica's cluster (as the local fleet names them), else "no walsender named"
    it (a replica cut off, or one named otherwise)."""
    databases = [store.database(name) for name in store.spec.clusters]
    with ThreadPoolExecutor(max_workers=max(1, len(databases))) as pool:
        replicas = list(pool.map(_read, databases))  # the primary's answer too: read again below, after
    primaries = [c for c in replicas if c.error is None and not c.replica]
    primary = _read(store.database(primaries[0].cluster)) if len(primaries) == 1 else None
    lags = []
    for copy in replicas:
        if copy.error is not None:
            lags.append(ReplicaLag(copy.cluster, None, None, None, "no answer", copy.error))
        elif not copy.replica:
            continue
        elif primary is None or primary.error is not None or copy.replayed is None:
            why = "no replay position" if copy.replayed is None else "no single primary answered"
            lags.append(ReplicaLag(copy.cluster, None, None, None, "unknown", why))
        else:
            behind = max(0, primary.written - copy.replayed)
            age = 0.0 if behind == 0 else copy.age_s
            state = primary.links.get(copy.cluster, f"no walsender named {copy.cluster}")
            lags.append(ReplicaLag(copy.cluster, primary.cluster, age, behind, state))
    return lags
