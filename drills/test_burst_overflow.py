"""Burst/overflow: a load above what the primary cluster holds spills to another cluster without users
noticing beyond the objectives, and comes back once it drops.

The drill starts from a primary with room (pods an earlier burst left Pending gone, within a deadline),
then keeps CONCURRENCY requests in flight on the app's global endpoint (a bounded load: it stops when
the drill leaves the block, on every exit path, or at its deadline). The primary's HorizontalPodAutoscaler
scales the workload out until pods stay Pending for want of room: that, read from the primary's API, is the
proof that it is full (no proof, no verdict: an error). The load holds HOLD_S more, then drops. Judged from
the global endpoint's probes against the app's objectives: spill (the load's start until another cluster
answers, and others answering while the primary is full), availability and p99 latency during the burst,
and spill_return (the load's drop until the primary alone answers). An autoscaler whose maximum is below the
load (at its maximum, wanting more, nothing Pending) fails the drill naming it; so does a burst cluster
without the app (spill never seen, the missing workload named). An app whose workload has no autoscaler
in the primary does not burst: skipped (drill it with --app NAME of one that does)."""

import pytest

from harness import appcontract, burst
from harness.config import App
from harness.drill import Drill
from harness.errors import ConfigError
from harness.load import Load

BASELINE_S = 2.0
CONCURRENCY = 16
"""Requests in flight at once: above what a full primary takes (the local fleet's: some 5 pods x 2), so the
autoscaler wants more than fits, and no more: a closed loop's clients send as fast as they are answered, and
each one more only adds queueing, on a shared runner to every other process's answers too."""
FULL_DEADLINE_S = 240.0
"""Longest the load may take to fill the primary (scale-out is the HPA's sync period and pod starts)."""
SETTLE_DEADLINE_S = 120.0
"""Longest wait for the pods an earlier burst left Pending to go (the HPA scaling back in)."""
HOLD_S = 5.0
"""How long the load holds once the primary is full: the excess must be served elsewhere meanwhile."""
LOAD_DEADLINE_S = FULL_DEADLINE_S + HOLD_S + 30.0
"""The load stops by itself then, whatever the drill does."""


@pytest.mark.destructive
@pytest.mark.gameday
@pytest.mark.drill(uses={"load": "every"})
def test_a_burst_spills_and_returns(drill: Drill, app: App) -> None:
    primary = drill.fleet.primary().name
    if not app.global_endpoint:
        raise ConfigError(f"fleet {drill.fleet.name}: app {app.name} sets no global_endpoint to load")
    target = app.global_endpoint.rstrip("/") + "/" + app.health_path.lstrip("/")
    if drill.stack.dry_run:
        pytest.skip(
            f"dry run: would keep {CONCURRENCY} requests in flight on {target} until {primary} is full"
        )
    api = drill.access.api_client(primary)
    if burst.autoscaler(api, app) is None:
        pytest.skip(
            f"{app.name} does not burst: no HorizontalPodAutoscaler targets {app.workload} in {primary}"
        )
    drill.stack.check_cluster(primary)
    with drill.timeline.phase("settling", cluster=primary):
        burst.wait_room(api, app, primary, SETTLE_DEADLINE_S)
    deadline = 2 * (app.objectives.spill_return or 30.0)
    full: burst.Full | burst.Capped
    with drill.observe(app):
        assert drill.steady(app, primary, BASELINE_S, deadline), (
            f"steady state: {primary} does not serve {app.name}: {drill.why_not_steady(app, primary)}"
        )
        header = appcontract.identity_header(app)
        with Load(target, CONCURRENCY, LOAD_DEADLINE_S, identity_header=header) as load:
            drill.timeline.record("load.started", detail={"url": target, "concurrency": CONCURRENCY})
            try:
                with drill.timeline.phase("filling", cluster=primary):
                    full = burst.wait_full(api, app, primary, FULL_DEADLINE_S)
            except burst.Capped as capped:
                full = capped
            else:
                drill.timeline.record("burst.full", primary, {"pending": list(full.pending), "why": full.why})
                drill.soak(HOLD_S)
        drill.timeline.record("load.stopped")
        drill.wait_served_by(app, primary, deadline)
        drill.soak(drill.settings.stable_seconds)
    assert load.stopped is not None
    absent_from = {
        cluster: why
        for cluster in app.endpoints
        if cluster != primary and (why := burst.absent(drill.access.api_client(cluster), app, cluster))
    }
    verdicts = drill.judge_burst(app, primary, load.started, full, load.stopped, load.requests(), absent_from)
    failed = [v.message for v in verdicts if v.status != "pass"]
    assert not failed, "; ".join(failed)
