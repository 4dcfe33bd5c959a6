"""Faults as a Chaos Toolkit action/rollback pair (harness.faults.actions): what is refused before any
cluster is touched (tests/integration/test_actions.py runs them on a fleet)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import FleetDrillError
from harness.faults.actions import inject_fault, revert_fault


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
