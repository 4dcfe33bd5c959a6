"""Losing the primary cluster for real: traffic fails over, acked writes inside the lag are lost, and
the old primary comes back fenced. It breaks its fleet, so it brings a fleet of its own."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import load_fleet
from harness.localfleet import groundtruth, supervisor
from tests.conftest import run_cli, started_fleet, wait_for

STREAM = "failover-test"


@pytest.fixture(scope="module")
def own_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    """A fleet of this module's own: its tests break it."""
    with started_fleet(tmp_path_factory, "failover-fleet") as folder:
        yield folder


def _call(url: str, body: dict | None = None) -> tuple[int, dict, str]:
    """(status, JSON body, X-Served-By) of a GET or, with a body, a POST; status 0 when unreachable."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, _json(response.read()), response.headers.get("X-Served-By", "")
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read()), error.headers.get("X-Served-By", "")
    except OSError:
        return 0, {}, ""


def _ground_truth_says_so(folder: Path, lost_at: dict, acked: int, lost: int) -> None:
    """The ground truth logged every acked write as served by us-east, and eu-west short of exactly the
    lost ones once the primary was gone."""

    def replication_after_loss() -> list[dict]:
        truth = groundtruth.read(folder / groundtruth.FILE)
        return [
            e["clusters"]
            for e in truth
            if e["event"] == "replication" and e["mono"] > lost_at["mono"] and "us-east" not in e["clusters"]
        ]

    after = wait_for(replication_after_loss, 10, "the ground truth to log positions without us-east")
    truth = groundtruth.read(folder / groundtruth.FILE)
    writes = [
        e for e in truth if e["event"] == "request" and e["method"] == "POST" and e["mono"] < lost_at["mono"]
    ]
    assert len(writes) == acked and all(e["status"] == 201 and e["cluster"] == "us-east" for e in writes), (
        "the ground truth logs each acked global write with the cluster that served it"
    )
    before = [
        e["clusters"]["us-east"]
        for e in truth
        if e["event"] == "replication" and e["mono"] < lost_at["mono"] and "us-east" in e["clusters"]
    ]
    assert before[-1]["role"] == "primary", "before the loss us-east was the primary"
    assert after[0]["eu-west"]["position"] == acked - lost, (
        f"eu-west holds exactly the {acked - lost} writes that survived, got {after[0]['eu-west']}"
    )


def _json(body: bytes) -> dict:
    """The JSON body of the app; a proxy's plain-text error becomes {"text": ...}."""
    try:
        return json.loads(body)
    except ValueError:
        return {"text": body.decode(errors="replace")}


def test_losing_the_primary_fails_over_loses_acked_writes_and_fences_the_old_primary(own_fleet: Path) -> None:
    app = load_fleet(own_fleet / "fleet.yaml").app("orders")
    writes = app.global_endpoint.rstrip("/") + "/orders"
    acked = [
        seq for seq in range(1, 41) if _call(writes, {"seq": seq, "payload": "x", "stream": STREAM})[0] == 201
    ]
    assert len(acked) == 40, "the healthy fleet acknowledges every write"
    supervisor.stop_cluster(own_fleet, "us-east")  # at once: the newest writes are still inside the lag

    def served_by_eu_west() -> bool:
        return _call(app.global_endpoint.rstrip("/") + "/readyz")[2].startswith("eu-west/")

    wait_for(served_by_eu_west, 10, "the global endpoint to fail over to eu-west")

    truth = groundtruth.read(own_fleet / groundtruth.FILE)  # stop_cluster logged the loss before it began
    lost_at = next(e for e in truth if e["event"] == "fault" and e["fault"] == "cluster-lost")

    def first_move_after_the_loss() -> dict | None:
        truth = groundtruth.read(own_fleet / groundtruth.FILE)
        return next((e for e in truth if e["event"] == "serving" and e["mono"] > lost_at["mono"]), None)

    moved = wait_for(first_move_after_the_loss, 10, "the ground truth to record a serving change (2 x 1 s)")
    assert lost_at["cluster"] == "us-east" and moved["serving"] == ["eu-west"], (
        f"the first serving change logged after losing us-east is to eu-west alone, got {moved}"
    )

    eu_west = app.endpoints["eu-west"].rstrip("/")
    assert _call(f"{eu_west}/promote", {})[0] == 200
    status, listed, _ = _call(f"{eu_west}/orders?since=0&limit=1000&stream={STREAM}")
    present = {order["seq"] for order in listed["orders"]}
    lost = sorted(set(acked) - present)
    assert status == 200 and lost, "writes acknowledged inside the replication lag are gone with the primary"
    assert lost == acked[-len(lost) :], "what is lost is the newest writes, not a random hole"
    _ground_truth_says_so(own_fleet, lost_at, len(acked), len(lost))
    assert _call(writes, {"seq": 1000, "payload": "after", "stream": STREAM})[0] == 201, (
        "the new primary writes"
    )

    run_cli("fleet", "start", "us-east", "--dir", own_fleet)
    us_east = app.endpoints["us-east"].rstrip("/")
    wait_for(lambda: _call(f"{us_east}/status")[0] == 200, 60, "the old primary to serve again")
    status, body, _ = _call(f"{us_east}/orders", {"seq": 2000, "payload": "split brain?", "stream": STREAM})
    assert status == 503, f"the returning old primary must refuse writes, got {status} {body}"
