"""`fleetdrill run` and `fleetdrill report` as users run them: reports/latest, the HTML report, JUnit XML,
allure results with steps, labels and attachments, the terminal summary, rebuilding from records."""

import json
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.report import allure_html, history
from tests.conftest import run_cli
from tests.report_runs import write_run
from tests.screenshots import blank_or_broken, needs_chromium, rendered

FLEET = """
name: unit
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active}
  - {name: west, region: eu-west, role: passive}
apps:
  - {name: shop, namespace: shop, workload: deployment/shop}
"""

DRILLS = """
import pytest

from harness.samples import Verdict


@pytest.mark.gate
@pytest.mark.drill(app="shop", roles=("passive",))
def test_checks_the_passive_cluster(drill, cluster_name):
    'The passive cluster is checked.'
    with drill.timeline.phase("check", cluster=cluster_name):
        drill.figures["shop"] = {"rto_s": 1.5}
    drill.verdicts.append(Verdict("pass", "RTO", "<= 20 s", "1.5 s", "RTO 1.5 s within objective 20 s", {}))
"""
CLI_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A `fleetdrill run` of one gate drill (it needs no cluster); returns the report folder and stdout."""
    root = tmp_path_factory.mktemp("run")
    (root / "fleet.yaml").write_text(textwrap.dedent(FLEET))
    (root / "drills").mkdir()
    (root / "drills" / "test_gate.py").write_text(DRILLS)
    done = run_cli(
        "run",
        "--fleet",
        root / "fleet.yaml",
        "--drills",
        root / "drills",
        "--report-dir",
        root / "reports",
        "--",
        "--ledger",
        root / "ledger.json",
        timeout=CLI_TIMEOUT_S,
    )
    return root / "reports", done.stdout


def test_run_writes_the_report_latest_and_junit_and_prints_the_summary(ran: tuple[Path, str]) -> None:
    reports, stdout = ran
    latest = reports / "latest"
    assert latest.is_symlink() and (latest / "report.html").is_file()
    assert f"HTML report: {reports / latest.readlink() / 'report.html'}" in stdout.replace("\n", "")
    assert "test_checks_the_passive_cluster[west]" in stdout and "RTO" in stdout and "pass" in stdout
    suite = ET.parse(latest / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "0"
    (entry,) = history.read(reports / history.HISTORY)
    assert entry["figures"] == {"shop": {"rto_s": 1.5}} and entry["verdict"] == "pass"
    (record,) = [json.loads(path.read_text()) for path in latest.glob("*/record.json")]
    assert record["title"] == "The passive cluster is checked (west)", "the drill's docstring titles it"
    assert "<h2>The passive cluster is checked (west) " in (latest / "report.html").read_text()


def test_run_writes_allure_results_with_steps_labels_and_attachments(ran: tuple[Path, str]) -> None:
    results = (ran[0] / "latest" / "allure-results").glob("*-result.json")
    (result,) = [json.loads(path.read_text()) for path in results]
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert {("suite", "gate"), ("cluster", "west"), ("region", "eu-west")} <= labels
    assert ("objective", "RTO: <= 20 s") in labels
    steps = [step["name"] for step in result["steps"]]
    assert steps == ["phase: check@west", "objective RTO: expected <= 20 s, measured 1.5 s"]
    assert all(step["status"] == "passed" and step["stop"] >= step["start"] for step in result["steps"])
    attached = {attachment["name"]: attachment["source"] for attachment in result["attachments"]}
    assert {"figures", "verdicts", "timeline"} <= attached.keys()
    figures = json.loads((ran[0] / "latest" / "allure-results" / attached["figures"]).read_text())
    assert figures == {"shop": {"rto_s": 1.5}}


@needs_chromium
@pytest.mark.skipif(
    allure_html.allure_command() is None, reason="no Allure 3 `allure` command (npm install -g allure@3)"
)
def test_run_writes_allure_s_own_report_and_it_renders(ran: tuple[Path, str], tmp_path: Path) -> None:
    index = ran[0] / "latest" / "allure-report" / "index.html"
    assert f"allure report: {index.resolve()}" in ran[1].replace("\n", "")
    assert blank_or_broken(rendered(index, tmp_path, "1280,900")) is None


def test_report_rebuilds_the_html_report_from_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "20261101T000000Z-bbbbbb"
    write_run(tmp_path, run_id, monkeypatch)
    done = run_cli("report", "--report-dir", tmp_path, timeout=CLI_TIMEOUT_S)
    report = tmp_path / run_id / "report.html"
    first = report.read_text()
    assert "RTO, measured" in first and f"HTML report: {report}" in done.stdout.replace("\n", "")
    assert (tmp_path / "latest").readlink() == Path(run_id)
    report.unlink()
    shutil.rmtree(tmp_path / run_id / "evidence")
    run_cli("report", run_id, "--report-dir", tmp_path, timeout=CLI_TIMEOUT_S)
    assert report.read_text().count("RTO, measured") == first.count("RTO, measured")
    assert run_cli("report", run_id, "--report-dir", tmp_path, "--verify").returncode == 0
    (tmp_path / run_id / "evidence" / "trend.csv").write_text("run_id\n")
    tampered = run_cli("report", "--report-dir", tmp_path, "--verify", check=False)
    assert tampered.returncode == 1
    assert tampered.stderr.strip().splitlines() == [
        f"fleetdrill: error: evidence of run {run_id} fails its manifest: trend.csv: changed (SHA-256 does "
        "not match the manifest)"
    ]


def test_report_names_a_bad_run_id_in_one_line(tmp_path: Path) -> None:
    done = run_cli("report", "../etc", "--report-dir", tmp_path, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "fleetdrill: error: RUN_ID: run id '../etc': expected letters, digits, '_', '.' or '-'"
    )


@pytest.mark.parametrize(
    ("package", "says", "found"),
    [
        ({"name": "allure", "version": "3.0.0"}, "", True),  # read from package.json: never run
        ({"name": "allure", "version": "2.30.0"}, "3.0.0", False),
        (None, "3.1.0", True),  # no npm package beside it: asked
        ({"name": "something-else", "version": "3.0.0"}, "2.30.0", False),
    ],
)
def test_allure_3_is_known_by_its_npm_package_else_by_asking_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: dict | None, says: str, found: bool
) -> None:
    bin_dir, package_dir = tmp_path / "bin", tmp_path / "lib" / "allure"
    bin_dir.mkdir()
    package_dir.mkdir(parents=True)
    script = package_dir / "cli.js"
    script.write_text(f"#!/bin/sh\n[ -n '{says}' ] && echo '{says}' && exit 0\nexit 1\n")
    script.chmod(0o755)
    if package is not None:
        (package_dir / "package.json").write_text(json.dumps(package))
    (bin_dir / "allure").symlink_to(script)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert allure_html.allure_command() == (str(bin_dir / "allure") if found else None)
