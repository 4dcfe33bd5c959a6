"""Abort conditions on metrics (safety.abort.promql, safety.abort.alerts), for harness.safety.AbortMonitor.

A PromQL condition trips when any series crosses its bound for its `for`; an alert trips when Prometheus
lists it firing. A Prometheus that does not answer, or a condition's query without data, trips too: a
drill that cannot see its abort condition stops to be safe.
"""

from __future__ import annotations

import time

from harness.config import Abort, AbortAlert, AbortQuery
from harness.prometheus import FLEET, PrometheusError, Prometheuses
from harness.safety import AbortCheck, Trip
from harness.units import format_duration

SAFE = "so the drill stops to be safe"
NONE_HEALTHY = "add `or vector(0)` to a query whose having no series means healthy"


class PromqlCondition:
    """safety.abort.promql[N]: its query's value above (or below) its bound, check after check, for `for`."""

    def __init__(self, condition: AbortQuery, clients: Prometheuses) -> None:
        self.condition, self.clients = condition, clients
        self._since: float | None = None

    def __call__(self) -> Trip | None:
        c = self.condition
        name = f"safety.abort.promql {c.name}"
        where = c.prometheus or FLEET
        try:
            series = self.clients.get(c.prometheus).query(c.query)
        except PrometheusError as error:
            return Trip(f"{name}: {error}; {SAFE}", {"condition": c.name})
        values = [(v, s) for s in series for _, v in s.points]
        if not values:
            why = f"{name}: {c.query} returned no data on Prometheus {where}; {SAFE} ({NONE_HEALTHY})"
            return Trip(why, {"condition": c.name})
        above = c.above is not None
        bound = c.above if above else c.below
        assert bound is not None
        crossing = [(v, s) for v, s in values if (v > bound if above else v < bound)]
        now = time.monotonic()
        if not crossing:
            self._since = None
            return None
        self._since = self._since if self._since is not None else now
        if now - self._since < c.for_:
            return None
        value, series_ = max(crossing, key=lambda p: p[0]) if above else min(crossing, key=lambda p: p[0])
        held = f" for {format_duration(c.for_)}" if c.for_ else ""
        reason = (
            f"{name}: {c.query} was {value:g} {series_.describe()} on Prometheus {where}, "
            f"{'above' if above else 'below'} {bound:g}{held}"
        )
        return Trip(reason, {"condition": c.name, "value": value, "bound": bound, "prometheus": where})


class AlertFiring:
    """safety.abort.alerts[N]: the alert is firing on its Prometheus (pending does not trip)."""

    def __init__(self, alert: AbortAlert, clients: Prometheuses) -> None:
        self.alert, self.clients = alert, clients

    def __call__(self) -> Trip | None:
        where = self.alert.prometheus or FLEET
        try:
            alerts = self.clients.get(self.alert.prometheus).alerts()
        except PrometheusError as error:
            return Trip(
                f"safety.abort.alerts {self.alert.alert}: {error}; {SAFE}", {"alert": self.alert.alert}
            )
        firing = [a for a in alerts if a.name == self.alert.alert and a.state == "firing"]
        if not firing:
            return None
        labels = ", ".join(f'{k}="{v}"' for k, v in sorted(firing[0].labels.items()) if k != "alertname")
        reason = f"alert {self.alert.alert} is firing on Prometheus {where}" + (
            f" ({labels})" if labels else ""
        )
        return Trip(reason, {"alert": self.alert.alert, "prometheus": where, "firing": len(firing)})


def abort_checks(rule: Abort, clients: Prometheuses) -> list[AbortCheck]:
    """The checks of the rule's PromQL conditions and alerts (availability is the drill's own)."""
    checks: list[AbortCheck] = [PromqlCondition(c, clients) for c in rule.promql]
    return checks + [AlertFiring(a, clients) for a in rule.alerts]
