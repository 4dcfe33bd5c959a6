"""Backup hygiene: every cluster that backs the app up (the active one) has a Completed backup of its
namespace younger than `velero.max_backup_age` (else the app's RPO objective), made through a storage
location that is Available, in another region than the cluster, with its credential secret in place."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.preflight import Preflight


@pytest.mark.gate
@pytest.mark.quarterly
@pytest.mark.drill(roles=("active",), uses={"backup-hygiene-read": "active"})
def test_backups_are_recent_and_kept_in_another_region(drill: Drill, app: App, cluster_name: str) -> None:
    readiness = Preflight(drill.fleet, drill.access, app).backups(drill.fleet.cluster(cluster_name))
    verdict = readiness.verdict("backup hygiene")
    drill.verdicts.append(verdict)
    assert verdict.status == "pass", verdict.message
