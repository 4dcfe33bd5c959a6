"""The dry run of the whole drill catalogue on the shared fleet: each drill's own faults, in order, each with
its safety verdict and the clusters faulted at once, and the fleet untouched (the ledger never written,
nothing failed over, no record)."""

import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urljoin

from harness.config import load_fleet
from tests.integration.test_drills import ROOT, served_by

AT_ONCE = "allowed; faulted at once:"
PLANS = {  # drill: its plan (fnmatch patterns: `*` stands for a fault's parameters)
    "test_lose_the_primary_cluster": f"1. cluster-loss on us-east: {AT_ONCE} us-east "
    "2. failover on eu-west (app='orders', primary='us-east'*)",
    "test_the_old_primary_returns_fenced": f"1. cluster-loss on us-east: {AT_ONCE} us-east "
    "2. failover on eu-west (app='orders', primary='us-east'*)",
    "test_partition_the_primary_region": f"1. wan-partition on us-east: {AT_ONCE} us-east "
    "2. failover on eu-west (*)",
    "test_lose_the_primary_while_the_standby_region_is_cut_off": f"1. wan-partition on ap-south: {AT_ONCE} "
    f"ap-south 2. cluster-loss on us-east: {AT_ONCE} ap-south, us-east 3. failover on eu-west (*)",
    "test_restore_the_backup_into_the_standby": f"1. cluster-loss on us-east: {AT_ONCE} us-east "
    f"2. scratch-namespace on ap-south (*): {AT_ONCE} ap-south, us-east",
    "test_exhaust_the_primary_clusters_nodes": f"1. quota-squeeze on us-east (*): {AT_ONCE} us-east "
    f"2. node-stress on us-east (*): {AT_ONCE} us-east",
} | {
    f"test_lose_one_cluster_and_global_traffic_continues[{name}]": (
        f"1. cluster-loss on {name}: {AT_ONCE} {name}"
    )
    for name in ("us-east", "eu-west", "ap-south")
}


def test_the_dry_run_plans_every_drill_s_own_faults_and_changes_nothing(
    fleet_dir: Path, tmp_path: Path
) -> None:
    ledger, reports = tmp_path / "ledger.json", tmp_path / "reports"
    argv = [sys.executable, "-m", "pytest", "drills", "--dry-run", "-rs", "-p", "no:cacheprovider"]
    argv += ["--fleet", str(fleet_dir / "fleet.yaml"), "--ledger", str(ledger), "--report-dir", str(reports)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    plans = dict(
        line.partition("dry run: ")[2].split(" would: ", 1)
        for line in done.stdout.splitlines()
        if " would: " in line
    )
    assert plans.keys() == PLANS.keys(), done.stdout[-3000:]
    for drill, pattern in PLANS.items():
        assert fnmatchcase(plans[drill], pattern), (drill, plans[drill], pattern)
    assert "reads app orders in fleet" in done.stdout, "the drills that inject nothing say so"
    assert not ledger.exists() and not reports.exists(), "a dry run writes nothing"
    app = load_fleet(fleet_dir / "fleet.yaml").app("orders")
    assert served_by(urljoin(app.global_endpoint or "", app.health_path)) == "us-east", "nothing failed over"
