"""The pytest plugin, driven as users drive it (pytester runs pytest on drill files we write)."""

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.faults import Ledger
from harness.faults.network import DenyAllPolicy
from harness.report.record import NO_VERDICT

pytest_plugins = ["pytester"]

FLEET = """
name: unit
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active, environment: prod}
  - {name: west, region: eu-west, role: passive}
  - {name: south, region: ap-south, role: standby}
apps:
  - {name: shop, namespace: shop, workload: deployment/shop}
safety:
  allowlist: [west, east]
"""

DRILLS = """
import pytest

@pytest.mark.gate
@pytest.mark.drill(app="shop", roles=("passive", "standby"))
def test_reads(drill, cluster_name):
    assert drill.app("shop").name == "shop"
    drill.judge_drift("app read", "shop read", [])

@pytest.mark.destructive
@pytest.mark.quarterly
@pytest.mark.drill(app="shop")
def test_breaks(drill, cluster_name):
    assert False, "the drill failed for real"
"""


# This fleet has no API server: the session does not check that it answers (see test_kubeconfig_errors).
NO_API_SERVER = """
from harness.fleet import FleetAccess

FleetAccess.unreachable = lambda self, clusters=None: {}
"""


@pytest.fixture
def fleet_file(pytester: pytest.Pytester) -> Path:
    pytester.makeconftest(NO_API_SERVER)
    pytester.makefile(".yaml", fleet=textwrap.dedent(FLEET))
    pytester.makepyfile(test_drills=DRILLS)
    return pytester.path / "fleet.yaml"


def run(pytester: pytest.Pytester, fleet: Path, *args: str) -> pytest.RunResult:
    ledger, reports = pytester.path / "ledger.json", pytester.path / "reports"
    return pytester.runpytest_subprocess(
        "--fleet",
        str(fleet),
        "--ledger",
        str(ledger),
        "--report-dir",
        str(reports),
        "-p",
        "no:cacheprovider",
        *args,
    )


def test_a_bad_fleet_file_is_one_clear_line(pytester: pytest.Pytester, fleet_file: Path) -> None:
    fleet_file.write_text(fleet_file.read_text().replace("role: passive", "role: primary"))
    result = run(pytester, fleet_file)
    result.stderr.fnmatch_lines(
        ["ERROR: *fleet.yaml: clusters?1?.role: expected one of active, passive, standby*"]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert result.ret != 0


def test_drills_run_once_per_cluster_of_their_roles(pytester: pytest.Pytester, fleet_file: Path) -> None:
    result = run(pytester, fleet_file, "-k", "reads", "-v")
    result.stdout.fnmatch_lines(["*test_reads?west? PASSED*", "*test_reads?south? PASSED*"])
    result.assert_outcomes(passed=2, deselected=3)
    records = [json.loads(path.read_text()) for path in (pytester.path / "reports").glob("*/*/record.json")]
    assert [(r["verdict"], r["outcome"]) for r in records] == [("pass", "passed")] * 2


def test_suite_selects_its_drills(pytester: pytest.Pytester, fleet_file: Path) -> None:
    run(pytester, fleet_file, "--suite", "gate").assert_outcomes(passed=2, deselected=3)


def test_shuffle_runs_the_drills_in_its_seed_s_order(pytester: pytest.Pytester, fleet_file: Path) -> None:
    """--shuffle SEED: the drills in random.Random(SEED)'s shuffle of their collected order, the same for
    the same seed, and said in the header (the order a failure depends on can be run again)."""

    def order(*args: str) -> list[str]:
        result = run(pytester, fleet_file, "--collect-only", "-q", *args)
        return [line for line in result.stdout.lines if "::" in line]

    collected = order()
    shuffled = order("--shuffle", "3")
    expected = list(collected)
    random.Random(3).shuffle(expected)
    assert len(collected) == 5 and shuffled == expected != collected
    assert order("--shuffle", "3") == shuffled
    header = run(pytester, fleet_file, "--collect-only", "--shuffle", "3").stdout.str()
    assert "fleetdrill: drills in the order of --shuffle 3" in header


PLANNED = """
import pytest
from harness.faults.cluster import ClusterLoss
from harness.faults.partition import WanPartition

@pytest.mark.destructive
@pytest.mark.drill(app="shop")
def test_fail_over(drill, failover, cluster_name):
    app = drill.app("shop")
    with drill.observe(app):
        assert drill.steady(app, cluster_name, 60.0, 60.0)
        t0 = drill.inject(ClusterLoss(targets=(cluster_name,))).started
        failover.fail_over(app, "west")
        drill.wait_served_by(app, "west", 60.0)
        drill.soak()
    drill.judge(app, t0)
    raise AssertionError("a dry run never gets here")

@pytest.mark.destructive
@pytest.mark.drill(app="shop")
def test_two_at_once(drill):
    drill.inject(WanPartition(targets=("west",)))
    drill.inject(ClusterLoss(targets=("east",)))
    drill.judge(drill.app("shop"), 0.0)
"""


def test_dry_run_runs_each_drill_s_own_faults_through_the_safety_rules_and_changes_nothing(
    pytester: pytest.Pytester, fleet_file: Path
) -> None:
    """Each destructive drill runs with a fault stack that only plans: every fault it would inject, in
    order, with the clusters faulted at once; a fault a safety rule refuses fails the dry run (exit 1)
    naming the rule and what was planned before it. Nothing probes, waits, writes or records."""
    pytester.makepyfile(test_plans=PLANNED)
    limited = "allowlist: [west, east]\n  blast_radius: {max_clusters: 1}"
    fleet_file.write_text(fleet_file.read_text().replace("allowlist: [west, east]", limited))
    result = run(pytester, fleet_file, "--dry-run", "-rs", "-k", "reads or fail_over")
    result.assert_outcomes(skipped=3, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*dry run: test_reads?west?: reads app shop in fleet unit; injects no fault*",
            "*dry run: test_fail_over?west? would: 1. cluster-loss on west: allowed; faulted at once: west "
            "2. failover on west (app='shop', primary='east'*",
            "refused: cluster east (context east) is a prod cluster; pass --allow-prod*",
            "refused: cluster south (context south) is not in safety.allowlist of fleet unit*",
        ]
    )
    assert "planned before it" not in result.stdout.str(), "each refused fault was the drill's first"
    result = run(pytester, fleet_file, "--dry-run", "--allow-prod", "-k", "two_at_once")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "refused: east, west faulted at once would be 2 clusters, above "
            "safety.blast_radius.max_clusters 1*"
            "(planned before it: 1. wan-partition on west: allowed; faulted at once: west)"
        ]
    )
    assert not (pytester.path / "reports").exists() and not (pytester.path / "ledger.json").exists()


VELERO_DRILL = """
import pytest
from harness.faults.cluster import ClusterLoss

@pytest.mark.destructive
@pytest.mark.drill(app="shop")
def test_restore(drill, velero):
    app = drill.app("shop")
    velero("east").create_backup("before")
    backup = velero("east").wait_for_backup("before", 60.0)
    assert backup.phase == "Completed" and velero("west").get_backups() == []
    t0 = drill.inject(ClusterLoss(targets=("west",))).started
    velero("west").create_restore("back", backup="before")
    assert velero("west").wait_for_restore("back", 60.0).phase == "Completed"
    drill.judge(app, t0)
    raise AssertionError("a dry run never gets here")
"""


def test_a_drill_driving_the_velero_cli_itself_is_planned_by_the_dry_run(
    pytester: pytest.Pytester, fleet_file: Path
) -> None:
    """The `velero` fixture in a dry run runs nothing (the fleet's velero binary does not even exist here):
    the drill goes on past its backups and restores, and its faults are planned, not skipped unseen."""
    pytester.makepyfile(test_velero_drill=VELERO_DRILL)
    result = run(pytester, fleet_file, "--dry-run", "-rs", "-k", "restore")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*dry run: test_restore would: 1. cluster-loss on west: allowed; faulted at once: west*"]
    )
    assert not (pytester.path / "reports").exists() and not (pytester.path / "ledger.json").exists()


def test_every_drill_leaves_a_record_even_when_it_fails(pytester: pytest.Pytester, fleet_file: Path) -> None:
    result = run(pytester, fleet_file, "-k", "breaks and west")
    result.assert_outcomes(failed=1, deselected=4)
    (record_path,) = (pytester.path / "reports").glob("*/*/record.json")
    record = json.loads(record_path.read_text())
    assert record["verdict"] == "error" and record["outcome"] == "failed", "it judged nothing"
    assert "the drill failed for real" in record["message"] and NO_VERDICT in record["message"]
    assert [c["name"] for c in record["clusters"]] == ["east", "west", "south"]
    assert "BEGIN" not in record_path.read_text(), "no credentials in records"


def test_a_fault_a_run_that_is_gone_left_in_force_stops_the_drills_naming_it_and_recover(
    pytester: pytest.Pytester, fleet_file: Path
) -> None:
    """A killed run's fault stays in the ledger: drilling again would judge a fleet still faulted."""
    ledger = Ledger(pytester.path / "ledger.json")
    ledger.mark(ledger.add(DenyAllPolicy(targets=("east",), namespace="shop"), "killed-run").id, "applied")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    data = json.loads(ledger.path.read_text())
    data["entries"][0]["pid"] = gone.pid
    ledger.path.write_text(json.dumps(data))
    result = run(pytester, fleet_file, "-k", "breaks")
    result.stderr.fnmatch_lines(
        [
            f"ERROR: {ledger.path}: 1 fault(s) left in force by a run that is gone (*deny-all* on east*"
            f"run killed-run, pid {gone.pid}*): revert them with `fleetdrill recover --fleet {fleet_file} "
            f"--ledger {ledger.path}`, then drill again"
        ]
    )
    assert result.ret != 0 and not list((pytester.path / "reports").glob("*/*/record.json")), "no drill ran"
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    run(pytester, fleet_file, "-k", "reads").assert_outcomes(passed=2, deselected=3)  # they inject nothing


REFUSED = """
from harness.faults.network import DenyAllPolicy


def test_faults_a_cluster_not_allowlisted(drill):
    drill.inject(DenyAllPolicy(targets=("south",), namespace="shop"))
"""


def test_a_safety_refusal_is_one_line_and_nothing_is_in_the_ledger(
    pytester: pytest.Pytester, fleet_file: Path
) -> None:
    pytester.makepyfile(test_refused=REFUSED)
    result = run(pytester, fleet_file, "test_refused.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*refused: cluster south (context south) is not in safety.allowlist of fleet unit*"]
    )
    assert "Traceback" not in result.stdout.str() and "raise SafetyError" not in result.stdout.str()
    assert not (pytester.path / "ledger.json").exists(), "refused before the fault reached the ledger"


FIXTURES = """
import pytest


@pytest.mark.drill(app="shop", roles=("passive",))
def test_fixtures(drill, cluster_name, app, cluster, timeline, faults, traffic, sentinel, velero, failover):
    assert (app.name, cluster.name) == ("shop", cluster_name)
    assert timeline is drill.timeline and faults is drill.stack
    assert failover.timeline is drill.timeline and failover.access is drill.access
    assert velero("west").context == "west"
    assert callable(traffic) and callable(sentinel)
    drill.judge_drift("fixtures", "every fixture given", [])


@pytest.mark.drill(app="shop")
def test_the_primary_by_default(cluster):
    assert cluster.name == "east"

"""


def test_the_fixtures_give_the_drill_s_parts(pytester: pytest.Pytester, fleet_file: Path) -> None:
    pytester.makepyfile(test_fixtures=FIXTURES)
    run(pytester, fleet_file, "test_fixtures.py").assert_outcomes(passed=2)


UNPINNED = """
import pytest


@pytest.mark.drill
def test_any_app(drill, app):
    drill.judge_drift("app", f"drilled {app.name}", [])
"""


def test_a_drill_that_pins_no_app_drills_the_first_or_the_one_app_names(
    pytester: pytest.Pytester, fleet_file: Path
) -> None:
    """The shipped drills name no app: a fleet of apps we did not write drills its first app, or --app's."""
    two = fleet_file.read_text().replace(
        "apps:\n", "apps:\n  - {name: blog, namespace: blog, workload: deployment/blog}\n"
    )
    fleet_file.write_text(two)
    pytester.makepyfile(test_unpinned=UNPINNED)
    run(pytester, fleet_file, "test_unpinned.py", "--run-id", "first").assert_outcomes(passed=1)
    run(pytester, fleet_file, "test_unpinned.py", "--run-id", "chosen", "--app", "shop").assert_outcomes(
        passed=1
    )
    expected = {"first": "drilled blog", "chosen": "drilled shop"}
    for run_id, drilled in expected.items():
        (record,) = (pytester.path / "reports" / run_id).glob("*/record.json")
        assert json.loads(record.read_text())["verdicts"][0]["expected"] == drilled
    result = run(pytester, fleet_file, "test_unpinned.py", "--app", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--app: expected an app of {fleet_file} (blog, shop), got 'nope'"])


def test_soak_sets_how_long_drills_keep_measuring(pytester: pytest.Pytester, fleet_file: Path) -> None:
    pytester.makepyfile(
        test_soak="def test_soak(drill):\n    assert drill.settings.soak_s == 2.5\n"
        "    drill.judge_drift('soak', 'soak 2.5 s', [])\n"
    )
    run(pytester, fleet_file, "test_soak.py", "--soak", "2500ms").assert_outcomes(passed=1)
    result = run(pytester, fleet_file, "test_soak.py", "--soak", "soon")
    result.stderr.fnmatch_lines(["*argument --soak: expected a duration such as 10s or 1m30s, got 'soon'*"])
    assert "Traceback" not in result.stderr.str()


def test_progress_prints_each_event_as_it_happens(pytester: pytest.Pytester, fleet_file: Path) -> None:
    pytester.makepyfile(
        test_live="def test_live(drill):\n    drill.timeline.record('fault.injected', cluster='east')\n"
        "    drill.judge_drift('progress', 'printed', [])\n"
    )
    result = run(pytester, fleet_file, "test_live.py", "--progress")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_live +*s fault.injected east*"])
    assert "fault.injected" not in run(pytester, fleet_file, "test_live.py").stdout.str()


VERDICTS = """
from dataclasses import dataclass

import pytest

from harness.drill import GLOBAL, Observation
from harness.faults import Fault
from harness.faults.base import Evidence
from harness.samples import ProbeSample, Verdict

PASSED = Verdict("pass", "RTO", "<= 20 s", "2 s", "RTO 2 s within objective 20 s", {})
FAILED = Verdict("fail", "RTO", "<= 20 s", "35 s", "RTO 35 s exceeds objective 20 s", {})


@dataclass(frozen=True)
class StuckFault(Fault, kind="unit-stuck"):
    def inject(self, ctx):
        pass

    def revert(self, ctx):
        raise RuntimeError("west did not come back")

    def effect(self, *_args):
        return Evidence(True, "applied")


@pytest.mark.drill(app="shop")
def test_no_objectives(drill, app):
    samples = [ProbeSample.of(GLOBAL, i / 50, i / 50 + 0.01, status=200) for i in range(500)]
    drill.observations[app.name] = Observation(app, {GLOBAL: samples}, start=0.0, end=10.0)
    drill.judge(app, t0=5.0)


def test_no_verdict(drill):
    pass


def test_revert_fails(drill):
    drill.stack._guard = None  # this fleet has no API server to hold a drill lease on
    drill.stack.push(StuckFault(targets=("west",)))
    drill.verdicts.append(PASSED)


def test_forgot_to_assert(drill):
    drill.verdicts.append(FAILED)


def test_fail_back_raises(drill):
    drill.verdicts.append(PASSED)
    raise RuntimeError("fail-back: east does not serve again")


def test_skipped(drill):
    pytest.skip("no standby cluster")
"""


def test_the_record_history_allure_and_exit_code_agree_that_such_drills_never_pass(
    pytester: pytest.Pytester, fleet_file: Path
) -> None:
    """An objective judged but not set, no verdict, a revert that fails after passing verdicts, a failed
    verdict nobody asserted, a fail-back that raises: none passes, whatever the call alone said."""
    pytester.makepyfile(test_verdicts=VERDICTS)
    result = run(pytester, fleet_file, "test_verdicts.py")
    result.assert_outcomes(passed=4, errors=4, failed=1, skipped=1)
    result.stdout.fnmatch_lines_random(
        [
            "*RTO not judged: the fleet file of fleet unit does not set apps[[]0[]].objectives.rto*",
            f"*{NO_VERDICT}*",
            "*RevertError: unit-stuck on west: revert failed (RuntimeError: west did not come back)*",
            "*RTO 35 s exceeds objective 20 s*",
        ]
    )
    reports = pytester.path / "reports"
    (run_dir,) = (path.parent for path in reports.glob("*/run.json"))
    records = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/record.json")}
    assert {name: (r["verdict"], r["outcome"]) for name, r in records.items()} == {
        "test_no_objectives": ("error", "failed"),
        "test_no_verdict": ("error", "failed"),
        "test_revert_fails": ("error", "error"),
        "test_forgot_to_assert": ("fail", "failed"),
        "test_fail_back_raises": ("error", "error"),
        "test_skipped": ("skip", "skipped"),
    }
    unset = {v["message"] for v in records["test_no_objectives"]["verdicts"] if v["status"] == "error"}
    assert {"rto", "availability"} == {m.rpartition(".")[2] for m in unset}, unset
    assert "teardown: RevertError: unit-stuck on west" in records["test_revert_fails"]["message"]
    assert records["test_skipped"]["message"] == "no standby cluster", "a skip's record says why"
    assert "fail-back: east does not serve again" in records["test_fail_back_raises"]["message"]
    history = [json.loads(line) for line in (reports / "history.jsonl").read_text().splitlines()]
    assert {e["drill"]: e["verdict"] for e in history} == {n: r["verdict"] for n, r in records.items()}
    assert json.loads((run_dir / "run.json").read_text())["exit_status"] == result.ret != 0
    allure = [json.loads(p.read_text()) for p in (run_dir / "allure-results").glob("*-result.json")]
    assert {a["name"]: a["status"] for a in allure} == {
        "test_no_objectives": "broken",
        "test_no_verdict": "broken",
        "test_revert_fails": "broken",
        "test_forgot_to_assert": "failed",
        "test_fail_back_raises": "broken",
        "test_skipped": "skipped",
    }
