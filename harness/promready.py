"""`fleetdrill doctor`'s Prometheus checks: each configured Prometheus answers, each one a PromQL objective
asks lists its targets (a drill waits on them before judging), every query an objective or abort
condition uses returns data now, and every alert an abort names is a rule there.

A query without data now would be an error verdict (or an abort) in the drill: found here, before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.config import App, Fleet
from harness.preflight import Check
from harness.prometheus import FLEET, PrometheusError, Prometheuses
from harness.promsettle import unreadable
from harness.promslo import places


def readiness(fleet: Fleet, apps: Sequence[App], clients: Prometheuses | None = None) -> list[Check]:
    """One check per Prometheus, per objective's query and place, per abort condition and alert."""
    clients = clients or Prometheuses(fleet)
    checks, down = [], set()
    for where in clients.configured():
        client = clients.get(where)
        what = f"Prometheus {client.url} ({client.auth_kind()})"
        try:
            client.query("vector(1)")
        except PrometheusError as error:
            checks.append(Check(where, what, "answers an instant query", str(error), False))
            down.add(where)
        else:
            checks.append(Check(where, what, "answers an instant query", "answers", True))
    asks = [
        (cluster or FLEET, where, f"app {app.name} PromQL objective {o.name}", query)
        for app in apps
        for o in app.objectives.promql
        for cluster, where, query in places(fleet, app, o)
    ]
    asked = {where for _, where, _, _ in asks}
    checks += [
        _lists_targets(clients, where)
        for where in clients.configured()
        if where in asked and where not in down and clients.get(where).settings.ingest_delay is None
    ]
    abort = fleet.safety.abort
    for condition in abort.promql if abort else ():
        asks.append(
            (
                condition.prometheus or FLEET,
                condition.prometheus or FLEET,
                f"abort condition {condition.name}",
                condition.query,
            )
        )
    for name, where, what, query in asks:
        if where not in down:
            checks.append(_returns_data(clients, name, where, what, query))
    for alert in abort.alerts if abort else ():
        where = alert.prometheus or FLEET
        if where not in down:
            checks.append(_has_rule(clients, where, alert.alert))
    return checks


def _lists_targets(clients: Prometheuses, where: str) -> Check:
    """The targets API a drill reads before judging PromQL objectives (promsettle)."""
    client = clients.get(where)
    what, expected = f"Prometheus {client.url}", "lists its scrape targets (/api/v1/targets)"
    try:
        targets = client.targets()
    except PrometheusError as error:
        return Check(where, what, expected, unreadable(error), False)
    up = sum(t.health == "up" for t in targets)
    return Check(where, what, expected, f"{len(targets)} targets, {up} up", True)


def _returns_data(clients: Prometheuses, name: str, where: str, what: str, query: str) -> Check:
    expected = f"{query} returns data"
    try:
        series = clients.get(where).query(query)
    except PrometheusError as error:
        return Check(name, what, expected, str(error), False)
    if not series:
        return Check(
            name, what, expected, f"no data on Prometheus {where}: it would be an error in a drill", False
        )
    return Check(name, what, expected, f"{len(series)} series", True)


def _has_rule(clients: Prometheuses, where: str, alert: str) -> Check:
    what, expected = f"abort alert {alert}", "an alerting rule of that name"
    try:
        rules = clients.get(where).alert_rules()
    except PrometheusError as error:
        return Check(where, what, expected, str(error), False)
    found = (
        "present"
        if alert in rules
        else f"no such rule (it would never fire); rules: {', '.join(rules) or 'none'}"
    )
    return Check(where, what, expected, found, alert in rules)
