"""The infrastructure steps are declared once (harness.infra.registry): a step registered there alone is a
field of both providers' settings, checked, documented in the schema, and run with its values and its
lose step's handle."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import ChaosToolkitSettings, CommandSettings, fleet_json_schema, load_fleet
from harness.errors import ConfigError, FleetDrillError
from harness.infra import registry
from harness.infra.command import CommandProvider
from harness.infra.localfleet import LocalFleetProvider
from harness.infra.providers import provider_for
from harness.infra.registry import ONE_CLUSTER, STEPS, Step, Target

LOSE_ZONE = Step("lose_zone", ONE_CLUSTER, "Take a zone away", "restore_zone", hands_over=True)
RESTORE_ZONE = Step("restore_zone", (*ONE_CLUSTER, "handle"), "Bring a zone back")


@pytest.fixture
def zone_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """lose_zone and restore_zone registered for one test only."""
    for step in (LOSE_ZONE, RESTORE_ZONE):
        monkeypatch.setitem(STEPS, step.name, step)


def fleet_file(tmp_path: Path, settings: dict) -> Path:
    path = tmp_path / "fleet.yaml"
    clusters = [{"name": "east", "region": "us-east", "zones": ["a", "b"]}]
    data = {
        "name": "unit",
        "clusters": clusters,
        "infrastructure": {"provider": "command", "settings": settings},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_registered_step_is_a_setting_of_each_provider() -> None:
    for base in (CommandSettings, ChaosToolkitSettings):
        fields = set(base.with_steps().model_fields)
        assert set(STEPS) <= fields and not fields - set(STEPS) - set(base.model_fields)
    infrastructure = fleet_json_schema()["$defs"]["Infrastructure"]
    for rule in infrastructure["allOf"]:
        assert set(STEPS) <= set(rule["then"]["properties"]["settings"]["properties"])


def test_each_lose_step_hands_over_to_a_registered_restore_step_that_takes_the_handle() -> None:
    for step in registry.handing_over():
        assert step.restored_by in STEPS and "handle" in STEPS[step.restored_by].placeholders
        assert registry.restoring(STEPS[step.restored_by]) == step


def test_a_step_registered_in_one_place_is_checked_documented_and_run(
    tmp_path: Path, zone_steps: None
) -> None:
    log = tmp_path / "calls"
    fake = tmp_path / "cloud.sh"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "ZONE-EXP-$2"\n')
    fake.chmod(0o755)
    settings = {
        "lose_zone": [str(fake), "lose", "{cluster}", "{zones}"],
        "restore_zone": [str(fake), "restore", "{cluster}", "{handle}"],
    }
    provider = provider_for(load_fleet(fleet_file(tmp_path, settings)))
    assert isinstance(provider, CommandProvider)
    handle = provider.run(LOSE_ZONE, Target(cluster="east"))
    assert handle == "ZONE-EXP-east"
    assert provider.run(RESTORE_ZONE, Target(cluster="east"), handle) is None
    assert log.read_text().splitlines() == ["lose east a,b", "restore east ZONE-EXP-east"]

    settings["restore_zone"] = [str(fake), "{node}"]
    with pytest.raises(
        ConfigError, match=r"infrastructure.settings.restore_zone\[1\]: expected text whose only"
    ):
        load_fleet(fleet_file(tmp_path, settings))
    described = fleet_json_schema()["$defs"]["Infrastructure"]["allOf"][0]["then"]["properties"]["settings"]
    assert "restore_zone's {handle}" in described["properties"]["lose_zone"]["description"]


def test_a_chaostoolkit_restore_step_registered_so_is_a_rollback_and_takes_no_handle_path(
    tmp_path: Path, zone_steps: None
) -> None:
    path = fleet_file(tmp_path, {})
    data = yaml.safe_load(path.read_text())
    mapping = {"type": "process", "path": "/bin/true", "handle": "id"}
    data["infrastructure"] = {"provider": "chaostoolkit", "settings": {"restore_zone": mapping}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as raised:
        load_fleet(path)
    assert (
        "restore_zone.handle: expected no handle (only lose_cluster, partition, lose_node, lose_zone"
        in str(raised.value)
    )


def test_a_step_the_local_fleet_cannot_run_is_one_line(tmp_path: Path, zone_steps: None) -> None:
    with pytest.raises(
        FleetDrillError, match=r"^infrastructure.provider localfleet: the local fleet has no step"
    ):
        LocalFleetProvider(tmp_path).run(LOSE_ZONE, Target(cluster="east"))


def test_a_step_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered already"):
        registry.register(Step("heal", ("name",), "again"))
    with pytest.raises(ValueError, match="names no step that restores it"):
        Step("lose_rack", ONE_CLUSTER, "Take a rack away", hands_over=True)
    with pytest.raises(ValueError, match="no value for placeholder rack"):
        Step("lose_rack", (*ONE_CLUSTER, "rack"), "Take a rack away")
