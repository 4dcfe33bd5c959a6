"""Simultaneous failures: the standby's region is already cut off (a WAN partition) when the primary
cluster is lost. The passive cluster must take over alone; RTO, RPO and availability are judged as in
the active-passive drill, with one fewer place to fail over to."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.failover import Failover
from harness.faults.cluster import ClusterLoss
from harness.faults.partition import WanPartition

BASELINE_S = 2.0


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.gameday
@pytest.mark.drill(uses={"wan-partition": "standby", "cluster-loss": "active", "failover": "passive"})
def test_lose_the_primary_while_the_standby_region_is_cut_off(
    drill: Drill, app: App, failover: Failover
) -> None:
    primary = drill.fleet.primary().name
    passive = next(c.name for c in drill.fleet.clusters if c.role == "passive")
    standby = [c.name for c in drill.fleet.clusters if c.role == "standby"]
    deadline = 2 * (app.objectives.rto or 30.0)
    partitions = [WanPartition(targets=tuple(standby))] if standby else []
    loss = ClusterLoss(targets=(primary,))
    drill.check_faults(*partitions, loss)  # a refusal of the loss comes before the partition, not after
    with drill.observe(app):
        assert drill.steady(app, primary, drill.sentinel_history_s(app, BASELINE_S), deadline), (
            f"steady state: {primary} does not serve {app.name}: {drill.why_not_steady(app, primary)}"
        )
        for partition in partitions:
            drill.inject(partition)
        t0 = drill.inject(loss).started
        failover.fail_over(app, passive)
        drill.wait_served_by(app, passive, deadline)
        drill.soak()
    verdicts = drill.judge(app, t0, survivor=passive)
    drill.revert_all()
    failover.fail_back(app, primary, deadline)
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
