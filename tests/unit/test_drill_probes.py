"""How a drill probes an app: the give-up timeout apart from the latency objective, the app contract passed
to the Prober, and which cluster served only from a declared identity."""

from typing import Any

import pytest

from harness import appcontract, drill
from harness.config import App, Fleet
from harness.drill import Drill, DrillSettings
from harness.errors import ConfigError
from harness.timeline import Timeline

APP: dict[str, Any] = {"name": "shop", "namespace": "shop", "workload": "deployment/shop"}


def app(**fields: Any) -> App:
    return App.model_validate(APP | fields)


@pytest.mark.parametrize(("latency", "timeout"), [(None, 1.0), ("300ms", 1.0), ("1s", 2.0), ("2s", 4.0)])
def test_probes_give_up_at_the_timeout_or_twice_the_latency_objective(
    latency: str | None, timeout: float
) -> None:
    objectives = {} if latency is None else {"latency": latency}
    latency_s = app(objectives=objectives).objectives.latency
    assert drill.probe_timeout(latency_s, DrillSettings(probe_timeout_s=1.0).probe_timeout_s) == timeout


def test_the_app_contract_goes_to_the_prober() -> None:
    assert appcontract.probe_options(app()) == {
        "accepted_statuses": ("2xx",),
        "identity_header": None,
        "identity_field": None,
    }
    declared = app(accepted_statuses=["2xx", 301], served_by={"json_field": "cluster"})
    assert appcontract.probe_options(declared, proxied=True) == {
        "accepted_statuses": ("2xx", 301),
        "identity_header": None,
        "identity_field": "cluster",
    }


def test_through_the_api_servers_proxy_an_accepted_4xx_needs_an_identity() -> None:
    with pytest.raises(ConfigError, match="accepts 4xx answers and declares no served_by"):
        appcontract.probe_options(app(accepted_statuses=["2xx", 404]), proxied=True)
    assert appcontract.probe_options(
        app(accepted_statuses=["2xx", 404], served_by={"header": "X-Who"}), proxied=True
    )


@pytest.mark.parametrize(("cluster", "besides"), [("east", None), (None, "east")])
def test_which_cluster_serves_needs_a_declared_identity(cluster: str | None, besides: str | None) -> None:
    fleet = Fleet.model_validate({"name": "f", "clusters": [{"name": "east", "region": "r"}], "apps": [APP]})
    run = Drill("d", fleet, None, None, Timeline())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="app 'shop' declares no served_by"):
        run.served_by(fleet.app("shop"), cluster, besides)
