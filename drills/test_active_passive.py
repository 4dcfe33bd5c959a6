"""Active-passive: lose the primary cluster for real, fail over to the passive one, judge RTO, RPO and
availability against the app's objectives, then fail back once the primary returns."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.failover import Failover
from harness.faults.cluster import ClusterLoss

BASELINE_S = 2.0


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.gameday
@pytest.mark.drill(uses={"cluster-loss": "active", "failover": "passive"})
def test_lose_the_primary_cluster(drill: Drill, app: App, failover: Failover) -> None:
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
        drill.soak()
    verdicts = drill.judge(app, t0, survivor=passive)
    drill.revert_all()
    failover.fail_back(app, primary, deadline)
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
