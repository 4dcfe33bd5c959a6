"""The report's pictures as PNG bytes (matplotlib, Agg backend: no display, no network).

timeline_png: one drill and app, probe success and latency over time with faults and phases shaded.
trend_png: RTO or RPO of every drill and app across past runs, with the objective as a dashed line.
"""

import datetime as dt
import io
from typing import Any

from harness import units
from harness.measure import probe_failed
from harness.report.history import Point
from harness.report.runs import DrillResult
from harness.samples import ProbeSample
from harness.timeline import phase_spans

FAULT_COLOUR = "#d62728"
PHASE_COLOURS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#e377c2")
GLOBAL = "global"


def _pyplot() -> Any:
    """pyplot on the Agg backend, imported at the first picture: every pytest run loads the plugin and with it
    this module, and most never draw (matplotlib's import is a third of a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def _samples(drill: DrillResult, app: str) -> list[ProbeSample]:
    fields = ("target", "sent", "received", "ok", "status", "error", "latency", "served_by")
    return [
        ProbeSample.from_dict({key: row.get(key) for key in fields})
        for row in drill.probes
        if row.get("app") == app
    ]


def latency_seconds(bound: object) -> float | None:
    """An objective's latency bound ("500ms", 0.5) in seconds; None when unset or unreadable."""
    try:
        return units.parse_duration(bound) if bound is not None else None
    except ValueError:
        return None


def timeline_png(
    drill: DrillResult, app: str, latency_bound: float | None, rto_s: float | None = None
) -> bytes | None:
    """Probe success per endpoint and global latency over time, from the fault on; None without probes."""
    samples = _samples(drill, app)
    if not samples:
        return None
    zero = drill.t0 if drill.t0 is not None else min(s.sent for s in samples)
    end = max(s.received for s in samples)
    figure, (success, latency) = _pyplot().subplots(
        2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]}
    )
    targets = sorted({s.target for s in samples}, key=lambda t: (t != GLOBAL, t))
    for row, target in enumerate(targets):
        mine = [s for s in samples if s.target == target]
        for failed, colour in ((False, "#2ca02c"), (True, FAULT_COLOUR)):
            xs = [s.sent - zero for s in mine if probe_failed(s, latency_bound) == failed]
            success.scatter(xs, [row] * len(xs), s=6, marker="|", color=colour, linewidths=1)
    success.set_yticks(range(len(targets)), [f"{t} endpoint" for t in targets])
    success.set_ylim(-0.7, len(targets) - 0.3)
    success.set_title("Each probe request: green = answered in time, red = failed (error, 5xx or too slow)")
    own = [s for s in samples if s.target == GLOBAL]
    for failed, colour, mark, label in (
        (False, "#1f77b4", ".", "answered"),
        (True, FAULT_COLOUR, "x", "failed"),
    ):
        picked = [s for s in own if probe_failed(s, latency_bound) == failed]
        xs, ys = [s.sent - zero for s in picked], [s.latency * 1000 for s in picked]
        latency.plot(xs, ys, mark, ms=3, color=colour, label=f"{label} (time until answer or give-up)")
    latency.set_yscale("log")
    latency.set_ylabel("latency of the global endpoint (ms)")
    latency.set_xlabel("seconds since the fault was injected" if drill.t0 is not None else "seconds")
    if latency_bound:
        latency.axhline(latency_bound * 1000, color="grey", ls="--", lw=1, label="latency bound")
    _shade(drill, zero, end, (success, latency))
    if drill.t0 is not None and rto_s is not None:
        for ax in (success, latency):
            ax.axvline(
                rto_s,
                color="#1a7f37",
                lw=1.2,
                ls="--",
                label="recovered (t0 + RTO)" if ax is latency else None,
            )
    _legend(latency, 8)
    return _png(figure)


def _legend(ax: Any, fontsize: int) -> None:
    """The axes' legend right of it, each label once (a phase run twice is listed once)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(
        unique.values(),
        unique.keys(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=fontsize,
        frameon=False,
    )


def promql_png(drill: DrillResult, app: str) -> bytes | None:
    """Each PromQL objective's series over time (one panel per objective and place), its bound dashed,
    on the probe timeline's axis (seconds since t0) with the same fault and phase bands; None without
    series."""
    rows = [row for row in drill.promql if row.get("app") == app and row.get("points")]
    panels: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        panels.setdefault((str(row["objective"]), str(row.get("cluster") or "")), []).append(row)
    if not panels:
        return None
    times = [t for row in rows for t, _ in row["points"]]
    probes = _samples(drill, app)  # the probe timeline's span too, so the two plots line up
    times += [s.sent for s in probes] + [s.received for s in probes]
    zero = drill.t0 if drill.t0 is not None else min(s.sent for s in probes) if probes else min(times)
    figure, axes = _pyplot().subplots(
        len(panels), 1, figsize=(10, 1.9 * len(panels) + 0.6), sharex=True, squeeze=False
    )
    column = [ax for (ax,) in axes]
    for ax, ((objective, cluster), series) in zip(column, sorted(panels.items()), strict=True):
        for index, row in enumerate(series):
            xs, ys = [t - zero for t, _ in row["points"]], [v for _, v in row["points"]]
            labels = ", ".join(
                f"{k}={v}" for k, v in sorted(row.get("labels", {}).items()) if k != "__name__"
            )
            ax.plot(
                xs, ys, "-", lw=1.2, color=PHASE_COLOURS[index % len(PHASE_COLOURS)], label=labels or None
            )
        first = series[0]
        ax.axhline(
            first["bound"],
            color="grey",
            ls="--",
            lw=1,
            label=f"must stay {first['comparison']} {first['bound']:g}",
        )
        ax.set_title(
            f"PromQL {objective}{f' on {cluster}' if cluster else ''}: {first['query']}"[:120], fontsize=9
        )
    column[-1].set_xlabel("seconds since the fault was injected" if drill.t0 is not None else "seconds")
    column[-1].set_xlim(min(times) - zero, max(times) - zero)
    _shade(drill, zero, max(times), tuple(column))
    for ax in column:
        _legend(ax, 7)
    return _png(figure)


def _shade(drill: DrillResult, zero: float, end: float, axes: tuple[Any, ...]) -> None:
    """Faults in red, each timeline phase in a colour of its own, the fault moment as a line; the labels
    go on the last axes, for its legend."""
    spans = [(text, FAULT_COLOUR, 0.12, start, stop) for text, start, stop in drill.fault_spans()]
    colours: dict[str, str] = {}
    for span in phase_spans(drill.events):
        colour = colours.setdefault(span.key, PHASE_COLOURS[len(colours) % len(PHASE_COLOURS)])
        spans.append((f"phase: {span.key}", colour, 0.18, span.start, span.end))
    for text, colour, alpha, start, stop in spans:
        for ax in axes:
            label = text if ax is axes[-1] else None
            ax.axvspan(start - zero, (stop or end) - zero, color=colour, alpha=alpha, label=label)
    if drill.t0 is not None:
        for ax in axes:
            ax.axvline(0, color=FAULT_COLOUR, lw=1.2, label="fault injected (t0)" if ax is axes[-1] else None)


def trend_png(series: dict[str, list[Point]], what: str) -> bytes | None:
    """`what` (e.g. "RTO") of each drill / app over past runs, objective dashed; None without points."""
    if not series:
        return None
    figure, ax = _pyplot().subplots(figsize=(10, 3.6))
    for index, (name, points) in enumerate(sorted(series.items())):
        colour = PHASE_COLOURS[index % len(PHASE_COLOURS)]
        times = [dt.datetime.fromtimestamp(p.time, dt.UTC) for p in points]
        ax.plot(times, [p.value for p in points], "o-", color=colour, label=f"{name} (measured)")
        goals = [p.objective for p in points]
        if any(g is not None for g in goals):
            ax.plot(times, goals, "--", color=colour, alpha=0.7, label=f"{name} (objective)")
    ax.set_ylabel(f"{what} (seconds)")
    ax.set_xlabel("run start (UTC)")
    ax.set_ylim(bottom=0)
    if len({p.time for points in series.values() for p in points}) > 1:  # one run: matplotlib's own ticks
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(maxticks=6)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"{what} across runs: lower is better; a point above its dashed line missed the objective")
    return _png(figure)
