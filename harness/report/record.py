"""The JSON record of one drill run, with the raw probe and sentinel data behind every figure.

reports/RUN_ID/DRILL/record.json, probes.jsonl, sentinel.jsonl, dns.jsonl, promql.jsonl. No secrets: the
record names clusters, contexts and endpoints, never credentials, and anything token-looking that slips into
it (a failure message quoting a header or a kubeconfig) is masked.
"""

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.drill import Drill
from harness.machine import MachineLoad
from harness.report.drill_record import DrillRecord, RecordedCluster, RecordedEnvironment, RecordedTimeline
from harness.report.runs import RECORD, VERDICTS
from harness.report.words import readable

OUTCOME_VERDICTS = {"passed": "pass", "failed": "fail", "skipped": "skip"}  # any other outcome: error
NO_VERDICT = "no verdict: the drill judged no objective, so it proves nothing"
LABEL_CHARS = 60  # a module docstring's `Label: what it does` prefix, when it has one


def _sentence(doc: str | None) -> str:
    """A docstring's first sentence (its first paragraph, unwrapped, to the first full stop)."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].removesuffix(".")


def title_of(item: Any) -> str:
    """A drill's title in words, from its pytest item: the first sentence of its test function's docstring;
    else of its module's (as `Label: the test's name in words` when that starts with a short label, as
    `Active-passive: ...` does); else a Chaos Toolkit experiment's title; "" when it has none. A
    parametrized drill's parameter follows in brackets: `Lose one cluster (ap-south)`."""
    name = str(getattr(item, "name", ""))
    parameter = name.partition("[")[2].removesuffix("]")
    title = _sentence(getattr(getattr(item, "obj", None), "__doc__", None))
    if not title:
        title = _sentence(getattr(getattr(item, "module", None), "__doc__", None))
        label, colon, _ = title.partition(": ")
        if colon and len(label) <= LABEL_CHARS:
            words = readable(name.partition("[")[0])
            title = f"{label}: {words[:1].lower()}{words[1:]}"
    raw = getattr(item, "raw", None)
    if not title and isinstance(raw, dict):
        title = str(raw.get("title") or "")
    return f"{title} ({parameter})" if title and parameter else title


def overall(drill: Drill, outcome: str) -> str:
    """The drill's verdict: the worst of its objectives' and its outcome's (a test that failed or broke never
    passes, whatever it judged); a drill that judged nothing is an error unless it was skipped."""
    statuses = {v.status for v in drill.verdicts} | {OUTCOME_VERDICTS.get(outcome, "error")}
    if not drill.verdicts and outcome != "skipped":
        statuses.add("error")
    return next(status for status in VERDICTS if status in statuses)


def conclude(drill: Drill, outcome: str, message: str, teardown: str = "") -> tuple[str, str]:
    """The outcome and message to record, from the test's (`outcome` of its call: passed, failed, error or
    skipped) and the error its teardown raised, if any: a failed teardown makes it "error"; verdicts that
    fail or error, or none at all, make a passed or skipped test "failed" (the plugin fails it too)."""
    if teardown:
        return "error", "\n".join(filter(None, (message, f"teardown: {teardown}")))
    if outcome in ("passed", "skipped") and overall(drill, outcome) in ("fail", "error"):
        unmet = [v.message for v in drill.verdicts if v.status in ("fail", "error")]
        return "failed", "; ".join(unmet) or NO_VERDICT
    if not drill.verdicts and outcome != "skipped":
        return outcome, "\n".join(filter(None, (message, NO_VERDICT)))
    return outcome, message


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("fleetdrill", "kubernetes", "pytest"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def write(
    drill: Drill,
    folder: Path,
    run_id: str,
    outcome: str,
    message: str,
    title: str = "",
    runner: MachineLoad | None = None,
) -> Path:
    """Write the drill's record and raw data into folder; return the record's path. `title`: the drill in
    words (title_of); without one, the reports put its name in words. `runner`: how busy the harness's
    machine was during the drill."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "probes.jsonl").open("w") as probes:
        for app, observation in drill.observations.items():
            for samples in observation.samples.values():
                for sample in samples:
                    probes.write(json.dumps({"app": app, **sample.to_dict()}) + "\n")
    with (folder / "dns.jsonl").open("w") as answers:
        for app, observation in drill.observations.items():
            for answer in observation.dns:
                answers.write(json.dumps({"app": app, **answer.to_dict()}) + "\n")
    with (folder / "promql.jsonl").open("w") as metrics:
        for series in drill.metric_series:
            metrics.write(json.dumps(series.to_dict()) + "\n")
    with (folder / "sentinel.jsonl").open("w") as sentinel:
        for app, observation in drill.observations.items():
            for write_ in observation.writes:
                sentinel.write(
                    json.dumps({"app": app, "stream": observation.stream, **write_.to_dict()}) + "\n"
                )
    record = DrillRecord(
        drill=drill.name,
        title=title,
        run_id=run_id,
        fleet=drill.fleet.name,
        verdict=overall(drill, outcome),
        outcome=outcome,
        message=message,
        objectives={
            app.name: app.objectives.model_dump(mode="json", exclude_none=True)
            for app in drill.fleet.apps
            if app.name in drill.observations
        },
        figures=drill.figures,
        verdicts=tuple(drill.verdicts),
        timeline=RecordedTimeline(tuple(drill.timeline.events())),
        clusters=tuple(
            RecordedCluster(c.name, c.region, c.role, drill.fleet.context_for(c))
            for c in drill.fleet.clusters
        ),
        environment=RecordedEnvironment(_versions(), sys.platform, runner),
    )
    path = folder / RECORD
    path.write_text(record.to_json())
    return path
