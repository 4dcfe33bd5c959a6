"""The orders service on real PostgreSQL (Debian's package, tests/postgres.py: a primary and a streaming
replica made with pg_basebackup), no Kubernetes fleet: the app of harness.localfleet.sampleapp given
ORDERS_DATABASE_URL, one instance per server, in-process on 127.0.0.1 (one as `python -m`, as the node
agent runs it). Orders written through the primary's app land in its table orders, are read through the
replica's app, a write to the replica's app is refused; a switchover's read-only primary refuses writes;
the replica's app promotes its database with pg_promote() unless a peer answers as a writable primary.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness.localfleet.sampleapp import Config, Service
from harness.localfleet.sampleapp_pg import PgApp
from tests import postgres
from tests.conftest import wait_for
from tests.postgres import Server, Servers
from tests.unit.test_sampleapp import call, free_port, has, post, status


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


def connect(server: Server) -> psycopg.Connection:
    return psycopg.connect(database_url(server), autocommit=True)


def database_url(server: Server) -> str:
    """The app's database as the superuser over the servers' unix socket (trusted: pg_promote() needs a
    superuser, as the fleet's app has); the app's own user over TCP needs PGPASSWORD."""
    return f"host={server.sockets} port={server.port} dbname={postgres.DATABASE} user=postgres"


def environ(name: str, port: int, server: Server, peers: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "ORDERS_CLUSTER": name,
        "POD_NAME": f"orders-{name}",
        "ORDERS_LISTEN": f"127.0.0.1:{port}",
        "ORDERS_DATABASE_URL": database_url(server),
        "ORDERS_PEERS": ",".join(f"{peer}={url}" for peer, url in (peers or {}).items()),
    }


@pytest.fixture
def apps(primary: Server, replica: Server) -> Iterator[dict[str, str]]:
    """us-east's app on the primary, eu-west's on the replica, each the other's peer; their URLs."""
    ports = {"us-east": free_port(), "eu-west": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    servers = {"us-east": primary, "eu-west": replica}
    running: list[Service] = []
    try:
        for name, port in ports.items():
            peers = {peer: url for peer, url in urls.items() if peer != name}
            app = PgApp(Config.from_env(environ(name, port, servers[name], peers)))
            app.start()
            running.append(app)
        yield urls
    finally:
        for app in running:
            app.close()


def test_orders_land_in_the_primarys_table_are_read_on_the_replica_and_refused_there(
    apps: dict[str, str], primary: Server, replica: Server
) -> None:
    east, west = apps["us-east"], apps["eu-west"]
    assert post(east, 1, {"sku": "a", "n": 2}, stream="pgtest")[:2] == (
        201,
        {"seq": 1, "stream": "pgtest", "epoch": 1, "cluster": "us-east"},
    )
    assert post(east, 1, {"sku": "a", "n": 2}, stream="pgtest")[0] == 200, "the same payload again"
    assert post(east, 1, "another", stream="pgtest")[0] == 409
    with connect(primary) as connection:
        rows = connection.execute(
            "select seq, payload, cluster from orders where stream = 'pgtest'"
        ).fetchall()
    assert rows == [(1, {"sku": "a", "n": 2}, "us-east")], "the order is a row of the primary's table"
    wait_for(lambda: call(f"{west}/orders/1?stream=pgtest")[0] == 200, 10, "the order read on the replica")
    done, order, served_by = call(f"{west}/orders?since=0&stream=pgtest")
    assert done == 200 and [o["payload"] for o in order["orders"]] == [{"sku": "a", "n": 2}]
    assert served_by == "eu-west/orders-eu-west"
    refused, why, _ = post(west, 2, "p", stream="pgtest")
    assert refused == 503 and why["error"] == "not primary" and why["role"] == "replica", why
    assert "recovery" in why["reason"]
    assert not has(east, 2) and status(west)["role"] == "replica" and status(east)["role"] == "primary"
    assert status(east)["last_seq"]["pgtest"] == 1


def test_a_read_only_primary_refuses_writes_as_a_switchover_leaves_it(
    apps: dict[str, str], primary: Server
) -> None:
    """pgfailover's switchover sets the old primary read-only before it promotes the new one (which had
    taken writes: its table exists, whatever ran before this test)."""
    east = apps["us-east"]
    assert post(east, 1, "before", stream="ro-before")[0] == 201
    with connect(primary) as connection:
        connection.execute("alter system set default_transaction_read_only = on")
        connection.execute("select pg_reload_conf()")
        try:
            wait_for(lambda: post(east, 10, "p", stream="ro")[0] == 503, 10, "the write refused")
            refused = post(east, 10, "p", stream="ro")[1]
            assert refused["error"] == "not primary" and "read-only" in refused["reason"], refused
            fenced = status(east)
            assert (fenced["role"], fenced["fenced"]) == ("primary", True), fenced
        finally:
            connection.execute("alter system reset default_transaction_read_only")
            connection.execute("select pg_reload_conf()")
    wait_for(lambda: post(east, 10, "p", stream="ro")[0] == 201, 10, "writes taken again")


def test_the_first_request_after_the_database_restarted_is_answered(
    apps: dict[str, str], servers: Servers, primary: Server
) -> None:
    """The app's kept connections die with the server: the request that finds one dead is answered on a
    new connection, not refused."""
    east = apps["us-east"]
    assert post(east, 1, "before", stream="restart")[0] == 201
    assert status(east)["role"] == "primary"  # a second kept connection
    servers.stop(primary)
    servers.start(primary)
    assert post(east, 2, "after", stream="restart")[0] == 201
    assert status(east)["last_seq"]["restart"] == 2


def test_an_app_without_its_database_answers_and_says_why_it_cannot_serve_orders() -> None:
    port = free_port()
    env = {
        "ORDERS_CLUSTER": "us-east",
        "ORDERS_LISTEN": f"127.0.0.1:{port}",
        "ORDERS_DATABASE_URL": f"host=127.0.0.1 port={free_port()} dbname=shop user=nobody",
    }
    app = PgApp(Config.from_env(env))
    app.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert call(f"{url}/readyz")[0] == 200, "the app answers: its database is not its readiness"
        done, why, _ = post(url, 1)
        assert done == 503 and why["error"].startswith("database unavailable: "), why
        assert call(f"{url}/orders/1")[0] == 503
        unknown = status(url)
        assert (unknown["role"], unknown["fenced"], unknown["epoch"]) == ("unknown", True, 0), unknown
    finally:
        app.close()


def test_the_replicas_app_promotes_its_database_only_once_no_writable_primary_answers(
    apps: dict[str, str], primary: Server, replica: Server, tmp_path: Path
) -> None:
    """Last: the module's replica is a primary afterwards. The replica's app runs as `python -m`, as the
    node agent runs it (psycopg imports in the node agent's interpreter)."""
    east, west = apps["us-east"], apps["eu-west"]
    refused, why, _ = call(f"{west}/promote", "POST", {"epoch": 7})
    assert refused == 409 and why["error"].startswith("us-east answers as a writable primary"), why
    with connect(replica) as connection:
        assert connection.execute("select pg_is_in_recovery()").fetchone() == (True,), "not promoted"
    port = free_port()
    gone = f"http://127.0.0.1:{free_port()}"  # the primary's cluster lost: its app does not answer
    with (tmp_path / "orders.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness.localfleet.sampleapp"],
            env={**os.environ, **environ("eu-west", port, replica, {"us-east": gone})},
            stdout=log,
            stderr=log,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(url), 20, "the app run as a process answering")
        assert status(url)["role"] == "replica"
        started = time.monotonic()
        done, promoted, _ = call(f"{url}/promote", "POST", {"epoch": 7})
        took = time.monotonic() - started
        assert done == 200 and (promoted["role"], promoted["epoch"]) == ("primary", 2), promoted
        with connect(replica) as connection:
            assert connection.execute("select pg_is_in_recovery()").fetchone() == (False,)
        assert post(url, 1, "after promotion", stream="promoted")[:2] == (
            201,
            {"seq": 1, "stream": "promoted", "epoch": 2, "cluster": "eu-west"},
        )
        assert call(f"{url}/promote", "POST", {})[1]["epoch"] == 2, "a primary already: nothing done"
        print(f"\npromote through the app (pg_promote, its peer unreachable): {took:.2f} s")
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0, (tmp_path / "orders.log").read_text()
    assert status(east)["role"] == "primary", "the old primary's own database is still a primary here"


def answers(url: str) -> bool:
    try:
        return call(f"{url}/healthz")[0] == 200
    except OSError:
        return False
