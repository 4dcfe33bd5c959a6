"""The orders service on PostgreSQL: when its pod is given a database (ORDERS_DATABASE_URL, a libpq
conninfo or URL; the rest, the password above all, from libpq's PG* variables such as PGPASSWORD), the
sample app keeps its orders in the table `orders` there instead of its own log, with the same HTTP API.

The database is the authority on roles: the app is a primary while its database is one (not in recovery,
not read-only) and a replica otherwise; its epoch is the database's timeline. Replication, fencing and
promotion are the database's: the app ships nothing, and a write is an INSERT the server refuses while it
is in recovery or read-only, so an app whose database is a replica (a returning old primary that was
copied from the promoted one, a primary set read-only for a switchover) can never take a write.

Differences from the app on its own store (harness.localfleet.sampleapp):
  POST /orders    503 {"error": "not primary", "role", "epoch", "reason"} when the database refuses the
                  write; 503 {"error": "database unavailable: ..."} when it does not answer
  GET /orders...  read from this cluster's database (a replica serves reads); 503 when it does not answer
  GET /status     {"cluster", "pod", "role": primary|replica|unknown (the database does not answer),
                  "epoch": the timeline, "fenced" (a read-only primary, or no answer), "fence_reason",
                  "position": orders held, "last_seq", "replicated_to": {}, "peers": {},
                  "database": {"in_recovery", "read_only", "timeline"} | {"error"}}
  POST /promote   pg_promote() when the database is in recovery and no peer (ORDERS_PEERS) answers as a
                  writable primary; 409 naming that primary when one does (a switchover sets it read-only
                  first: harness.localfleet.pgfailover); 200 with nothing done when already primary
  POST /replicate 404: the database replicates
/healthz and /readyz do not ask the database: the app answers, and says why it cannot serve the orders.
"""

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from harness.localfleet.sampleapp import (
    DEFAULT_STREAM,
    BadRequest,
    Config,
    Reply,
    Service,
    _call,
    _int,
)
from harness.localfleet.sampleapp_store import PRIMARY, REPLICA

UNKNOWN = "unknown"
NOT_PRIMARY = "not primary"
PROMOTE_WAIT_S = 30
IDLE_CONNECTIONS = 4
CLIENT_DEFAULTS = {"connect_timeout": "2", "tcp_user_timeout": "3000", "options": "-c statement_timeout=3000"}
"""Unless the conninfo says otherwise: a server that stops answering (a lost or partitioned cluster) fails
a request within seconds instead of holding it."""

SCHEMA = """
create table if not exists orders (
    stream text not null,
    seq bigint not null,
    payload jsonb,
    epoch integer not null,
    cluster text not null,
    at double precision not null,
    primary key (stream, seq)
)"""
TIMELINE = "('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::integer"
"""A primary's timeline: the first 8 hex digits of its current WAL file's name."""
STATE = f"""
select pg_is_in_recovery(), current_setting('transaction_read_only') = 'on',
    case when pg_is_in_recovery()
        then coalesce(
            (select received_tli from pg_stat_wal_receiver), (select timeline_id from pg_control_checkpoint())
        )
        else {TIMELINE} end"""
INSERT = f"""
insert into orders (stream, seq, payload, epoch, cluster, at) values (%s, %s, %s, {TIMELINE}, %s, %s)
on conflict (stream, seq) do nothing returning epoch"""
COLUMNS = "stream, seq, payload, epoch, cluster, at"


@dataclass(frozen=True)
class DatabaseState:
    """What the app's database says of itself."""

    in_recovery: bool
    read_only: bool
    timeline: int

    @property
    def role(self) -> str:
        """Primary unless in recovery (a read-only primary, as a switchover leaves the old one, is fenced)."""
        return REPLICA if self.in_recovery else PRIMARY

    @property
    def refusal(self) -> str | None:
        """Why the database refuses writes now, None when it takes them."""
        if self.in_recovery:
            return "the database is in recovery (a replica)"
        if self.read_only:
            return "the database is read-only (default_transaction_read_only)"
        return None


def order_row(row: tuple) -> dict[str, Any]:
    """An order as the API answers it, from a row of COLUMNS."""
    stream, seq, payload, epoch, cluster, at = row
    return {"stream": stream, "seq": seq, "payload": payload, "epoch": epoch, "cluster": cluster, "at": at}


def writable_peer(statuses: Mapping[str, tuple[int, Any] | None]) -> str | None:
    """The first peer whose /status answer says it is a primary taking writes (None: none)."""
    for name, reply in statuses.items():
        if (
            reply is not None
            and reply[0] == 200
            and (reply[1].get("role"), reply[1].get("fenced"))
            == (
                PRIMARY,
                False,
            )
        ):
            return name
    return None


def conninfo(url: str) -> str:
    """The app's conninfo: ORDERS_DATABASE_URL with CLIENT_DEFAULTS for what it does not set."""
    given = psycopg.conninfo.conninfo_to_dict(url)
    return psycopg.conninfo.make_conninfo(url, **{k: v for k, v in CLIENT_DEFAULTS.items() if k not in given})


class Database:
    """Autocommit connections to the app's database, kept for reuse; a broken one is dropped. Every new
    connection to a primary creates the table orders if it is missing (idempotent)."""

    def __init__(self, url: str) -> None:
        self.conninfo = conninfo(url)
        self.idle: list[psycopg.Connection] = []
        self.lock = threading.Lock()

    def _connect(self) -> psycopg.Connection:
        connection = psycopg.connect(self.conninfo, autocommit=True)
        try:
            if not connection.execute("select pg_is_in_recovery()").fetchone()[0]:
                connection.execute(SCHEMA)
        except psycopg.errors.ReadOnlySqlTransaction:
            pass  # a read-only primary: its table comes from the one it follows, or the next primary
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self.lock:
            connection = self.idle.pop() if self.idle else None
        if connection is None:
            connection = self._connect()
        try:
            yield connection
        finally:
            keep = not connection.broken and not connection.closed
            with self.lock:
                keep = keep and len(self.idle) < IDLE_CONNECTIONS
                if keep:
                    self.idle.append(connection)
            if not keep:
                connection.close()

    def state(self) -> DatabaseState:
        with self.connection() as connection:
            in_recovery, read_only, timeline = connection.execute(STATE).fetchone()
        return DatabaseState(bool(in_recovery), bool(read_only), int(timeline or 0))

    def close(self) -> None:
        """Close the kept connections (those in use are closed when given back, if broken)."""
        with self.lock:
            idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()


def unavailable(error: psycopg.Error) -> Reply:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return 503, {"error": f"database unavailable: {first}"}


class PgApp(Service):
    """One orders instance whose orders are its cluster's PostgreSQL database."""

    def __init__(self, cfg: Config) -> None:
        if not cfg.database:
            raise ValueError("ORDERS_DATABASE_URL must be set")
        self.database = Database(cfg.database)
        super().__init__(cfg)

    def close(self) -> None:
        super().close()
        self.database.close()

    def describe(self) -> str:
        host = psycopg.conninfo.conninfo_to_dict(self.database.conninfo).get("host", "the default host")
        return f"its orders in PostgreSQL at {host}"

    def route_data(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Reply:
        """Answered on a kept connection; when it failed (its server restarted, or the primary moved), once
        more on a new one: every request is safe to repeat (a write is idempotent by stream and seq)."""
        try:
            return super().route_data(method, path, query, body)
        except psycopg.OperationalError:
            self.database.close()  # the kept connections went to the same server
        try:
            return super().route_data(method, path, query, body)
        except psycopg.OperationalError as error:
            return unavailable(error)

    def posts(self) -> dict[str, Callable[[dict[str, Any]], Reply]]:
        return {"/orders": self.post_order, "/promote": self.promote}

    def _select(self, query: str, params: list[Any]) -> list[tuple]:
        """Rows of a query on the orders; none while the table has not reached this database yet."""
        with self.database.connection() as connection:
            try:
                return connection.execute(query, params).fetchall()
            except psycopg.errors.UndefinedTable:
                return []

    def get(self, stream: str, seq: int) -> dict[str, Any] | None:
        rows = self._select(f"select {COLUMNS} from orders where stream = %s and seq = %s", [stream, seq])
        return order_row(rows[0]) if rows else None

    def page(self, stream: str, since: int, limit: int) -> dict[str, Any]:
        query = f"select {COLUMNS} from orders where stream = %s and seq > %s order by seq limit %s"
        rows = self._select(query, [stream, since, limit + 1])
        orders = [order_row(row) for row in rows[:limit]]
        return {"orders": orders, "next": orders[-1]["seq"] if len(rows) > limit else None}

    def post_order(self, body: dict[str, Any]) -> Reply:
        seq, payload = _int(body.get("seq"), "seq"), body.get("payload")
        stream = body.get("stream", DEFAULT_STREAM)
        if not isinstance(stream, str):
            raise BadRequest("stream must be a string")
        try:
            with self.database.connection() as connection:
                row = connection.execute(
                    INSERT, [stream, seq, Jsonb(payload), self.cfg.cluster, time.time()]
                ).fetchone()
        except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.ObjectNotInPrerequisiteState) as error:
            return self.refused(error)
        if row is not None:
            return 201, {"seq": seq, "stream": stream, "epoch": row[0], "cluster": self.cfg.cluster}
        order = self.get(stream, seq)
        if order is None:  # deleted in between: not this API's doing
            return 409, {"error": f"seq {seq} of stream {stream!r} could not be written"}
        if order["payload"] != payload:
            return 409, {"error": f"seq {seq} of stream {stream!r} holds another payload", "order": order}
        return 200, {k: order[k] for k in ("seq", "stream", "epoch", "cluster")}

    def refused(self, error: psycopg.Error) -> Reply:
        """The database refused a write: 503 not primary, with its role and timeline."""
        try:
            state = self.database.state()
            role, epoch, reason = state.role, state.timeline, state.refusal or str(error).strip()
        except psycopg.OperationalError:
            role, epoch, reason = UNKNOWN, 0, str(error).strip()
        return 503, {"error": NOT_PRIMARY, "role": role, "epoch": epoch, "reason": reason}

    def promote(self, body: dict[str, Any]) -> Reply:
        """pg_promote() when the database is a replica and no peer answers as a writable primary. The body's
        epoch, if any, is not used: the database's new timeline is the epoch."""
        if body.get("epoch") is not None:
            _int(body.get("epoch"), "epoch")
        state = self.database.state()
        if state.in_recovery:
            statuses = {name: _call(f"{url}/status") for name, url in self.cfg.peers.items()}
            writer = writable_peer(statuses)
            if writer is not None:
                return 409, {
                    "error": f"{writer} answers as a writable primary: switch over (it read-only first)",
                    "role": state.role,
                    "epoch": state.timeline,
                }
            with self.database.connection() as connection:
                query = "select pg_promote(wait => true, wait_seconds => %s)"
                if connection.execute(query, [PROMOTE_WAIT_S]).fetchone() != (True,):
                    return 503, {"error": f"the database was not promoted in {PROMOTE_WAIT_S} s"}
            state = self.database.state()
        return 200, {"cluster": self.cfg.cluster, "role": state.role, "epoch": state.timeline}

    def status(self) -> dict[str, Any]:
        base = {"cluster": self.cfg.cluster, "pod": self.cfg.pod, "replicated_to": {}, "peers": {}}
        try:
            try:
                state = self.database.state()
            except psycopg.OperationalError:  # on a kept connection: once more on a new one
                self.database.close()
                state = self.database.state()
        except psycopg.Error as error:
            reason = unavailable(error)[1]["error"]
            return base | {
                "role": UNKNOWN,
                "epoch": 0,
                "fenced": True,
                "fence_reason": reason,
                "position": 0,
                "last_seq": {},
                "database": {"error": reason},
            }
        counts = self._select("select stream, max(seq), count(*) from orders group by stream", [])
        fenced = state.role == PRIMARY and state.refusal is not None
        return base | {
            "role": state.role,
            "epoch": state.timeline,
            "fenced": fenced,
            "fence_reason": state.refusal if fenced else None,
            "position": sum(count for _, _, count in counts),
            "last_seq": {stream: last for stream, last, _ in counts},
            "database": {
                "in_recovery": state.in_recovery,
                "read_only": state.read_only,
                "timeline": state.timeline,
            },
        }
