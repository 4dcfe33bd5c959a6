"""PostgreSQL streaming replication as the servers report it: the primary's pg_stat_replication, a
standby's last replayed WAL position, and the lag between the two in bytes of WAL.

Every function takes an open psycopg connection (autocommit, so each read is the server's state now)
and reads; none writes.
"""

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Standby:
    """One row of the primary's pg_stat_replication: a walsender and the standby it streams to."""

    application_name: str
    state: str
    """startup, catchup, streaming, backup or stopping."""
    sync_state: str
    """async, potential, sync or quorum."""
    sent_lsn: int
    replay_lsn: int | None
    replay_lag_s: float | None
    """The primary's own measure: from a commit flushed here to the standby's replay of it (None when
    idle and caught up)."""


def lsn(text: str) -> int:
    """A pg_lsn ("16/B374D848") as a byte position in the WAL."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"{text!r} is not a WAL position such as 16/B374D848")
    return (int(high, 16) << 32) + int(low, 16)


def standbys(connection: psycopg.Connection) -> list[Standby]:
    """The standbys streaming from the server connected to (its pg_stat_replication)."""
    rows = connection.execute(
        "select application_name, state, sync_state, sent_lsn::text, replay_lsn::text,"
        " extract(epoch from replay_lag)::float8 from pg_stat_replication order by application_name"
    ).fetchall()
    return [
        Standby(name, state, sync, lsn(sent) if sent else 0, lsn(replay) if replay else None, lag)
        for name, state, sync, sent, replay, lag in rows
    ]


def current_lsn(connection: psycopg.Connection) -> int:
    """The primary's current WAL write position."""
    return lsn(connection.execute("select pg_current_wal_lsn()::text").fetchone()[0])


def in_recovery(connection: psycopg.Connection) -> bool:
    """Whether the server is a standby (in recovery); a promoted one is not."""
    return bool(connection.execute("select pg_is_in_recovery()").fetchone()[0])


def replayed_lsn(connection: psycopg.Connection) -> int | None:
    """The last WAL position a standby replayed (None on a server that is not in recovery)."""
    value = connection.execute("select pg_last_wal_replay_lsn()::text").fetchone()[0]
    return lsn(value) if value else None


def lag_bytes(primary: psycopg.Connection, standby: psycopg.Connection) -> int:
    """How far the standby's replay is behind the primary's WAL, in bytes, read standby first (so a
    write between the two reads can only make it larger); an error when the standby is not one."""
    replayed = replayed_lsn(standby)
    if replayed is None:
        raise ValueError("the server read as the standby is not in recovery: it has no replay position")
    return max(0, current_lsn(primary) - replayed)


def replay_age_s(standby: psycopg.Connection) -> float | None:
    """Seconds from the commit time of the newest transaction a standby replayed to now (None when it
    replayed none yet); the commit time is the primary's clock."""
    value = standby.execute(
        "select extract(epoch from now() - pg_last_xact_replay_timestamp())::float8"
    ).fetchone()[0]
    return None if value is None else max(0.0, float(value))
