"""The old primary returns: lose the primary cluster, fail over to the passive one, then bring the lost
cluster back. Its copy of the app's data missed what the promoted one took since, so it must never accept
a write again as a primary (fenced: refusing writes, or following the new primary): never two writers."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.failover import Failover
from harness.faults.cluster import ClusterLoss

BASELINE_S = 2.0


@pytest.mark.destructive
@pytest.mark.gameday
@pytest.mark.drill(uses={"cluster-loss": "active", "failover": "passive"})
def test_the_old_primary_returns_fenced(drill: Drill, app: App, failover: Failover) -> None:
    primary = drill.fleet.primary().name
    passive = next(c.name for c in drill.fleet.clusters if c.role == "passive")
    deadline = 2 * (app.objectives.rto or 30.0)
    with drill.observe(app):
        assert drill.steady(app, primary, drill.sentinel_history_s(app, BASELINE_S), deadline), (
            f"steady state: {primary} does not serve {app.name}: {drill.why_not_steady(app, primary)}"
        )
        t0 = drill.inject(ClusterLoss(targets=(primary,))).started
        failover.fail_over(app, passive)
        drill.wait_served_by(app, passive, deadline)
    with drill.direct_writes(app, primary) as returned, drill.direct_writes(app, passive) as promoted:
        drill.revert_all()  # the lost cluster returns
        with drill.timeline.phase("fencing", cluster=primary):  # until it refuses writes, or at the deadline
            drill.wait_fenced(returned, deadline)
    verdict = drill.judge_return(app, primary, returned.writes(), passive, promoted.writes(), t0)
    failover.fail_back(app, primary, deadline)
    assert verdict.status == "pass", verdict.message
