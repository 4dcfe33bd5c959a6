"""Replication positions as the servers print them, and the TCP pass-through the replicas reach the primary
through (against local sockets)."""

import asyncio

import pytest

from harness.localfleet.postgres import role_settings
from harness.localfleet.tcpingress import Relay
from harness.pgreplication import lsn
from harness.samples import ReplicaLag


def test_a_wal_position_is_its_byte_offset() -> None:
    assert lsn("0/3000148") == 0x3000148
    assert lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert lsn("16/B374D848") - lsn("16/B374D000") == 0x848


def test_a_value_that_is_no_wal_position_is_refused() -> None:
    with pytest.raises(ValueError, match="not a WAL position"):
        lsn("3000148")


def test_the_primary_cluster_runs_the_primary_and_every_other_a_replica_of_it() -> None:
    assert role_settings("us-east", True, "10.0.0.3", ["10.0.1.3"], [])["data"]["ROLE"] == "primary"
    replica = role_settings("eu-west", False, "10.0.0.3", ["10.0.0.3"], ["10.0.2.3:80"])["data"]
    assert replica == {
        "ROLE": "replica",
        "CLUSTER": "eu-west",
        "PRIMARY_HOST": "10.0.0.3",
        "PRIMARY_PORT": "5432",
        "PEERS": "10.0.0.3",
        "WITNESSES": "10.0.2.3:80",
        "FENCING": "on",
    }


def test_a_replicas_lag_says_how_far_behind_which_primary_and_its_link() -> None:
    lag = ReplicaLag("eu-west", "us-east", 10.42, 1_300_000, "not streaming")
    assert lag.describe() == "eu-west 10.4 s behind us-east (1.3 MB of WAL, not streaming)"
    unknown = ReplicaLag("eu-west", None, None, None, "no answer", "OperationalError: timeout")
    assert unknown.describe() == "eu-west unknown (OperationalError: timeout)"


async def _relayed(payload: bytes) -> tuple[bytes, bytes]:
    """What an upstream received through the relay (to the client's half-close), and what the client
    received back (to the upstream's close)."""
    received = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to the relayed half-close
        received.set_result(data)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    relay = Relay(asyncio.get_running_loop(), "ns/svc", None)
    relay.endpoints = [("127.0.0.1", 1), server.sockets[0].getsockname()[:2]]  # the first refuses
    front = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    async with server, front:
        reader, writer = await asyncio.open_connection(*front.sockets[0].getsockname()[:2])
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(10):
            back = await reader.read()
            got = await received
        writer.close()
    return got, back


def test_the_relay_passes_bytes_both_ways_and_a_half_close_on_to_a_ready_endpoint() -> None:
    payload = bytes(range(256)) * 1024
    got, back = asyncio.run(_relayed(payload))
    assert got == payload
    assert back == payload.upper()
