"""Region partition: cut the primary's region off from the rest of the fleet (a WAN partition, real
packet drops). Traffic must move to the passive region, and the cut-off primary must stop accepting
writes before the passive one is promoted: never two writers."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.failover import Failover
from harness.faults.partition import WanPartition

BASELINE_S = 2.0


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.gameday
@pytest.mark.drill(uses={"wan-partition": "active", "failover": "passive"})
def test_partition_the_primary_region(drill: Drill, app: App, failover: Failover) -> None:
    primary = drill.fleet.primary().name
    passive = next(c.name for c in drill.fleet.clusters if c.role == "passive")
    deadline = 2 * (app.objectives.rto or 30.0)
    with drill.observe(app), drill.direct_writes(app, primary) as cut_off:
        assert drill.steady(app, primary, drill.sentinel_history_s(app, BASELINE_S), deadline), (
            f"steady state: {primary} does not serve {app.name}: {drill.why_not_steady(app, primary)}"
        )
        t0 = drill.inject(WanPartition(targets=(primary,))).started
        with drill.timeline.phase("fencing", cluster=primary):  # promote once it is fenced, or at the RTO
            drill.wait_fenced(cut_off, app.objectives.rto or 30.0)
        failover.fail_over(app, passive)
        drill.wait_served_by(app, passive, deadline)
        drill.soak()
    verdicts = drill.judge(app, t0, survivor=passive)
    verdicts.append(drill.judge_split_brain(primary, cut_off.writes(), passive, t0))
    drill.revert_all()
    failover.fail_back(app, primary, deadline)
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
