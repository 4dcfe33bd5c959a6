"""The self-contained HTML report of one run: reports/RUN_ID/report.html.

Everything is in the one file (pictures as data: URIs, styles inline): it opens offline and can be mailed.
Sections: what the run concluded, a summary table (one row per objective judged, drills titled in words; it
fits the page's width), per drill what went wrong in one sentence (the traceback folded below it), its
figures, RTO phases, timeline plot and events, then the trend of RTO and RPO across past runs.
"""

import base64
import datetime as dt
from html import escape
from typing import Any

from harness.report import plots
from harness.report.history import trend
from harness.report.runs import VERDICTS, DrillResult, Run
from harness.report.words import (
    GLOSSARY,
    VERDICT_COLOURS,
    VERDICT_WORDS,
    figure_rows,
    headline,
    phase_rows,
    reason_line,
)

REPORT = "report.html"
SUMMARY_REASON_CHARS = 400  # the whole message is in the drill's section
SUMMARY_COLUMNS = (  # (header, share of the page's width): the summary table fits the page, never scrolls
    ("drill", 17),
    ("cluster", 8),
    ("objective", 10),
    ("expected", 12),
    ("measured", 10),
    ("verdict", 7),
    ("reason", 36),
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:78em;padding:0 1em;color:#1f2328;
line-height:1.45;overflow-wrap:anywhere}table{border-collapse:collapse;margin:.6em 0;max-width:100%}
table.summary{width:100%;table-layout:fixed}td,th{border:1px solid #d0d7de;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f6f8fa}.verdict{color:#fff;font-weight:bold;
padding:.1em .5em;border-radius:.3em;white-space:nowrap}img{max-width:100%;border:1px solid #d0d7de}
.note{color:#59636e}pre{background:#f6f8fa;padding:.6em;white-space:pre-wrap;max-height:20em;overflow:auto}
section{border-top:2px solid #d0d7de;margin-top:2em}.what{font-size:1.1em;font-weight:600}
"""


def _badge(verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict, "#59636e")
    return f'<span class="verdict" style="background:{colour}">{escape(verdict.upper())}</span>'


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], raw: int = -1) -> str:
    """A table; cells are escaped except column `raw` (already HTML)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i == raw else escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(png: bytes | None, alt: str) -> str:
    if png is None:
        return f'<p class="note">{escape(alt)}: no data to plot.</p>'
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _objective_rows(drill: DrillResult) -> list[tuple[str, str, str, str, str, str]]:
    """(cluster, objective, expected, measured, verdict, reason) for every objective the drill judged, and
    a row with its outcome when that decided its verdict (it judged none, or broke after judging)."""
    record = drill.record
    rows = [
        (drill.cluster, v.objective, v.expected, v.measured, v.status, v.message) for v in record.verdicts
    ]
    if drill.verdict not in {v.status for v in record.verdicts}:
        expected = "the drill runs to its end and judges its objectives"
        message = record.message or "no objective was judged"
        rows.append((drill.cluster, "drill completed", expected, record.outcome, drill.verdict, message))
    if not record.loaded_runner:
        return rows
    return [
        (*row[:5], f"{row[5]} ({record.loaded_runner})" if row[4] in ("fail", "error") else row[5])
        for row in rows
    ]


def summary_rows(run: Run) -> list[tuple[str, str, str, str, str, str, str]]:
    """(drill, cluster, objective, expected, measured, verdict, reason) for every objective judged, and a
    row with the drill's outcome when that decided its verdict (it judged none, or broke after judging)."""
    return [(drill.name, *row) for drill in run.drills for row in _objective_rows(drill)]


def _summary(run: Run) -> str:
    """The summary table: per drill its title (a link to its section) beside one row per objective."""
    columns = "".join(f'<col style="width:{share}%">' for _, share in SUMMARY_COLUMNS)
    head = "".join(f"<th>{escape(header)}</th>" for header, _ in SUMMARY_COLUMNS)
    body = []
    for drill in run.drills:
        rows = _objective_rows(drill)
        title = f'<td rowspan="{len(rows)}"><a href="#{escape(drill.name)}">{escape(drill.title)}</a></td>'
        for index, (cluster, objective, expected, measured, verdict, reason) in enumerate(rows):
            cells = "".join(f"<td>{escape(text)}</td>" for text in (cluster, objective, expected, measured))
            reason_cell = f"<td>{escape(reason_line(reason, SUMMARY_REASON_CHARS))}</td>"
            body.append(
                f"<tr>{title if index == 0 else ''}{cells}<td>{_badge(verdict)}</td>{reason_cell}</tr>"
            )
    return f'<table class="summary"><colgroup>{columns}</colgroup><tr>{head}</tr>{"".join(body)}</table>'


def _objective_text(objectives: dict[str, Any]) -> str:
    parts = []
    for key, value in objectives.items():
        if key == "promql":
            parts += [f"PromQL {o.get('name')} {o.get('comparison')} {o.get('bound')}" for o in value]
            continue
        parts.append(f"{key} {value:.3%}" if key == "availability" else f"{key} {value}")
    return ", ".join(parts) or "none set"


def _events(drill: DrillResult) -> str:
    zero = drill.t0 if drill.t0 is not None else (drill.events[0].t_mono if drill.events else 0.0)
    rows = []
    for event in drill.events:
        wall = dt.datetime.fromtimestamp(event.t_wall, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        detail = ", ".join(f"{k}={v}" for k, v in event.detail.items() if k != "id")
        rows.append((f"{event.t_mono - zero:+.2f} s", wall, event.name, event.cluster or "", detail))
    header = ("since fault", "UTC", "event", "cluster", "detail")
    return f"<details><summary>timeline: {len(rows)} events</summary>{_table(header, rows)}</details>"


def _place(drill: DrillResult) -> str:
    """Where a drill acted, in words: "after the cluster-loss on us-east", "on us-east", or ""."""
    faults = [f"the {text.removeprefix('fault: ')}" for text, _start, _end in drill.fault_spans()]
    if faults:
        return f"after {' and '.join(dict.fromkeys(faults))}"
    return f"on {drill.cluster}" if drill.cluster != "-" else ""


def _what_happened(drill: DrillResult) -> str:
    """The verdict in one plain sentence (what went wrong and where), then the drill's own report of it,
    the Python traceback when it raised, folded away."""
    sentence = headline(drill.record, _place(drill))
    parts = [
        f'<p class="what">{escape(sentence)}</p>'
        if sentence
        else f"<p>{escape(VERDICT_WORDS.get(drill.verdict, drill.verdict))}.</p>"
    ]
    runner = drill.record.environment.runner
    ran_on = f"; the runner: {runner.describe()}" if runner else ""
    parts.append(
        f'<p class="note">Drill {escape(drill.name)}; faulted: {escape(drill.cluster)}{escape(ran_on)}.</p>'
    )
    message = drill.record.message
    if message:
        traced = any(line.startswith("E ") for line in message.splitlines())
        label = "The Python traceback" if traced else "What the drill reported"
        parts.append(f"<details><summary>{label}</summary><pre>{escape(message)}</pre></details>")
    return "".join(parts)


def _drill(drill: DrillResult) -> str:
    parts = [f'<section id="{escape(drill.name)}"><h2>{escape(drill.title)} {_badge(drill.verdict)}</h2>']
    parts.append(_what_happened(drill))
    objectives, all_figures = drill.record.objectives, drill.record.figures
    for app in dict.fromkeys([*all_figures, *objectives]):  # an app probed but never judged has no figures
        figures, goals = all_figures.get(app), objectives.get(app, {})
        parts.append(f"<h3>app {escape(app)}: objectives {escape(_objective_text(goals))}</h3>")
        if figures is None:
            parts.append('<p class="note">No figures: the drill ended before it judged this app.</p>')
        else:
            parts.append(_table(("figure", "value", "what it means"), figure_rows(figures)))
            phases = phase_rows(figures)
            if phases:
                parts.append("<p>Where the recovery time went, phase by phase:</p>")
                parts.append(_table(("phase", "time within the RTO"), phases))
        rto = figures.get("rto_s") if figures is not None else None
        png = plots.timeline_png(drill, app, plots.latency_seconds(goals.get("latency")), rto)
        parts.append(_image(png, f"timeline of {drill.title}, app {app}"))
        parts.append(
            '<p class="note">Top: every probe request per endpoint over time. Bottom: how long the '
            "global endpoint took to answer or to give up (log scale). The red band is the fault, coloured "
            "bands are the drill's phases, the red line at 0 is the moment the fault took effect, the green "
            "dashed line the moment users were served again (the measured RTO).</p>"
        )
        metrics = plots.promql_png(drill, app)
        if metrics is not None:
            parts.append(_image(metrics, f"PromQL objectives of {drill.title}, app {app}"))
            parts.append(
                '<p class="note">The series each PromQL objective\'s range query returned, on the same time '
                "axis and bands as the probes above; the dashed line is the bound every value must keep.</p>"
            )
    raw = ", ".join(
        f'<a href="{escape(drill.folder.name)}/{escape(drill.raw_path(k).name)}">{escape(k)}</a>'
        for k in ("probes", "sentinel", "promql")
    )
    parts.append(f"{_events(drill)}<p class='note'>Raw data behind these figures: {raw}.</p></section>")
    return "".join(parts)


def _trend(history: list[dict[str, Any]]) -> str:
    parts = ["<section><h2>Trend across runs</h2>"]
    parts.append(
        f'<p class="note">From the history file: {len(history)} drill results of '
        f"{len({e['run_id'] for e in history})} runs. Each point is one run.</p>"
    )
    for figure, what in (("rto_s", "RTO"), ("rpo_s", "RPO")):
        parts.append(_image(plots.trend_png(trend(history, figure), what), f"{what} trend"))
    parts.append("</section>")
    return "".join(parts)


def _environment(run: Run) -> str:
    versions: dict[str, str] = {}
    for drill in run.drills:
        versions |= drill.record.environment.versions
    rows = [(name, version) for name, version in sorted(versions.items())]
    return f"<section><h2>Environment</h2>{_table(('component', 'version'), rows)}</section>"


def render(run: Run, history: list[dict[str, Any]]) -> str:
    """The whole report as one HTML document."""
    fleet = next((d.record.fleet for d in run.drills if d.record.fleet), "?")
    counts = {v: sum(d.verdict == v for d in run.drills) for v in VERDICTS}
    glossary = "".join(f"<dt><b>{escape(term)}</b></dt><dd>{escape(text)}</dd>" for term, text in GLOSSARY)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>fleetdrill run {escape(run.run_id)}</title><style>{STYLE}</style></head><body>"
        f"<h1>DR drill report {_badge(run.verdict)}</h1>"
        f"<p>Run <b>{escape(run.run_id)}</b> on fleet <b>{escape(str(fleet))}</b>, "
        f"started {run.started_text}. "
        f"{len(run.drills)} drills: {counts['pass']} passed, {counts['fail']} missed an objective, "
        f"{counts['error']} could not be judged, {counts['skip']} skipped.</p>"
        f"<h2>Summary</h2><p class='note'>One row per objective judged. PASS: met; FAIL: missed; "
        f"ERROR: not enough data to judge (counts as not met).</p>{_summary(run)}"
        f"<details><summary>What the words mean</summary><dl>{glossary}</dl></details>"
        + "".join(_drill(d) for d in run.drills)
        + _trend(history)
        + _environment(run)
        + "</body></html>"
    )


def write(run: Run, history: list[dict[str, Any]]) -> str:
    """Write report.html into the run's folder; return its path."""
    path = run.folder / REPORT
    path.write_text(render(run, history))
    return str(path)
