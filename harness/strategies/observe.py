"""The observe strategy: the GSLB and the app fail over (and back) by themselves; the drill only records
that it expects them to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.strategies import Strategy, register

if TYPE_CHECKING:
    from harness.config import App
    from harness.fleet import FleetAccess
    from harness.timeline import Timeline


def observe(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    """Record that the app is expected to fail over to `cluster` by itself."""
    timeline.record("failover.observed", cluster=cluster, detail={"app": app.name})


OBSERVE = register(
    Strategy(
        "observe",
        observe,
        events=("failover.observed",),
        does="do nothing: the GSLB and the app fail over by themselves",
        changes_fleet=False,
    )
)
