"""Faults as a Chaos Toolkit action/rollback pair (harness.faults.actions), run through chaoslib's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from chaoslib.activity import run_activity
from chaoslib.exceptions import ActivityFailed

from harness.errors import FleetDrillError
from harness.faults import Ledger
from harness.faults.actions import inject_fault, revert_fault


@pytest.fixture
def fleet(tmp_path: Path) -> str:
    path = tmp_path / "fleet.yaml"
    clusters = [{"name": "east", "region": "r1"}, {"name": "west", "region": "r2"}]
    path.write_text(yaml.safe_dump({"name": "unit", "clusters": clusters, "safety": {"allowlist": ["east"]}}))
    return str(path)


def activity(func: str, fleet: str, tmp_path: Path, target: str) -> dict:
    arguments = {
        "kind": "test-file",
        "targets": [target],
        "fleet": fleet,
        "params": {"folder": str(tmp_path)},
        "ledger": str(tmp_path / "ledger.json"),
    }
    provider = {"type": "python", "module": "harness.faults.actions", "func": func, "arguments": arguments}
    return {"type": "action", "name": func, "provider": provider}


def test_chaostoolkit_injects_through_the_ledger_and_rolls_back(fleet: str, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json")
    record = run_activity(activity("inject_fault", fleet, tmp_path, "east"), {}, {})
    assert record["kind"] == "test-file" and (tmp_path / "east").exists()
    assert [(e.fault["targets"], e.state) for e in ledger.entries()] == [(["east"], "applied")]
    run_activity(activity("revert_fault", fleet, tmp_path, "east"), {}, {})
    assert not (tmp_path / "east").exists() and ledger.entries() == []
    run_activity(activity("revert_fault", fleet, tmp_path, "east"), {}, {})  # harmless twice


def test_the_fleets_safety_rules_refuse_before_the_ledger(fleet: str, tmp_path: Path) -> None:
    with pytest.raises(ActivityFailed, match=r"refused: cluster west .* is not in safety\.allowlist"):
        run_activity(activity("inject_fault", fleet, tmp_path, "west"), {}, {})
    assert not (tmp_path / "west").exists() and Ledger(tmp_path / "ledger.json").entries() == []


def test_a_built_in_kind_is_found_by_name_and_checks_its_parameters(fleet: str, tmp_path: Path) -> None:
    with pytest.raises(
        FleetDrillError, match=r"cannot rebuild fault deny-all-policy on east .*expected direction"
    ):
        inject_fault("deny-all-policy", ["east"], fleet, {"namespace": "shop", "direction": "up"})
    with pytest.raises(FleetDrillError, match="unknown fault kind 'no-such-kind'"):
        revert_fault("no-such-kind", ["east"], fleet, ledger=str(tmp_path / "ledger.json"))
