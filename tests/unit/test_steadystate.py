"""The fleet as a drill found it: what did not come back is named."""

import json
from pathlib import Path
from typing import Any

import pytest

from harness import steadystate
from harness.config import App, Fleet
from harness.fleet import FleetAccess
from harness.run import DrillRun, RunSettings
from harness.sentinels import Attempt
from harness.steadystate import Answer, Snapshot, differences

SENTINELS = {"adapter": "http", "write": {"path": "/orders"}, "read": {"path": "/orders", "items": "orders"}}


def snapshot(answers: dict, unsettled: dict | None = None) -> Snapshot:
    return Snapshot(answers, unsettled or {})


def test_a_fleet_back_as_found_has_no_difference() -> None:
    before = snapshot(
        {("orders", "global"): Answer(True, "us-east")}, {("orders", "us-east"): frozenset({"a"})}
    )
    assert differences(before, before) == []


def test_what_did_not_come_back_is_named() -> None:
    before = snapshot(
        {
            ("orders", "global"): Answer(True, "us-east"),
            ("orders", "eu-west"): Answer(True, "eu-west"),
            ("orders", "ap-south"): Answer(False, None),
        },
        {("orders", "us-east"): frozenset(), ("orders", "eu-west"): frozenset({"old-pending"})},
    )
    now = snapshot(
        {
            ("orders", "global"): Answer(True, "eu-west"),
            ("orders", "eu-west"): Answer(False, None),
            ("orders", "ap-south"): Answer(False, None),
        },
        {("orders", "eu-west"): frozenset({"old-pending", "new-pending"})},
    )
    assert differences(before, now) == [
        "orders: the global endpoint is served by eu-west, not us-east",
        "orders: the eu-west endpoint does not answer as before",
        "orders: us-east's API server does not answer",
        "orders: pods in eu-west Pending or ending: new-pending",
    ]


def test_global_traffic_back_on_an_active_cluster_has_recovered() -> None:
    """Found mid-failover (served by eu-west), ended served by the active us-east: as found or better; served
    by a third cluster, it did not come back."""
    before = Snapshot({("orders", "global"): Answer(True, "eu-west")}, {}, frozenset({"us-east"}))
    assert differences(before, snapshot({("orders", "global"): Answer(True, "us-east")})) == []
    assert differences(before, snapshot({("orders", "global"): Answer(True, "ap-south")})) == [
        "orders: the global endpoint is served by ap-south, not eu-west"
    ]


def test_a_data_path_that_took_writes_and_takes_none_after_is_named() -> None:
    """Found taking sentinel writes, left refusing them (a primary failed back read-only): damage, named with
    the store's answer; one that took none when found need not take any after."""
    acked, refused = Attempt("acked"), Attempt("refused", "session is read-only")
    before = Snapshot({}, {}, writes={"orders": acked, "carts": refused})
    assert differences(before, Snapshot({}, {}, writes={"orders": acked, "carts": refused})) == []
    assert differences(before, Snapshot({}, {}, writes={"orders": refused, "carts": refused})) == [
        "orders: its data path takes no sentinel write as before (refused: session is read-only)"
    ]
    gone = ["orders: its data path takes no sentinel write as before"]
    assert differences(before, Snapshot({}, {})) == gone


def two_apps() -> Fleet:
    """orders declares sentinels, carts none; neither has a cluster endpoint (no pods to list)."""

    def app(name: str, **more: Any) -> dict:
        base = {
            "name": name,
            "namespace": name,
            "workload": f"deployment/{name}",
            "global_endpoint": "http://g/",
        }
        return base | {"objectives": {"availability": 0.9}} | more

    document = {
        "name": "unit",
        "clusters": [{"name": "us-east", "region": "us-east", "role": "active"}],
        "apps": [app("orders", sentinels=SENTINELS), app("carts")],
        "safety": {"allowlist": ["us-east"]},
    }
    return Fleet.model_validate(document)


def answering(app: App, url: str) -> Answer:
    return Answer(True, None)


def test_the_wait_writes_again_until_the_data_path_takes_a_write() -> None:
    """Found taking writes: the wait writes (only where the app declares sentinels) until one is acknowledged,
    or names the data path at its deadline."""
    writes: list[str] = []
    answers = iter([Attempt("acked"), Attempt("refused", "read-only"), Attempt("acked")])

    def write_to(app: App, where_in_file: str) -> Attempt:
        writes.append(f"{app.name} {where_in_file}")
        return next(answers)

    fleet, no_api = two_apps(), None
    found = steadystate.take(fleet, no_api, answering, write_to)
    assert found.writes == {"orders": Attempt("acked")} and writes == ["orders apps[0].sentinels"]
    assert steadystate.wait_as_found(fleet, no_api, found, 5.0, answering, write_to) == []
    assert len(writes) == 3

    def refusing(app: App, where_in_file: str) -> Attempt:
        return Attempt("refused", "read-only")

    assert steadystate.wait_as_found(fleet, no_api, found, 0.0, answering, refusing) == [
        "orders: its data path takes no sentinel write as before (refused: read-only)"
    ]


def test_a_drill_that_leaves_damage_fails_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A drill run whose fleet does not come back as found gets a failed "as found" verdict: a drill that
    passed fails, one that failed anyway names the damage too, and the record says so."""
    left = ["orders: its data path takes no sentinel write as before (refused: read-only)"]
    monkeypatch.setattr(steadystate, "take", lambda fleet, access: Snapshot({}, {}))
    monkeypatch.setattr(steadystate, "wait_as_found", lambda fleet, access, found, deadline_s: left)
    fleet = two_apps()
    for outcome, message in (("passed", ""), ("failed", "not recovered")):
        settings = RunSettings(outcome, tmp_path / "ledger.json", tmp_path / outcome)
        run = DrillRun("drill", fleet, FleetAccess(fleet), settings)
        with run.running() as drill:
            assert drill.verdicts == []
        (verdict,) = drill.verdicts
        assert (verdict.status, verdict.objective, verdict.measured) == ("fail", "as found", left[0])
        recorded, why = run.finish(outcome, message)
        assert recorded == "failed", why
        damage = (
            "the fleet is not as the drill found it 120 s after its faults were reverted "
            f"(safety.as_found_timeout): {left[0]}"
        )
        assert why == "; ".join(filter(None, (message, damage)))
        written = json.loads((tmp_path / outcome / "record.json").read_text())
        assert (written["verdict"], written["message"]) == ("fail", why)
