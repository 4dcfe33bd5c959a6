"""Resource exhaustion: stress pods request and burn CPU and most of the memory the primary cluster's
nodes have left (the shares and the image the fleet file's `stress` sets), and a ResourceQuota stops the
app's namespace from starting new pods.
The app must keep its latency and availability bounds through the stress, and serve as before once the
stress ends."""

import time

import pytest

from harness.config import App
from harness.drill import Drill
from harness.faults.resources import NodeStress, QuotaSqueeze

BASELINE_S = 2.0
STRESS_S = 10.0
LATENCY_PERCENTILE = 99.0


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.drill(uses={"quota-squeeze": "active", "node-stress": "active"})
def test_exhaust_the_primary_clusters_nodes(drill: Drill, app: App) -> None:
    primary = drill.fleet.primary().name
    deadline = 2 * (app.objectives.rto or 30.0)
    with drill.observe(app):
        assert drill.steady(app, primary, BASELINE_S, deadline), (
            f"steady state: {primary} does not serve {app.name}: {drill.why_not_steady(app, primary)}"
        )
        t0 = drill.inject(QuotaSqueeze(targets=(primary,), namespace=app.namespace)).started
        shares = drill.fleet.stress
        stress = NodeStress(
            targets=(primary,), cpu_fraction=shares.cpu, memory_fraction=shares.memory, image=shares.image
        )
        drill.inject(stress)
        with drill.timeline.phase("stress", cluster=primary):
            time.sleep(STRESS_S)  # the fault holds; the probes measure meanwhile
        drill.revert_all()
        drill.wait_served_by(app, primary, deadline)
        drill.soak()
    verdicts = drill.judge(app, t0, max_outage_s=app.objectives.rto, latency_percentile=LATENCY_PERCENTILE)
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
