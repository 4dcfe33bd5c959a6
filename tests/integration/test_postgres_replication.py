"""PostgreSQL streaming replication across the local fleet's clusters (`fleet up --postgres`): the replica
in eu-west streams from the primary in us-east through us-east's ingress, its lag is what the network
makes it (a cut replication path or a bandwidth limit makes it grow, and it catches up after), and
pg_promote() makes it writable. A primary cut off from the rest of the fleet fences itself (read-only)
until it is confirmed again. The sample app keeps its orders there: written through the primary's
cluster's app, read through the replica's, refused there. Everything is read from the host through each
cluster's exposed endpoint."""

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from kubernetes import client, config

from harness import pgreplication
from harness.faults.base import KubeContext
from harness.faults.chaosmesh import NetworkChaosFault
from harness.localfleet import apps, postgres, supervisor
from harness.localfleet.state import FleetState
from tests.conftest import started_fleet, wait_for

PRIMARY, REPLICA = "us-east", "eu-west"
SERVERS = {"labelSelectors": {"app": "postgres"}, "namespaces": [postgres.NAMESPACE]}
PAYLOAD = "x" * 1000
BATCH = 50
"""Rows a statement under the bandwidth limit (5 statements a second, about 275 kB of WAL): the writer's
round trips slow down with the link (its answers queue behind the WAL), its WAL must not."""
KEPT_UP = 256 * 1024  # lag bytes of a replica keeping up with that load
GROWN = 384 * 1024
MORE = 256 * 1024


@pytest.fixture(scope="module")
def pg_dir(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    """A two-cluster fleet of the module's own with PostgreSQL: its last test promotes the replica."""
    with started_fleet(tmp_path_factory, "pgrepl", clusters=2, postgres=True) as folder:
        yield folder


@pytest.fixture(scope="module")
def state(pg_dir: Path) -> FleetState:
    return FleetState.load(pg_dir)


@pytest.fixture(scope="module")
def secret_password(pg_dir: Path) -> str:
    return postgres.password(pg_dir / "kubeconfig", PRIMARY)


@pytest.fixture(scope="module")
def ctx(pg_dir: Path) -> Iterator[KubeContext]:
    clients = {
        name: config.new_client_from_config(str(pg_dir / "kubeconfig"), context=name)
        for name in (PRIMARY, REPLICA)
    }
    yield KubeContext(clients)
    for api_client in clients.values():
        api_client.close()


@pytest.fixture(scope="module")
def primary(state: FleetState, secret_password: str) -> Iterator[psycopg.Connection]:
    with postgres.connect(state, PRIMARY, secret_password) as connection:
        connection.execute("create table ticks (id bigserial primary key, payload text not null)")
        yield connection


@pytest.fixture(scope="module")
def replica(
    state: FleetState, secret_password: str, primary: psycopg.Connection
) -> Iterator[psycopg.Connection]:
    with postgres.connect(state, REPLICA, secret_password) as connection:
        yield connection


@contextmanager
def writing(
    state: FleetState, secret_password: str, rows: int = 1, per_s: float = 100
) -> Iterator[list[int]]:
    """Statements of `rows` rows written to the primary, `per_s` a second at most (by default about 110 kB
    of WAL a second), on a connection of their own, until the block ends; yields the count of committed
    statements (one item)."""
    committed, stop, errors = [0], threading.Event(), []

    def write() -> None:
        try:
            with postgres.connect(state, PRIMARY, secret_password) as connection:
                while not stop.wait(1 / per_s):
                    connection.execute(
                        "insert into ticks (payload) select %s from generate_series(1, %s)", (PAYLOAD, rows)
                    )
                    committed[0] += 1
        except psycopg.Error as error:
            errors.append(error)

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    try:
        wait_for(lambda: committed[0] >= 3 or errors, 10, "the writer's first commits")
        yield committed
    finally:
        stop.set()
        writer.join(30)
    assert not errors, f"the writer failed: {errors[0]}"


def lag(primary: psycopg.Connection, replica: psycopg.Connection) -> int:
    return pgreplication.lag_bytes(primary, replica)


def caught_up(primary: psycopg.Connection, replica: psycopg.Connection, position: int) -> bool:
    return (pgreplication.replayed_lsn(replica) or 0) >= position


def holds(replica: psycopg.Connection, payload: str) -> bool:
    """Whether the replica has the row (False while even the table has not reached it)."""
    try:
        return bool(replica.execute("select 1 from ticks where payload = %s", (payload,)).fetchone())
    except psycopg.errors.UndefinedTable:
        return False


def test_the_replica_streams_from_the_primary_through_its_ingress(
    state: FleetState, primary: psycopg.Connection, replica: psycopg.Connection
) -> None:
    standbys = pgreplication.standbys(primary)
    assert [(s.application_name, s.state, s.sync_state) for s in standbys] == [
        (REPLICA, "streaming", "async")
    ], "asynchronous by default, the replica named by its cluster"
    via = primary.execute("select host(client_addr) from pg_stat_replication").fetchone()[0]
    assert via == postgres.endpoint(state, PRIMARY)[0], "the replica reaches the primary through the ingress"
    marker = uuid.uuid4().hex
    primary.execute("insert into ticks (payload) values (%s)", (marker,))
    wait_for(lambda: holds(replica, marker), 10, "the row written on the primary on the replica")
    assert pgreplication.in_recovery(replica)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replica.execute("insert into ticks (payload) values ('refused')")


def test_lag_grows_while_the_replication_path_is_cut_and_recovers_after(
    state: FleetState,
    secret_password: str,
    ctx: KubeContext,
    primary: psycopg.Connection,
    replica: psycopg.Connection,
) -> None:
    cut = NetworkChaosFault(
        targets=(REPLICA,),
        namespace=postgres.NAMESPACE,
        spec={
            "action": "partition",
            "mode": "all",
            "direction": "both",
            "selector": SERVERS,
            "externalTargets": [f"{postgres.endpoint(state, PRIMARY)[0]}/32"],
            "duration": "5m",
        },
    )
    with writing(state, secret_password):
        wait_for(lambda: lag(primary, replica) < KEPT_UP, 20, "the replica to keep up before the cut")
        cut.inject(ctx)  # returns once Chaos Mesh's record says the drop rules are in the replica's pod
        try:
            first = wait_for(lambda: (n := lag(primary, replica)) > GROWN and n, 20, "the lag to grow")
            replayed = pgreplication.replayed_lsn(replica)
            wait_for(lambda: lag(primary, replica) > first + MORE, 20, "the lag to keep growing")
            assert pgreplication.replayed_lsn(replica) == replayed, "the replica replayed across the cut"
        finally:
            cut.revert(ctx)
        healed = pgreplication.current_lsn(primary)
        wait_for(lambda: caught_up(primary, replica, healed), 45, "the replica to catch up after the heal")


def test_lag_grows_under_a_bandwidth_limit_and_recovers_after(
    state: FleetState,
    secret_password: str,
    ctx: KubeContext,
    primary: psycopg.Connection,
    replica: psycopg.Connection,
) -> None:
    limit = NetworkChaosFault(
        targets=(PRIMARY,),
        namespace=postgres.NAMESPACE,
        spec={
            "action": "bandwidth",
            "mode": "all",
            "selector": SERVERS,
            "bandwidth": {"rate": "256kbps", "limit": 20000, "buffer": 10000},
            "duration": "5m",
        },
    )
    with writing(state, secret_password, BATCH, 5):
        wait_for(lambda: lag(primary, replica) < KEPT_UP, 20, "the replica to keep up before the limit")
        limit.inject(ctx)  # returns once Chaos Mesh's record says the primary's egress is limited
        try:
            first = wait_for(lambda: (n := lag(primary, replica)) > GROWN and n, 20, "the lag to grow")
            replayed = pgreplication.replayed_lsn(replica) or 0
            wait_for(lambda: lag(primary, replica) > first + MORE, 20, "the lag to keep growing")
            wait_for(
                lambda: (pgreplication.replayed_lsn(replica) or 0) > replayed,
                20,
                "the replica to go on replaying over the slow link (a slow link, not a cut one)",
            )
        finally:
            limit.revert(ctx)
        lifted = pgreplication.current_lsn(primary)
        wait_for(lambda: caught_up(primary, replica, lifted), 45, "the replica to catch up after the limit")


def sync_states(state: FleetState, secret_password: str) -> dict[str, str]:
    """The primary's standbys and their sync_state, {} while it does not answer (restarting)."""
    try:
        with postgres.connect(state, PRIMARY, secret_password) as connection:
            return {s.application_name: s.sync_state for s in pgreplication.standbys(connection)}
    except psycopg.OperationalError:
        return {}


def test_synchronous_replication_is_the_apps_setting(
    state: FleetState, secret_password: str, ctx: KubeContext, replica: psycopg.Connection
) -> None:
    """The ConfigMap postgres-replication of fixtures/apps/postgres.yaml sets it; a restarted primary (its
    StatefulSet makes a new pod) takes it up: with remote_apply a commit returns once the replica shows it."""
    core = client.CoreV1Api(ctx.api_client(PRIMARY))
    settings = {"SYNCHRONOUS_STANDBY_NAMES": f'FIRST 1 ("{REPLICA}")', "SYNCHRONOUS_COMMIT": "remote_apply"}
    core.patch_namespaced_config_map("postgres-replication", postgres.NAMESPACE, {"data": settings})
    core.delete_namespaced_pod("postgres-0", postgres.NAMESPACE)
    wait_for(
        lambda: sync_states(state, secret_password) == {REPLICA: "sync"},
        90,
        "the restarted primary to stream to its synchronous replica",
    )
    with postgres.connect(state, PRIMARY, secret_password) as connection:
        assert connection.execute("show synchronous_commit").fetchone() == ("remote_apply",)
        marker = uuid.uuid4().hex
        connection.execute("insert into ticks (payload) values (%s)", (marker,))
    assert holds(replica, marker), "a commit acknowledged before the synchronous replica applied it"


def app_call(url: str, method: str = "GET", body: object = None) -> tuple[int, dict, str]:
    """(status, JSON body, X-Served-By) of one request to the sample app."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers["X-Served-By"]
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read()), error.headers["X-Served-By"]


def test_the_sample_app_keeps_its_orders_in_the_clusters_postgresql(
    state: FleetState, secret_password: str, replica: psycopg.Connection
) -> None:
    """Orders written through us-east's app (its ingress) are rows of the primary's table orders, read
    through eu-west's app from its replica; eu-west's app refuses writes while its database is in
    recovery, with the app's usual 503 not primary. (The primary restarted in the test before: a
    connection of its own.)"""
    east, west = (f"http://{postgres.endpoint(state, c)[0]}:{apps.HTTP_PORT}" for c in (PRIMARY, REPLICA))
    stream, took = f"pg-{uuid.uuid4().hex[:8]}", []
    for seq in range(1, 51):
        started = time.monotonic()
        body = {"seq": seq, "payload": f"o{seq}", "stream": stream}
        done, order, served_by = app_call(f"{east}/orders", "POST", body)
        took.append(time.monotonic() - started)
        assert done == 201 and order["cluster"] == PRIMARY and served_by.startswith(f"{PRIMARY}/"), order
    query = "select seq, payload, cluster from orders where stream = %s order by seq"
    with postgres.connect(state, PRIMARY, secret_password) as primary:
        rows = primary.execute(query, [stream]).fetchall()
    assert rows == [(seq, f"o{seq}", PRIMARY) for seq in range(1, 51)]
    wait_for(
        lambda: app_call(f"{west}/orders/50?stream={stream}")[0] == 200, 10, "the last order on eu-west's app"
    )
    done, page, served_by = app_call(f"{west}/orders?since=0&limit=1000&stream={stream}")
    assert done == 200 and [o["seq"] for o in page["orders"]] == list(range(1, 51))
    assert served_by.startswith(f"{REPLICA}/")
    done, refused, _ = app_call(f"{west}/orders", "POST", {"seq": 51, "payload": "o51", "stream": stream})
    assert done == 503 and (refused["error"], refused["role"]) == ("not primary", "replica"), refused
    assert not replica.execute("select 1 from orders where stream = %s and seq = 51", [stream]).fetchone()
    statuses = {c: app_call(f"{url}/status")[1] for c, url in ((PRIMARY, east), (REPLICA, west))}
    assert statuses[PRIMARY]["role"] == "primary" and statuses[PRIMARY]["fenced"] is False
    assert statuses[REPLICA]["database"]["in_recovery"] is True
    print(
        f"\norders through the app on PostgreSQL (fleet, {len(took)} writes): median"
        f" {statistics.median(took) * 1000:.1f} ms, max {max(took) * 1000:.1f} ms"
    )


def read_only(state: FleetState, secret_password: str, cluster: str) -> bool | None:
    """Whether a new session on the cluster's server is read-only; None when the server does not answer."""
    try:
        with postgres.connect(state, cluster, secret_password) as connection:
            return connection.execute("show default_transaction_read_only").fetchone() == ("on",)
    except psycopg.Error:
        return None


def test_a_primary_cut_off_from_the_fleet_fences_itself_and_takes_writes_again_once_it_answers(
    pg_dir: Path, state: FleetState, secret_password: str, primary: psycopg.Connection
) -> None:
    """The fencer of fixtures/apps/postgres.yaml: while us-east is partitioned from the rest of the fleet
    (the host still reaches both sides), its primary sets itself read-only within its fence timeout (5 s,
    plus a round of asking its peer) and refuses a write; once the partition heals and its replica answers,
    it takes writes again. (It ends the sessions it had: the module's connection to the primary is gone.)"""
    assert read_only(state, secret_password, PRIMARY) is False
    supervisor.partition(pg_dir, [PRIMARY], "pgfence")
    try:
        started = time.monotonic()
        wait_for(lambda: read_only(state, secret_password, PRIMARY), 30, "us-east's primary read-only")
        fenced_after = time.monotonic() - started
        refused = pytest.raises(psycopg.errors.ReadOnlySqlTransaction)
        with postgres.connect(state, PRIMARY, secret_password) as connection, refused:
            connection.execute("insert into ticks (payload) values ('while cut off')")
    finally:
        supervisor.heal(pg_dir, "pgfence")
    healed = time.monotonic()
    wait_for(lambda: read_only(state, secret_password, PRIMARY) is False, 30, "us-east's primary writable")
    with postgres.connect(state, PRIMARY, secret_password) as connection:
        connection.execute("insert into ticks (payload) values ('after the heal')")
    print(
        f"\nfenced {fenced_after:.1f} s after the partition;"
        f" writable {time.monotonic() - healed:.1f} s after the heal"
    )


def read_only_in_file(state: FleetState, secret_password: str, cluster: str) -> bool:
    """Whether the server's postgresql.auto.conf sets default_transaction_read_only on."""
    query = (
        "select count(*) from pg_file_settings"
        " where name = 'default_transaction_read_only' and setting = 'on'"
    )
    with postgres.connect(state, cluster, secret_password) as connection:
        return connection.execute(query).fetchone() != (0,)


def test_a_replica_drops_a_read_only_setting_its_base_backup_copied(
    state: FleetState, secret_password: str, replica: psycopg.Connection
) -> None:
    """A replica copied from a primary the runbook had set read-only for a switchover holds that setting,
    unmarked (not the fencer's own): its fencer drops it, or once promoted the replica refuses every write
    (the demo's partition drill failed over to such a replica, and the next drills found no primary taking
    writes). Set here as the copy would carry it."""
    with postgres.connect(state, REPLICA, secret_password) as connection:
        connection.execute("alter system set default_transaction_read_only = on")
        connection.execute("select pg_reload_conf()")
    assert pgreplication.in_recovery(replica)
    wait_for(
        lambda: not read_only_in_file(state, secret_password, REPLICA),
        30,
        "eu-west's replica dropping the copied read-only setting",
    )


def test_pg_promote_makes_the_replica_writable(replica: psycopg.Connection) -> None:
    """Last: the fleet's replica is a primary afterwards."""
    assert replica.execute("select pg_promote(wait => true, wait_seconds => 30)").fetchone() == (True,)
    assert not pgreplication.in_recovery(replica)
    replica.execute("insert into ticks (payload) values ('after promotion')")
    assert replica.execute("select count(*) from ticks where payload = 'after promotion'").fetchone() == (1,)
