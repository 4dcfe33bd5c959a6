"""Configuration parity: every passive and standby cluster runs the active cluster's workload specs,
with the ConfigMaps and Secrets they need, so a failover starts what was tested."""

import pytest

from harness import parity
from harness.drill import Drill


@pytest.mark.gate
@pytest.mark.quarterly
@pytest.mark.drill(app="orders", roles=("passive", "standby"))
def test_standby_runs_what_the_active_cluster_runs(drill: Drill, cluster_name: str) -> None:
    app = drill.app("orders")
    reference = drill.fleet.primary().name
    drifts = parity.compare(drill.access, app, reference, cluster_name)
    drill.judge_drift(
        "configuration parity", f"{cluster_name} matches {reference}", [d.line(reference) for d in drifts]
    )
    assert not drifts, "; ".join(d.line(reference) for d in drifts)
