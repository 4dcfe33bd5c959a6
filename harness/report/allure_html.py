"""Allure's own HTML report of a run (reports/RUN_ID/allure-report/index.html), when the `allure` command
of Allure 3 (the npm package `allure`, no Java needed) is installed; one self-contained file that opens
offline, like our own report."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import FleetDrillError

RESULTS = "allure-results"
REPORT = "allure-report"
GENERATE_TIMEOUT_S = 300


def allure_command() -> str | None:
    """The `allure` command when it is Allure 3 (whose options we use), else None. The npm package says its
    version in its package.json beside the script the command links to; otherwise the command is asked
    (`allure --version` starts Node: over a second)."""
    found = shutil.which("allure")
    if found is None:
        return None
    version = _npm_version(Path(found).resolve().parent / "package.json")
    if version is None:
        try:
            done = subprocess.run(
                [found, "--version"], capture_output=True, text=True, timeout=60, check=False
            )
        except subprocess.TimeoutExpired:
            return None
        version = done.stdout.strip() if done.returncode == 0 else ""
    return found if version.startswith("3.") else None


def _npm_version(package: Path) -> str | None:
    """The version in the npm package `allure`'s package.json; None when that is not what the file is."""
    try:
        manifest = json.loads(package.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("name") != "allure":
        return None
    return str(manifest.get("version", ""))


def generate(run_folder: Path) -> Path | None:
    """Build Allure's report from the run's allure results; None when there are none or no Allure 3."""
    results, command = run_folder / RESULTS, allure_command()
    if command is None or not any(results.glob("*-result.json")):
        return None
    output = run_folder / REPORT
    config = {
        "name": f"fleetdrill run {run_folder.name}",
        "output": str(output),
        "plugins": {
            "awesome": {"options": {"singleFile": True, "reportName": f"fleetdrill {run_folder.name}"}}
        },
    }
    with tempfile.TemporaryDirectory(prefix="fleetdrill-allure-") as scratch:
        path = Path(scratch) / "allurerc.json"
        path.write_text(json.dumps(config))
        try:
            done = subprocess.run(
                [command, "generate", str(results), "--config", str(path)],
                capture_output=True,
                text=True,
                timeout=GENERATE_TIMEOUT_S,
                env={**os.environ, "NO_COLOR": "1"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise FleetDrillError(
                f"allure generate took over {GENERATE_TIMEOUT_S} s; {results} kept"
            ) from None
    if done.returncode != 0 or not (output / "index.html").exists():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FleetDrillError(f"allure generate failed for {results}: {last[0]}")
    return output / "index.html"
