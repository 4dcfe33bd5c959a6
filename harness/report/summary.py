"""The one-screen terminal summary of a run: one row per objective judged, the verdict in colour."""

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.report.html import summary_rows
from harness.report.publish import Published
from harness.report.words import reason_line

LOG_WIDTH = 160  # CI logs and pipes: wide enough that drill names are not folded
STYLES = {"pass": "bold green", "fail": "bold red", "error": "bold yellow", "skip": "dim"}


def show(published: Published, console: Console | None = None) -> None:
    """Print the run's verdict table and where its reports are."""
    console = console or Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
    run = published.run
    table = Table(
        title=f"fleetdrill run {run.run_id}: {run.verdict.upper()}", title_style=STYLES[run.verdict]
    )
    for column in ("drill", "cluster", "objective", "measured", "verdict", "reason"):
        table.add_column(column, overflow="fold", no_wrap=column == "verdict")
    titles = {drill.name: drill.title for drill in run.drills}  # drills in words, as in the HTML report
    for drill, cluster, objective, _expected, measured, verdict, reason in summary_rows(run):
        cells = (escape(text) for text in (titles[drill], cluster, objective, measured))
        table.add_row(*cells, f"[{STYLES.get(verdict, '')}]{verdict}", escape(reason_line(reason)))
    console.print(table)
    console.print(f"HTML report: {published.report}")
    if published.evidence is not None:
        console.print(f"evidence pack: {published.evidence}")
    if published.allure_report is not None:
        console.print(f"allure report: {published.allure_report}")
    console.print(f"history: {published.history}")
