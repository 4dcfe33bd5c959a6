"""The postgresql sentinel adapter against real PostgreSQL (Debian's package): a primary and streaming
replicas made with pg_basebackup (tests/postgres.py). No Kubernetes fleet: the module's servers start in
seconds and are stopped on every exit path.

Writes go to the primary ("global") or to one cluster's database; reads come back from a cluster's
database. The primary plays us-east, its replica eu-west.
"""

import logging
import os
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest

from harness import measure
from harness.config import PostgresqlSentinels
from harness.errors import FleetDrillError
from harness.pgsentinels import PostgresqlStore
from harness.samples import SentinelWrite
from harness.sentinels import GLOBAL, RESTORED, Where
from tests import postgres
from tests.conftest import wait_for
from tests.postgres import Server, Servers

PASSWORD_ENV = "FLEETDRILL_TEST_PG_PASSWORD"
CATCH_UP_S = 10.0


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    with postgres.servers() as running:
        yield running


@pytest.fixture(scope="module")
def primary(servers: Servers) -> Server:
    return servers.primary()


@pytest.fixture(scope="module")
def replica(servers: Servers, primary: Server) -> Server:
    return servers.replica(primary, "replica")


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PASSWORD_ENV, postgres.PASSWORD)
    return postgres.PASSWORD


def store_of(primary: str, clusters: dict[str, str], **settings: object) -> PostgresqlStore:
    """The adapter writing to the `primary` conninfo, reading from `clusters`; the password in the env."""
    spec = {"adapter": "postgresql", "primary": primary, "clusters": clusters}
    spec |= {"password_env": PASSWORD_ENV, "statement_timeout": "2s", "connect_timeout": "2s"} | settings
    return PostgresqlStore(PostgresqlSentinels.model_validate(spec), "apps[0].sentinels")


def write(store: PostgresqlStore, target: str, stream: str, seqs: range) -> list[SentinelWrite]:
    """Write each seq through one channel, as the drill's writer does; the records of what became of them."""
    channel, writes = store.channel(Where(target, "")), []
    try:
        for seq in seqs:
            attempt = channel.send(seq, stream)
            assert attempt.outcome == "acked", attempt.error
            now = time.monotonic()
            writes.append(SentinelWrite(seq, now, "acked", now, attempt.served_by))
    finally:
        channel.close()
    return writes


def backend_pid(server: Server, application: str) -> int:
    """The pid of the server process serving the session named `application`."""
    with server.admin() as conn:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        (pid,) = [row[0] for row in conn.execute(query, [application]).fetchall()]
    return pid


def test_writes_acked_on_the_primary_are_read_back_from_the_replica(primary: Server, replica: Server) -> None:
    store = store_of(primary.conninfo(), {"us-east": primary.conninfo(), "eu-west": replica.conninfo()})
    writes = write(store, GLOBAL, "drill-a", range(100, 120))
    write(store, GLOBAL, "drill-b", range(100, 105))  # another drill's stream is not read back
    assert {w.served_by for w in writes} == {"us-east"}  # the cluster whose conninfo names that server
    lsn = primary.written()
    wait_for(lambda: replica.replayed(lsn), CATCH_UP_S, f"the replica to replay the WAL up to {lsn}")

    records = store.records(Where("eu-west", ""), 99, "drill-a")
    assert sorted(records) == list(range(100, 120))
    assert records[100]["stream"] == "drill-a" and records[100]["payload"] == "fleetdrill sentinel"
    assert store.present(Where("eu-west", ""), 114, "drill-a") == set(range(115, 120))
    assert store.present(Where("us-east", ""), 99, "drill-b") == set(range(100, 105))


def test_a_multi_host_primary_writes_to_the_server_taking_writes(primary: Server, replica: Server) -> None:
    """libpq skips the replica listed first (target_session_attrs=read-write): the writes land on the
    primary and are credited to its cluster."""
    both = f"host=127.0.0.1,127.0.0.1 port={replica.port},{primary.port} dbname=shop user=fleetdrill"
    clusters = {"us-east": primary.conninfo(), "eu-west": replica.conninfo()}
    store = store_of(f"{both} target_session_attrs=read-write", clusters)
    writes = write(store, GLOBAL, "multi-host", range(1, 4))
    assert {w.served_by for w in writes} == {"us-east"}
    assert store.present(Where("us-east", ""), 0, "multi-host") == {1, 2, 3}


def test_a_write_to_the_read_only_replica_is_refused(primary: Server, replica: Server) -> None:
    store = store_of(primary.conninfo(), {"eu-west": replica.conninfo()})
    channel = store.channel(Where("eu-west", ""))
    try:
        attempt = channel.send(1, "refused")
    finally:
        channel.close()
    assert (attempt.outcome, attempt.served_by) == ("refused", "eu-west")
    assert "ReadOnlySqlTransaction" in (attempt.error or "") and "read-only transaction" in attempt.error
    assert postgres.PASSWORD not in attempt.error


def test_writes_the_promoted_replica_never_got_are_lost(servers: Servers, primary: Server) -> None:
    """The replica stops (its link cut), N more writes are acknowledged by the primary, and the replica is
    promoted without them: the RPO measure finds exactly those N lost."""
    cut = servers.replica(primary, "cut")
    store = store_of(primary.conninfo(), {"eu-west": cut.conninfo()})
    before = write(store, GLOBAL, "loss", range(1, 31))
    lsn = primary.written()
    wait_for(lambda: cut.replayed(lsn), CATCH_UP_S, f"the replica to replay the WAL up to {lsn}")
    servers.stop(cut)
    after = write(store, GLOBAL, "loss", range(31, 39))
    t0 = time.monotonic()  # the primary is lost now
    servers.start(cut, "-c primary_conninfo=''")  # a standby with no way to its primary
    servers.promote(cut)

    loss = measure.rpo(before + after, store.present(Where("eu-west", ""), 0, "loss"), t0)

    assert (loss.lost_count, loss.lost) == (8, tuple(range(31, 39)))
    assert loss.last_survivor == before[-1] and loss.first_lost == after[0] and loss.holes == ()
    assert loss.rpo == pytest.approx(t0 - before[-1].acked_at)
    assert write(store, "eu-west", "loss", range(39, 40))[0].served_by == "eu-west"  # promoted: takes writes


def test_the_replication_lag_is_how_far_each_replica_is_behind_the_primary(
    servers: Servers, primary: Server
) -> None:
    """In step: nothing behind. Its link cut (restarted without a primary to stream from) while the primary
    goes on committing: behind by the time since its newest replayed commit, and the bytes of WAL."""
    follower = servers.replica(primary, "lagging")
    store = store_of(primary.conninfo(), {"us-east": primary.conninfo(), "eu-west": follower.conninfo()})
    write(store, GLOBAL, "lag", range(1, 11))
    lsn = primary.written()
    wait_for(lambda: follower.replayed(lsn), CATCH_UP_S, f"the replica to replay the WAL up to {lsn}")
    (lag,) = store.replication_lag()
    assert (lag.cluster, lag.primary, lag.behind_s, lag.behind_bytes) == ("eu-west", "us-east", 0.0, 0)
    assert lag.state == "no walsender named eu-west"  # pg_basebackup -R names it walreceiver
    servers.stop(follower)
    servers.start(follower, "-c cluster_name=eu-west")  # its application_name when primary_conninfo has none
    named = wait_for(
        lambda: (found := store.replication_lag()[0]).state != "no walsender named eu-west" and found,
        CATCH_UP_S,
        "the replica streaming under its cluster's name",
    )
    assert named.state == "unknown: the user lacks pg_monitor"
    with primary.admin() as conn:
        conn.execute(f"GRANT pg_monitor TO {postgres.USER}")
    assert store.replication_lag()[0].state == "streaming"

    servers.stop(follower)
    servers.start(follower, "-c primary_conninfo=''")
    seq = iter(range(11, 1000))
    cut = wait_for(
        lambda: (
            write(store, GLOBAL, "lag", range(next(seq), next(seq)))
            and (found := store.replication_lag()[0]).behind_s is not None
            and found.behind_s >= 1.0
            and found
        ),
        CATCH_UP_S,
        "the cut replica's lag to reach a second",
    )
    assert cut.state == "no walsender named eu-west" and cut.behind_bytes and cut.behind_bytes > 0, cut
    assert cut.describe().startswith(f"eu-west {cut.behind_s:.3g} s behind us-east (")
    servers.stop(follower)


def test_a_read_that_fails_is_an_error_naming_the_cluster_never_a_loss(
    primary: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    unreachable = f"host=127.0.0.1 port={postgres.free_port()} dbname=shop user=fleetdrill"
    store = store_of(primary.conninfo(), {"us-east": primary.conninfo(), "eu-west": unreachable})
    with pytest.raises(FleetDrillError, match=r"cannot connect to eu-west's database \(apps\[0\]\.sentinels"):
        store.present(Where("eu-west", ""), 0, "any")

    monkeypatch.setenv(PASSWORD_ENV, "wrong-password-never-shown")
    with pytest.raises(FleetDrillError) as wrong:
        store.present(Where("us-east", ""), 0, "any")
    message = str(wrong.value)
    assert "us-east's database (apps[0].sentinels.clusters.us-east: host=127.0.0.1" in message
    assert "password authentication failed" in message and "wrong-password-never-shown" not in message

    monkeypatch.setenv(PASSWORD_ENV, postgres.PASSWORD)
    no_table = store_of(primary.conninfo(), {"us-east": primary.conninfo()}, table="not_written_here")
    with pytest.raises(FleetDrillError, match="has no table not_written_here"):
        no_table.present(Where("us-east", ""), 0, "any")
    with pytest.raises(FleetDrillError, match=r"set apps\[0\]\.sentinels\.restored"):
        store.present(Where(RESTORED, ""), 0, "any")
    assert "wrong-password-never-shown" not in caplog.text and postgres.PASSWORD not in caplog.text


def test_a_lost_connection_leaves_the_write_unknown_and_the_next_reconnects(primary: Server) -> None:
    conninfo = primary.conninfo(application_name="lost-connection")
    store = store_of(conninfo, {"us-east": primary.conninfo()})
    channel = store.channel(Where(GLOBAL, ""))
    try:
        assert channel.send(1, "lost").outcome == "acked"
        with primary.admin() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [backend_pid(primary, "lost-connection")])
        lost = channel.send(2, "lost")
        assert (lost.outcome, lost.error) == (
            "unknown",
            "AdminShutdown: terminating connection due to administrator command",
        )
        assert channel.send(3, "lost").outcome == "acked"
    finally:
        channel.close()
    assert store.present(Where("us-east", ""), 0, "lost") == {1, 3}


def test_a_server_that_stops_answering_leaves_the_write_unknown_in_time(primary: Server) -> None:
    store = store_of(primary.conninfo(application_name="frozen"), {}, statement_timeout="1s")
    channel = store.channel(Where(GLOBAL, ""))
    try:
        assert channel.send(1, "frozen").outcome == "acked"
        pid = backend_pid(primary, "frozen")
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            frozen = channel.send(2, "frozen")
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (frozen.outcome, frozen.error) == ("unknown", "no answer within 2 s")
        assert 2.0 <= took < channel.timeout_s + 1
        assert channel.send(3, "frozen").outcome == "acked"
    finally:
        channel.close()


def test_a_statement_the_server_cancels_is_refused(primary: Server) -> None:
    """A write held behind a lock past the statement timeout: the server cancels and rolls it back."""
    store = store_of(primary.conninfo(), {}, statement_timeout="1s")
    write(store, GLOBAL, "locked", range(1, 2))  # the table exists
    with psycopg.connect(primary.conninfo(), password=postgres.PASSWORD) as holder, holder.transaction():
        holder.execute("LOCK TABLE fleetdrill_sentinels IN ACCESS EXCLUSIVE MODE")
        channel = store.channel(Where(GLOBAL, ""))
        try:
            attempt = channel.send(2, "locked")
        finally:
            channel.close()
    assert attempt.outcome == "refused" and "QueryCanceled" in (attempt.error or "")
