"""An app's PromQL objectives evaluated after a drill: a range query per objective and place (the fleet, or
each cluster the app runs in) over the drill window or the recovery only, judged by harness.promql; every
series kept as raw data for the record and the report's plot. A query's values are judged only from as far
into the window as they read back (harness.promlookback): `rate(x[15s])` at the window's first second
measures the 14 s before it, the previous drill's tail; the values from 15 s on still cover every sample
in the window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from harness.config import CLUSTER_PLACEHOLDER, App, Fleet, PromqlObjective, promql_clusters
from harness.prometheus import FLEET, PrometheusError, Prometheuses, Series
from harness.promql import Window, failed, judge, step_for
from harness.promsettle import SETTLE_DEADLINE_S, settle
from harness.samples import Verdict


@dataclass(frozen=True)
class MetricSeries:
    """One series an objective's query returned, its times monotonic (as the probes' are)."""

    app: str
    objective: str
    cluster: str | None
    prometheus: str
    query: str
    comparison: str
    bound: float
    labels: dict[str, str]
    points: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {
            "points": [list(p) for p in self.points]
        }


@dataclass
class Evaluated:
    """What an app's PromQL objectives gave: verdicts, figures (one per objective and place), raw series."""

    verdicts: list[Verdict] = field(default_factory=list)
    figures: list[dict[str, object]] = field(default_factory=list)
    series: list[MetricSeries] = field(default_factory=list)
    settled_s: float = 0.0
    """How long the Prometheuses took to hold the window's data after the call (promsettle)."""


@dataclass(frozen=True)
class Windows:
    """The drill's windows in monotonic seconds; recovery is None (with why) when it was not measured."""

    start: float
    end: float
    t0: float | None
    recovery: float | None
    no_recovery: str = "the drill measured no recovery"


def evaluate(
    fleet: Fleet, app: App, clients: Prometheuses, windows: Windows, settle_s: float = SETTLE_DEADLINE_S
) -> Evaluated:
    """Every PromQL objective of `app`, judged once each Prometheus asked holds the window's data
    (promsettle); a query that fails or returns no data, or data not whole by the deadline, is an error
    verdict."""
    offset = time.time() - time.monotonic()  # monotonic + offset = unix time, in this process
    done = Evaluated()
    asked = {where for objective in app.objectives.promql for _, where, _ in places(fleet, app, objective)}
    with_own = [c.name for c in fleet.clusters if c.prometheus is not None]
    asked_at = time.monotonic()
    unsettled = settle(clients, asked, with_own, windows.end + offset, settle_s)
    done.settled_s = time.monotonic() - asked_at
    for objective in app.objectives.promql:
        start = windows.start if objective.window == "drill" else windows.recovery
        t0 = None if windows.t0 is None else windows.t0 + offset
        back = objective.reads_back()
        for cluster, where, query in places(fleet, app, objective):
            if start is None:
                done.verdicts.append(
                    failed(objective, cluster, query, f"no recovery window: {windows.no_recovery}")
                )
                continue
            if where in unsettled:
                done.verdicts.append(failed(objective, cluster, query, f"data not whole: {unsettled[where]}"))
                continue
            if start + back > windows.end:
                why = (
                    f"the {objective.window} window ({windows.end - start:.1f} s) is shorter than the query "
                    f"reads back ({back:g} s): no value of it measures the window alone"
                )
                done.verdicts.append(failed(objective, cluster, query, why))
                continue
            window = Window(start + back + offset, windows.end + offset, t0)
            try:
                series = clients.get(where).query_range(
                    query, window.start, window.end, step_for(objective, window)
                )
            except PrometheusError as error:
                done.verdicts.append(failed(objective, cluster, query, str(error)))
                continue
            if objective.cluster_label is not None:
                series = [s for s in series if s.labels.get(objective.cluster_label) == cluster]
            verdict, figures = judge(objective, cluster, query, series, window)
            done.verdicts.append(verdict)
            done.figures.append(figures | {"prometheus": where, "window": objective.window})
            done.series += [_recorded(app, objective, cluster, where, query, s, offset) for s in series]
    return done


def reads_back(app: App, window: str) -> float:
    """How far back the values of the app's PromQL objectives over `window` (drill, recovery) read: a drill
    measures that long into the window before they can be judged (0 without such objectives)."""
    return max((o.reads_back() for o in app.objectives.promql if o.window == window), default=0.0)


def places(fleet: Fleet, app: App, objective: PromqlObjective) -> list[tuple[str | None, str, str]]:
    """(cluster or None, the Prometheus asked, the query) for each place the objective is judged in."""
    if objective.scope == "fleet":
        return [(None, FLEET, objective.query)]
    places = []
    for cluster in promql_clusters(fleet, app):
        where = FLEET if objective.cluster_label or cluster.prometheus is None else cluster.name
        places.append((cluster.name, where, objective.query.replace(CLUSTER_PLACEHOLDER, cluster.name)))
    return places


def _recorded(
    app: App,
    objective: PromqlObjective,
    cluster: str | None,
    where: str,
    query: str,
    series: Series,
    offset: float,
) -> MetricSeries:
    points = tuple((t - offset, v) for t, v in series.points)
    return MetricSeries(
        app.name,
        objective.name,
        cluster,
        where,
        query,
        objective.comparison,
        objective.bound,
        series.labels,
        points,
    )
