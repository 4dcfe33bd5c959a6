"""Reading a run's drill records back (reports/RUN_ID/DRILL/record.json and its raw data), secrets masked.

Every report (HTML, history, evidence, terminal summary) is built from what this module reads, so a report
can be rebuilt from the records alone.
"""

import datetime as dt
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.report.drill_record import DrillRecord
from harness.report.redact import redact_data
from harness.report.words import readable
from harness.timeline import Event

RECORD = "record.json"
RUN_META = "run.json"
LATEST = "latest"
RUN_ID = re.compile(r"^[\w.-]+$")
VERDICTS = ("error", "fail", "pass", "skip")
"""A drill's verdicts, worst first: skip only when it did not run (pytest skipped it)."""


def check_run_id(run_id: str, source: str) -> str:
    """run_id if it can name a folder (letters, digits, `_`, `.`, `-`); else an error naming source."""
    if not RUN_ID.match(run_id) or run_id in (".", "..", LATEST):
        raise ConfigError(f"{source}: run id {run_id!r}: expected letters, digits, '_', '.' or '-'")
    return run_id


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: expected a JSON drill record ({error})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(redact_data(json.loads(line)))
            except ValueError:
                raise ConfigError(f"{path}:{number}: expected one JSON object per line") from None
    return rows


@dataclass(frozen=True)
class DrillResult:
    """One drill's record (secrets masked) and the folder holding its raw data."""

    folder: Path
    record: DrillRecord

    @property
    def name(self) -> str:
        return self.record.drill

    @property
    def title(self) -> str:
        """The drill in words: its recorded title, else (older records) its name in words."""
        return self.record.title or readable(self.name)

    @property
    def verdict(self) -> str:
        """The record's verdict; error when it has none we know."""
        return self.record.verdict if self.record.verdict in VERDICTS else "error"

    @property
    def events(self) -> tuple[Event, ...]:
        return self.record.events

    @property
    def t0(self) -> float | None:
        """Monotonic time the first fault's injection began (records made before that moment was kept: when
        it completed); None when the drill injected none."""
        names = [e.name for e in self.events]
        started = "fault.injecting" if "fault.injecting" in names else "fault.injected"
        return next((e.t_mono for e in self.events if e.name == started), None)

    @property
    def faulted(self) -> list[str]:
        """Clusters the drill's faults targeted, in order of injection."""
        found: list[str] = []
        for event in self.events:
            if event.name == "fault.injected":
                found += [t for t in event.detail.get("targets", []) if t not in found]
        return found

    def fault_spans(self) -> list[tuple[str, float, float | None]]:
        """(description, injected, reverted or None) of every fault the drill injected, in order."""
        spans: dict[object, list[Any]] = {}
        for event in self.events:
            detail = event.detail
            key = detail.get("id") or (detail.get("kind"), tuple(detail.get("targets", ())))
            if event.name == "fault.injected":
                targets = ", ".join(detail.get("targets", ())) or "?"
                start = detail.get("started", event.t_mono)  # injection began (older records: ended)
                spans[key] = [f"fault: {detail.get('kind', '?')} on {targets}", start, None]
            elif event.name == "fault.reverted" and key in spans:
                spans[key][2] = event.t_mono
        return [(text, start, end) for text, start, end in spans.values()]

    @property
    def cluster(self) -> str:
        """The clusters this drill faulted, else the cluster it ran for (`drill[cluster]`), else `-`."""
        names = {c.name for c in self.record.clusters}
        parameter = self.name.rpartition("[")[2].rstrip("]") if self.name.endswith("]") else ""
        return ", ".join(self.faulted) or (parameter if parameter in names else "-")

    def wall(self, t_mono: float) -> float:
        """Wall-clock time of a monotonic time, using the timeline's paired clock readings."""
        if not self.events:
            return 0.0
        first = self.events[0]
        return t_mono - first.t_mono + first.t_wall

    @property
    def started(self) -> float | None:
        """Wall-clock time of the drill's first event."""
        return self.events[0].t_wall if self.events else None

    def raw_path(self, kind: str) -> Path:
        return self.folder / getattr(self.record.raw, kind)

    @cached_property
    def probes(self) -> list[dict[str, Any]]:
        """The raw probe samples behind every figure (app, target, sent, received, ok, status, ...)."""
        return _read_jsonl(self.raw_path("probes"))

    @cached_property
    def promql(self) -> list[dict[str, Any]]:
        """The raw series behind the PromQL objectives (app, objective, cluster, query, labels, points)."""
        return _read_jsonl(self.raw_path("promql"))

    @cached_property
    def sentinel(self) -> list[dict[str, Any]]:
        """The raw sentinel writes behind RPO (app, stream, seq, acked_at)."""
        return _read_jsonl(self.raw_path("sentinel"))


@dataclass(frozen=True)
class Run:
    """A run's folder, its drills in name order, and what the run itself recorded (run.json)."""

    run_id: str
    folder: Path
    drills: tuple[DrillResult, ...]
    meta: dict[str, Any]

    @property
    def started(self) -> float:
        """Wall-clock start: from run.json, else the earliest drill event, else the folder's time."""
        if "started" in self.meta:
            return float(self.meta["started"])
        times = [d.started for d in self.drills if d.started is not None]
        return min(times) if times else self.folder.stat().st_mtime

    @property
    def started_text(self) -> str:
        return dt.datetime.fromtimestamp(self.started, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def verdict(self) -> str:
        """The run's verdict: the worst of its drills' (skipped drills count only when all were skipped)."""
        verdicts = {d.verdict for d in self.drills}
        return next((v for v in VERDICTS if v in verdicts), "error")


def read_drill(folder: Path) -> DrillResult:
    """The drill whose record.json is in folder; a clear error when it is not a drill record."""
    return DrillResult(folder, DrillRecord.parse(_read_json(folder / RECORD), folder / RECORD))


def run_ids(report_dir: Path) -> list[str]:
    """Runs in report_dir that hold drill records, oldest first (run ids start with their UTC time)."""
    if not report_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in report_dir.iterdir()
        if p.is_dir() and not p.is_symlink() and any(p.glob(f"*/{RECORD}"))
    )


def latest_run_id(report_dir: Path) -> str:
    """The newest run in report_dir; a clear error when there is none."""
    found = run_ids(report_dir)
    if not found:
        raise ConfigError(f"{report_dir}: no drill records found (run `fleetdrill run` first)")
    return found[-1]


def load_run(report_dir: Path, run_id: str | None = None) -> Run:
    """Read a run's records (the newest run when run_id is None); a clear error for a missing run."""
    run_id = run_id or latest_run_id(report_dir)
    folder = report_dir / run_id
    records = sorted(folder.glob(f"*/{RECORD}"))
    if not records:
        known = ", ".join(run_ids(report_dir)[-5:]) or "none"
        raise ConfigError(f"{folder}: no drill records for run {run_id!r} (recent runs: {known})")
    drills = tuple(read_drill(path.parent) for path in records)
    meta = _read_json(folder / RUN_META) if (folder / RUN_META).exists() else {}
    return Run(run_id, folder, drills, redact_data(meta))
