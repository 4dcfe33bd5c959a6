"""Pure: the series a PromQL objective's range query returned -> its verdict, figures and error-budget burn.

An objective holds when every value of every series in the window keeps its bound. No series, or a
stretch of the window longer than max_gap without any value (at its ends too), is missing data: an error
verdict, never a pass.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.config import PromqlObjective
from harness.prometheus import Series
from harness.samples import Verdict

HOLDS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Window:
    """Where an objective was evaluated: unix times, and t0 (unix) for moments in messages."""

    start: float
    end: float
    t0: float | None = None

    def moment(self, t: float) -> str:
        """`t0+12.3 s` (or `t0-1.0 s`), else the offset into the window."""
        if self.t0 is None:
            return f"{t - self.start:.1f} s into the window"
        return f"t0{t - self.t0:+.1f} s"


def label(objective: PromqlObjective, cluster: str | None) -> str:
    """The objective's name in verdicts: `PromQL error-ratio` or `PromQL error-ratio on us-east`."""
    return f"PromQL {objective.name}" + (f" on {cluster}" if cluster else "")


def expected(objective: PromqlObjective) -> str:
    return f"{objective.comparison} {objective.bound:g} throughout the {objective.window} window"


def step_for(objective: PromqlObjective, window: Window) -> float:
    """The range query's step: the objective's, else the window over 500 points, at least 1 s."""
    return objective.step or max(1.0, (window.end - window.start) / 500)


def missing_data(series: Sequence[Series], window: Window, max_gap: float) -> str | None:
    """Why the series do not cover the window (no series, a gap longer than max_gap), or None."""
    if not any(s.points for s in series):
        return "no data: the query returned no series in the window"
    times = sorted({t for s in series for t, _ in s.points})
    edges = [window.start, *times, window.end]
    for before, after in itertools.pairwise(edges):
        if after - before > max_gap:
            return f"no data from {window.moment(before)} to {window.moment(after)} (max_gap {max_gap:g} s)"
    return None


def burn(objective: PromqlObjective, series: Sequence[Series], window: Window) -> dict[str, float]:
    """With an SLO target: the error budget's burn rate (the worst series' mean error ratio over the budget,
    1 - target) and the share of slo_period's budget the window spent; else nothing."""
    if objective.slo_target is None or not any(s.points for s in series):
        return {}
    budget = 1 - objective.slo_target
    mean = max(sum(v for _, v in s.points) / len(s.points) for s in series if s.points)
    rate = mean / budget if budget > 0 else float("inf")
    return {"burn_rate": rate, "budget_spent": rate * (window.end - window.start) / objective.slo_period}


def judge(
    objective: PromqlObjective, cluster: str | None, query: str, series: Sequence[Series], window: Window
) -> tuple[Verdict, dict[str, object]]:
    """The verdict of one objective in one place, and its figures."""
    name, wanted = label(objective, cluster), expected(objective)
    figures: dict[str, object] = {
        "objective": objective.name,
        "cluster": cluster,
        "query": query,
        "series": len(series),
        "points": sum(len(s.points) for s in series),
    }
    gap = missing_data(series, window, max(objective.max_gap, step_for(objective, window)))
    if gap is not None:
        why = f"{name} not judged: {query} gave {gap}"
        return Verdict("error", name, wanted, "no data", why, {}), figures
    holds = HOLDS[objective.comparison]
    worst_of = max if objective.comparison in ("<", "<=") else min
    points = [(v, t, s) for s in series for t, v in s.points]
    worst, at, where = worst_of(points, key=lambda p: p[0])
    broken = [p for p in points if not holds(p[0], objective.bound)]
    figures |= {"worst": worst, "broken_points": len(broken)} | burn(objective, series, window)
    measured = f"{worst:g} at worst"
    if not broken:
        message = f"{name}: {query} stayed {wanted} (worst {worst:g} at {window.moment(at)})"
        return Verdict("pass", name, wanted, measured, message, {}), figures
    first = min(broken, key=lambda p: p[1])
    message = (
        f"{name}: {query} was {worst:g} at {window.moment(at)} ({where.describe()}), expected {wanted}; "
        f"{len(broken)} of {len(points)} values broke it, the first at {window.moment(first[1])}"
    )
    return Verdict("fail", name, wanted, measured, message, {}), figures


def failed(objective: PromqlObjective, cluster: str | None, query: str, why: str) -> Verdict:
    """The error verdict of an objective whose query could not be run (or its window not known)."""
    name = label(objective, cluster)
    return Verdict("error", name, expected(objective), "no data", f"{name} not judged: {query}: {why}", {})
