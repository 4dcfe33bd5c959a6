"""What happens to a run's records when the run ends, and again whenever `fleetdrill report` asks:
run.json, the history, report.html, the evidence pack (quarterly and full runs); and reports/latest, which
the command line points at the newest run it published."""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import allure_html, evidence, history, html
from harness.report.runs import LATEST, RUN_META, Run, latest_run_id, load_run

EVIDENCE_SUITES = (None, "quarterly")  # a run without --suite runs the whole catalogue, quarterly included


@dataclass(frozen=True)
class Published:
    """Where a run's reports went."""

    run: Run
    report: Path
    evidence: Path | None
    history: Path
    allure_report: Path | None = None


def write_meta(report_dir: Path, run_id: str, suite: str | None, exit_status: int) -> None:
    """run.json: what the run itself knows (its suite and exit status), written when it ends."""
    folder = report_dir / run_id
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "run_id": run_id,
        "suite": suite,
        "exit_status": exit_status,
        "ended": time.time(),
    }
    (folder / RUN_META).write_text(json.dumps(meta, indent=1))


def point_latest(report_dir: Path) -> None:
    """reports/latest -> the newest run (a relative symlink, swapped in atomically)."""
    run_id = latest_run_id(report_dir)
    link = report_dir / LATEST
    partial = report_dir / f".{LATEST}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    partial.symlink_to(run_id, target_is_directory=True)
    partial.replace(link)


def publish(report_dir: Path, run_id: str | None = None, with_evidence: bool | None = None) -> Published:
    """Build every report of a run from its records (the newest run when run_id is None).

    with_evidence None: an evidence pack for quarterly and full runs, none for gate and game-day runs.
    """
    run = load_run(report_dir, run_id)
    history_path = report_dir / history.HISTORY
    past = history.record(history_path, run)
    report = Path(html.write(run, past))
    if with_evidence is None:
        with_evidence = run.meta.get("suite") in EVIDENCE_SUITES
    pack = evidence.build(run, past) if with_evidence else None
    return Published(run, report, pack, history_path, allure_html.generate(run.folder))


def located(report_dir: Path, run_id: str) -> Published:
    """Where the reports of a run already published are (nothing is rebuilt)."""
    run = load_run(report_dir, run_id)
    pack, allure_report = run.folder / evidence.EVIDENCE, run.folder / allure_html.REPORT / "index.html"
    return Published(
        run,
        run.folder / html.REPORT,
        pack if pack.is_dir() else None,
        report_dir / history.HISTORY,
        allure_report if allure_report.exists() else None,
    )
