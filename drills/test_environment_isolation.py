"""Environment isolation: fault every non-prod cluster and prod's objectives hold throughout.

Separate environment clusters promise that nothing done to dev or staging reaches prod. The drill faults
each non-prod cluster in turn through the infrastructure provider, in one run by losing it and in the
other by cutting it off from the rest of the fleet (a WAN partition: it runs on, unreachable), and keeps
every one faulted to the end, while it measures the app in prod: availability, and p99 latency where the
fleet file sets a latency objective, at each prod endpoint and the global endpoint. A prod endpoint that
degrades fails the drill naming the coupling seen: which endpoint, after which non-prod cluster's fault
(each fault holds HOLD_S alone before the next, so an outage begins in the window of the fault it
follows). Prod is never a target:
every non-prod cluster passes the safety rules (allowlist, blast radius, all at once) before the first
fault. A fleet whose clusters are all dev (the default) does not segment and is skipped (a skip, never a
pass); one with no prod cluster, or no other, is an error.
"""

import pytest

from harness import isolation
from harness.config import App
from harness.drill import Drill
from harness.faults.cluster import ClusterLoss
from harness.faults.partition import WanPartition

BASELINE_S = 2.0
HOLD_S = 3.0
"""How long each non-prod fault holds alone before the next: a readiness check that asks a dependency every
second (with a 1 s timeout) shows the coupling well within it."""


@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.drill(uses={"cluster-loss": "non-prod", "wan-partition": "non-prod"})
@pytest.mark.parametrize("by", ["loss", "partition"])
def test_fault_every_non_prod_cluster_and_prod_holds(drill: Drill, app: App, by: str) -> None:
    try:
        found = isolation.segments(drill.fleet)
    except isolation.NotSegmented as why:
        pytest.skip(str(why))
    isolation.check_before(drill.fleet, found)
    steps = []
    with drill.observe(app):
        assert drill.steady(app, None, BASELINE_S, app.objectives.rto or 30.0), (
            f"steady state: the global endpoint does not serve {app.name}: {drill.why_not_steady(app)}"
        )
        for cluster in found.others:
            fault = ClusterLoss(targets=(cluster,)) if by == "loss" else WanPartition(targets=(cluster,))
            injection = drill.inject(fault)
            environment = drill.fleet.cluster(cluster).environment
            steps.append(
                isolation.Step(cluster, environment, injection.started, injection.effective, fault.kind)
            )
            drill.soak(HOLD_S)
        drill.soak()
    verdicts = drill.judge_isolation(app, steps)
    drill.revert_all()
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
