"""Failover strategies are declared once (harness.strategies): a strategy registered in one module is
accepted by the fleet file with its own settings, named in the schema, run by the failover runner, asked
for its permissions by `doctor`, and its events read by the drill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import model_validator

from harness import failover, needs
from harness.catalogue import SelectedDrill, Use
from harness.config import App, Failover, Invalid, Text, fleet_json_schema, load_fleet
from harness.errors import ConfigError
from harness.fleet import FleetAccess
from harness.permissions import APP, Permission
from harness.strategies import STRATEGIES, Strategy, all_strategies, failed_over_events, strategy
from harness.timeline import Timeline


class Route53Failover(Failover):
    """A test strategy's settings: the record it flips."""

    record: Text | None = None

    @model_validator(mode="after")
    def _record_when_chosen(self) -> Route53Failover:
        if self.strategy == "route53" and not self.record:
            raise Invalid("a record name for strategy route53", self.record, ("record",))
        return self


def flip(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    timeline.record(
        "route53.flipped", cluster=cluster, detail={"record": getattr(app.failover, "record", "")}
    )


ROUTE53 = Strategy(
    "route53",
    flip,
    events=("route53.flipped",),
    does="flip the record",
    settings=Route53Failover,
    permissions=(Permission("get", "configmaps", "", APP),),
)


@pytest.fixture
def route53(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route53 strategy registered for one test only."""
    monkeypatch.setitem(STRATEGIES, ROUTE53.name, ROUTE53)


def fleet_file(tmp_path: Path, failover_settings: dict) -> Path:
    clusters = [{"name": "east", "region": "us-east", "role": "active"}, {"name": "west", "region": "eu"}]
    app = {
        "name": "shop",
        "namespace": "shop-ns",
        "workload": "deployment/shop",
        "failover": failover_settings,
    }
    (tmp_path / "fleet.yaml").write_text(
        yaml.safe_dump({"name": "unit", "clusters": clusters, "apps": [app]})
    )
    return tmp_path / "fleet.yaml"


def test_the_builtin_strategies_are_registered() -> None:
    assert list(all_strategies()) == ["command", "observe", "promote"]
    assert fleet_json_schema()["$defs"]["Failover"]["properties"]["strategy"]["enum"] == list(
        all_strategies()
    )


def test_a_strategy_registered_in_one_module_is_accepted_and_run(tmp_path: Path, route53: None) -> None:
    fleet = load_fleet(fleet_file(tmp_path, {"strategy": "route53", "record": "shop.example.com"}))
    app = fleet.app("shop")
    assert isinstance(app.failover, Route53Failover) and app.failover.record == "shop.example.com"
    timeline = Timeline()
    failover.fail_over(FleetAccess(fleet), app, "west", timeline)
    (flipped,) = timeline.events("route53.flipped")
    assert (flipped.cluster, flipped.detail) == ("west", {"record": "shop.example.com"})
    assert "route53.flipped" in failed_over_events()

    drill = SelectedDrill("drills/test_x.py::test_x", "shop", False, (Use("failover", ("passive",)),))
    wanted = {(n.cluster, n.permission.text()) for n in needs.needs(fleet, [drill])}
    assert wanted == {
        ("east", "get configmaps in namespace shop-ns"),
        ("west", "get configmaps in namespace shop-ns"),
    }

    schema = fleet_json_schema()["$defs"]["Failover"]
    assert "route53" in schema["properties"]["strategy"]["enum"] and "record" in schema["properties"]
    assert "route53: flip the record" in schema["properties"]["strategy"]["description"]


def test_a_registered_strategy_s_settings_are_checked_with_the_field_named(
    tmp_path: Path, route53: None
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_fleet(fleet_file(tmp_path, {"strategy": "route53"}))
    assert str(raised.value).endswith(
        "apps[0].failover.record: expected a record name for strategy route53, got None"
    )
    with pytest.raises(
        ConfigError, match=r"apps\[0\].failover.recrod: unknown field \(did you mean 'record'\?\)"
    ):
        load_fleet(fleet_file(tmp_path, {"strategy": "route53", "recrod": "x"}))


def test_an_unregistered_strategy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_fleet(fleet_file(tmp_path, {"strategy": "route53", "record": "x"}))
    assert "apps[0].failover.strategy: expected one of command, observe, promote, got 'route53'" in str(
        raised.value
    )
    with pytest.raises(ConfigError, match="expected one of command, observe, promote, got 'route53'"):
        strategy("route53")


def test_a_strategy_is_registered_once() -> None:
    from harness.strategies import register

    all_strategies()
    with pytest.raises(ValueError, match="registered already"):
        register(Strategy("observe", flip, events=(), does="again"))


def test_the_fleet_round_trips_with_every_strategy_s_settings(tmp_path: Path) -> None:
    from harness.config import dump_fleet

    fleet = load_fleet(fleet_file(tmp_path, {"strategy": "command", "command": ["flip.sh"], "timeout": "1m"}))
    (tmp_path / "again.yaml").write_text(dump_fleet(fleet))
    again = load_fleet(tmp_path / "again.yaml")
    assert again == fleet and json.loads(again.model_dump_json())["apps"][0]["failover"]["timeout"] == "1m"
