"""The pure parts of the orders service on PostgreSQL (harness.localfleet.sampleapp_pg): the database's
state as the app's role, the peer that blocks a promotion, the client's defaults, the configuration. The
app itself runs against real PostgreSQL in tests/integration/test_orders_postgres.py."""

import psycopg
import pytest

from harness.localfleet.sampleapp import Config
from harness.localfleet.sampleapp_pg import DatabaseState, conninfo, order_row, writable_peer


def test_the_database_state_is_the_apps_role_and_why_it_refuses_writes() -> None:
    assert (DatabaseState(False, False, 3).role, DatabaseState(False, False, 3).refusal) == ("primary", None)
    replica = DatabaseState(True, True, 3)  # a hot standby's transactions are read-only too
    assert replica.role == "replica" and "recovery" in (replica.refusal or "")
    switched = DatabaseState(False, True, 3)
    assert switched.role == "primary" and "read-only" in (switched.refusal or "")


def test_a_promotion_waits_for_a_peer_answering_as_a_writable_primary() -> None:
    writer = (200, {"role": "primary", "fenced": False})
    assert writable_peer({"a": None, "b": (200, {"role": "replica", "fenced": False}), "c": writer}) == "c"
    assert writable_peer({"a": (200, {"role": "primary", "fenced": True})}) is None, "read-only: fenced"
    assert writable_peer({"a": (503, {"role": "primary", "fenced": False})}) is None
    assert writable_peer({"a": (200, {"role": "unknown", "fenced": True})}) is None
    assert writable_peer({}) is None


def test_the_client_fails_fast_unless_the_url_says_otherwise() -> None:
    given = psycopg.conninfo.conninfo_to_dict(conninfo("host=10.0.0.1 dbname=postgres connect_timeout=9"))
    assert given["connect_timeout"] == "9" and given["host"] == "10.0.0.1"
    assert given["tcp_user_timeout"] == "3000" and given["options"] == "-c statement_timeout=3000"
    url = psycopg.conninfo.conninfo_to_dict(conninfo("postgresql://postgres@db:5432/postgres"))
    assert (url["host"], url["port"], url["connect_timeout"]) == ("db", "5432", "2")


def test_an_order_row_is_the_apis_order() -> None:
    row = ("default", 4, {"sku": "a"}, 2, "eu-west", 1.5)
    assert order_row(row) == {
        "stream": "default",
        "seq": 4,
        "payload": {"sku": "a"},
        "epoch": 2,
        "cluster": "eu-west",
        "at": 1.5,
    }


def test_an_app_given_a_database_needs_no_data_folder() -> None:
    cfg = Config.from_env({"ORDERS_CLUSTER": "us-east", "ORDERS_DATABASE_URL": "host=db"})
    assert (cfg.database, cfg.data_dir) == ("host=db", None)
    assert Config.from_env({"ORDERS_CLUSTER": "c", "ORDERS_DATA_DIR": "/d"}).database is None
    with pytest.raises(ValueError, match=r"^ORDERS_DATA_DIR must be set$"):
        Config.from_env({"ORDERS_CLUSTER": "us-east", "ORDERS_DATABASE_URL": ""})
