"""The JSON record of one drill run, with the raw probe and sentinel data behind every figure.

reports/RUN_ID/DRILL/record.json, probes.jsonl, sentinel.jsonl. No secrets: the record names
clusters, contexts and endpoints, never credentials, and anything token-looking that slips into it
(a failure message quoting a header or a kubeconfig) is masked.
"""

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from harness.drill import Drill
from harness.report.redact import redact_data

VERDICT_ORDER = ("error", "fail", "pass")


def overall(drill: Drill, outcome: str) -> str:
    """The drill's verdict: the worst of its objectives', or the test's outcome when nothing was judged."""
    statuses = {v.status for v in drill.verdicts}
    for status in VERDICT_ORDER:
        if status in statuses:
            return status
    return {"passed": "pass", "failed": "fail"}.get(outcome, "error")


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("fleetdrill", "kubernetes", "pytest"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def write(drill: Drill, folder: Path, run_id: str, outcome: str, message: str) -> Path:
    """Write the drill's record and raw data into folder; return the record's path."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "probes.jsonl").open("w") as probes:
        for app, observation in drill.observations.items():
            for samples in observation.samples.values():
                for sample in samples:
                    probes.write(json.dumps({"app": app, **sample.to_dict()}) + "\n")
    with (folder / "sentinel.jsonl").open("w") as sentinel:
        for app, observation in drill.observations.items():
            for write_ in observation.writes:
                sentinel.write(
                    json.dumps({"app": app, "stream": observation.stream, **write_.to_dict()}) + "\n"
                )
    record = {
        "drill": drill.name,
        "run_id": run_id,
        "fleet": drill.fleet.name,
        "verdict": overall(drill, outcome),
        "outcome": outcome,
        "message": message,
        "objectives": {
            app.name: app.objectives.model_dump(mode="json", exclude_none=True)
            for app in drill.fleet.apps
            if app.name in drill.observations
        },
        "figures": drill.figures,
        "verdicts": [v.to_dict() for v in drill.verdicts],
        "timeline": drill.timeline.to_dict(),
        "clusters": [
            {"name": c.name, "region": c.region, "role": c.role, "context": drill.fleet.context_for(c)}
            for c in drill.fleet.clusters
        ],
        "environment": {"versions": _versions(), "platform": sys.platform},
        "raw": {"probes": "probes.jsonl", "sentinel": "sentinel.jsonl"},
    }
    path = folder / "record.json"
    path.write_text(json.dumps(redact_data(json.loads(json.dumps(record, default=str))), indent=1))
    return path
