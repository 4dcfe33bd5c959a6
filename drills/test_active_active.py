"""Active-active: lose any one cluster of several; the global load balancer moves traffic by itself
(the observe strategy) and global traffic continues within the app's availability and outage bounds."""

import pytest

from harness import failover
from harness.config import App
from harness.drill import Drill
from harness.faults.cluster import ClusterLoss

BASELINE_S = 2.0


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.drill(uses={"cluster-loss": "every"})
def test_lose_one_cluster_and_global_traffic_continues(drill: Drill, app: App, cluster_name: str) -> None:
    bound = app.objectives.rto or 30.0
    with drill.observe(app):
        assert drill.steady(app, None, BASELINE_S, bound), (
            f"steady state: the global endpoint does not serve {app.name}: {drill.why_not_steady(app)}"
        )
        t0 = drill.inject(ClusterLoss(targets=(cluster_name,))).started
        drill.wait_served_by(app, None, 2 * bound, besides=cluster_name)
        drill.soak()
    verdicts = drill.judge(app, t0, max_outage_s=app.objectives.rto)  # unset: RTO is the error naming it
    drill.revert_all()
    failover.wait_until(
        lambda: failover.app_serves(app, cluster_name), 3 * bound, f"{cluster_name} serving again"
    )
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
