"""The evidence pack of a run for auditors (DORA, SOC 2, ISO 22301): reports/RUN_ID/evidence/.

objectives_vs_measured.csv  per app and drill: each objective, what was required, what was measured, verdict
trend.csv                   the history of the measured figures across runs
records/DRILL.json          each drill's full record (figures, verdicts with deciding moments, timeline)
raw/DRILL/*.jsonl           the raw probe, sentinel, DNS and PromQL data behind every figure
environment.json            run, fleet, clusters, versions of the tools
README.txt                  what each file is and how to check the pack
MANIFEST.sha256             SHA-256 of every other file (`sha256sum -c MANIFEST.sha256` checks it too)
Secrets are masked in everything the pack holds.
"""

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

from harness.report.html import summary_rows
from harness.report.redact import redact
from harness.report.runs import Run

EVIDENCE = "evidence"
MANIFEST = "MANIFEST.sha256"
TREND_FIELDS = ("rto_s", "rpo_s", "availability", "longest_outage_s", "lost_writes")

README = """Evidence pack of fleetdrill run {run_id} (fleet {fleet}, started {started}).

objectives_vs_measured.csv: one row per objective judged in a drill: the app(s), the cluster faulted, the
  objective, what was required, what was measured and the verdict with its reason.
trend.csv: the measured figures of every run in the history (seconds; availability as a fraction).
records/: each drill's full record: figures, verdicts with the moments that decided them, the timeline.
raw/: the probe requests (probes.jsonl), numbered data writes (sentinel.jsonl), for a DNS failover the
  global name's answers (dns.jsonl), and the series of each PromQL objective (promql.jsonl) every figure
  comes from.
environment.json: run, fleet, clusters and regions, tool versions.
MANIFEST.sha256: SHA-256 of every other file. Check with `sha256sum -c MANIFEST.sha256` in this folder,
  or `fleetdrill report {run_id} --verify`.
"""


def _csv(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _objective_rows(run: Run) -> list[tuple[str, ...]]:
    apps = {d.name: ", ".join(d.record.figures or d.record.objectives) for d in run.drills}
    return [(apps.get(row[0], ""), *row) for row in summary_rows(run)]


def _trend_rows(history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for entry in history:
        for app, figures in entry.get("figures", {}).items():
            values = tuple(figures.get(key, "") for key in TREND_FIELDS)
            rows.append((entry["run_id"], entry["time"], entry["drill"], app, *values, entry.get("verdict")))
    return rows


def _environment(run: Run) -> dict[str, Any]:
    first = run.drills[0].record.to_data() if run.drills else {}
    return {
        "run_id": run.run_id,
        "started": run.started_text,
        "run": run.meta,
        "fleet": first.get("fleet"),
        "clusters": first.get("clusters", []),
        "environment": first.get("environment", {}),
    }


def build(run: Run, history: list[dict[str, Any]]) -> Path:
    """Write the run's evidence pack (replacing an older one) and its manifest; return its folder."""
    pack = run.folder / EVIDENCE
    if pack.exists():
        shutil.rmtree(pack)
    files: dict[str, str] = {
        "README.txt": README.format(
            run_id=run.run_id, fleet=_environment(run)["fleet"], started=run.started_text
        ),
        "objectives_vs_measured.csv": _csv(
            ("app", "drill", "cluster faulted", "objective", "required", "measured", "verdict", "reason"),
            _objective_rows(run),
        ),
        "trend.csv": _csv(("run_id", "time", "drill", "app", *TREND_FIELDS, "verdict"), _trend_rows(history)),
        "environment.json": json.dumps(_environment(run), indent=1, sort_keys=True),
    }
    for drill in run.drills:
        files[f"records/{drill.folder.name}.json"] = drill.record.to_json()
        for kind in ("probes", "sentinel", "dns", "promql"):
            source = drill.raw_path(kind)
            if source.exists() and source.stat().st_size:  # a drill without DNS or PromQL has none
                files[f"raw/{drill.folder.name}/{source.name}"] = redact(source.read_text())
    for name, text in files.items():
        path = pack / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    write_manifest(pack)
    return pack


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _members(pack: Path) -> list[str]:
    return sorted(str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(pack: Path) -> None:
    """MANIFEST.sha256 in sha256sum's format: `<hex>  <path>` per file."""
    lines = [f"{_digest(pack / name)}  {name}\n" for name in _members(pack)]
    (pack / MANIFEST).write_text("".join(lines))


def verify(pack: Path) -> list[str]:
    """Problems found checking the pack against its manifest (an empty list: intact)."""
    manifest = pack / MANIFEST
    if not pack.is_dir():
        return [f"{pack}: no evidence pack (`fleetdrill report {pack.parent.name} --evidence` builds one)"]
    if not manifest.exists():
        return [f"{manifest}: no manifest"]
    listed: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            return [f"{manifest}:{number}: expected `<sha256 hex>  <path>`"]
        listed[name] = digest
    problems = [f"{name}: missing" for name in listed if not (pack / name).is_file()]
    problems += [
        f"{name}: changed (SHA-256 does not match the manifest)"
        for name, digest in listed.items()
        if (pack / name).is_file() and _digest(pack / name) != digest
    ]
    problems += [f"{name}: not in the manifest" for name in _members(pack) if name not in listed]
    return problems
