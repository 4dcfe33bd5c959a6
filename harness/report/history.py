"""The history file (reports/history.jsonl): one line per drill per run, for the trend across runs.

A line holds the run id, the run's start time, the drill, the clusters it faulted, the verdict, and per app
the figures that trend (RTO, RPO, availability, longest outage, lost writes) with the objectives they were
judged against. Recording a run again (a rebuilt report) replaces its lines instead of adding more.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import units
from harness.errors import ConfigError
from harness.report.redact import redact_data
from harness.report.runs import Run

HISTORY = "history.jsonl"
TRENDED = ("rto_s", "rpo_s", "availability", "longest_outage_s", "lost_writes")


def entries(run: Run) -> list[dict[str, Any]]:
    """The history lines of one run."""
    lines = []
    for drill in run.drills:
        figures, objectives = drill.record.figures, drill.record.objectives
        lines.append(
            {
                "run_id": run.run_id,
                "time": run.started,
                "drill": drill.name,
                "cluster": drill.cluster,
                "verdict": drill.verdict,
                "figures": {
                    app: {key: values[key] for key in TRENDED if key in values}
                    for app, values in figures.items()
                },
                "objectives": {
                    app: {key: goals[key] for key in ("rto", "rpo", "availability") if key in goals}
                    for app, goals in objectives.items()
                },
            }
        )
    return lines


def read(path: Path) -> list[dict[str, Any]]:
    """Every line of the history file, oldest run first (an absent file is an empty history)."""
    if not path.exists():
        return []
    found = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise ConfigError(f"{path}:{number}: expected one JSON object per line") from None
        if not isinstance(entry, dict) or not {"run_id", "time", "drill"} <= entry.keys():
            raise ConfigError(f"{path}:{number}: expected fields run_id, time and drill")
        found.append(redact_data(entry))
    return sorted(found, key=lambda e: (e["time"], e["drill"]))


def record(path: Path, run: Run) -> list[dict[str, Any]]:
    """Add the run's lines to the history (replacing any it had); return the whole history."""
    kept = [e for e in read(path) if e["run_id"] != run.run_id]
    history = sorted(kept + entries(run), key=lambda e: (e["time"], e["drill"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in history))
    partial.replace(path)
    return history


@dataclass(frozen=True)
class Point:
    """One run's figure for one drill and app, with the objective it was judged against (seconds)."""

    run_id: str
    time: float
    value: float
    objective: float | None
    verdict: str


def _seconds(value: object) -> float | None:
    try:
        return units.parse_duration(value) if value is not None else None
    except ValueError:
        return None


def trend(history: list[dict[str, Any]], figure: str) -> dict[str, list[Point]]:
    """Per `drill / app`, the measured `rto_s` or `rpo_s` of every run that measured it, oldest first."""
    objective_key = figure.removesuffix("_s")
    series: dict[str, list[Point]] = {}
    for entry in history:
        for app, figures in entry.get("figures", {}).items():
            value = figures.get(figure)
            if isinstance(value, int | float):
                goal = _seconds(entry.get("objectives", {}).get(app, {}).get(objective_key))
                point = Point(entry["run_id"], entry["time"], float(value), goal, entry.get("verdict", "?"))
                series.setdefault(f"{entry['drill']} / {app}", []).append(point)
    return series
