"""Faults as a Chaos Toolkit action/rollback pair (harness.faults.actions): what is refused before any
cluster is touched (tests/integration/test_actions.py runs them on a fleet)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from harness import steadystate
from harness.config import load_fleet
from harness.errors import FleetDrillError
from harness.faults import actions
from harness.faults.actions import inject_fault, revert_fault
from harness.fleet import FleetAccess
from harness.run import DrillRun, RunSettings
from harness.steadystate import Snapshot


@pytest.fixture
def fleet(tmp_path: Path) -> str:
    path = tmp_path / "fleet.yaml"
    clusters = [{"name": "east", "region": "r1"}, {"name": "west", "region": "r2"}]
    path.write_text(yaml.safe_dump({"name": "unit", "clusters": clusters, "safety": {"allowlist": ["east"]}}))
    return str(path)


def test_a_built_in_kind_is_found_by_name_and_checks_its_parameters(fleet: str, tmp_path: Path) -> None:
    with pytest.raises(
        FleetDrillError, match=r"cannot rebuild fault deny-all-policy on east .*expected direction"
    ):
        inject_fault("deny-all-policy", ["east"], fleet, {"namespace": "shop", "direction": "up"})
    with pytest.raises(FleetDrillError, match="unknown fault kind 'no-such-kind'"):
        revert_fault("no-such-kind", ["east"], fleet, ledger=str(tmp_path / "ledger.json"))


def test_a_rollback_that_leaves_the_fleet_not_as_found_fails_naming_it(
    fleet: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The rollback ends the action's run: the fleet not as found is its failed verdict, recorded, and raised
    so Chaos Toolkit sees the rollback fail."""
    left = ["shop: the global endpoint does not answer as before"]
    monkeypatch.setattr(steadystate, "take", lambda fleet, access: Snapshot({}, {}))
    monkeypatch.setattr(steadystate, "wait_as_found", lambda fleet, access, found, deadline_s: left)
    loaded = load_fleet(fleet)
    access = FleetAccess(loaded)
    run = DrillRun("action", loaded, access, RunSettings("run", tmp_path / "ledger.json", tmp_path / "run"))
    block = ExitStack()
    block.enter_context(run.running(catch_signals=False))
    with pytest.raises(FleetDrillError, match=f"not as the drill found it .*: {left[0]}"):
        actions._end(actions._OpenRun(run, block, access), None)
    written = json.loads((tmp_path / "run" / "record.json").read_text())
    assert written["verdict"] == "fail" and left[0] in written["message"], written["message"]
