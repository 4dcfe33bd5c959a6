"""DR readiness, the gate before a production rollout: the pre-flight check of the app's whole DR path
(`fleetdrill doctor`): backups and storage locations, every passive cluster running the app's workload
Ready, what the clusters taking over need (CRDs, namespace, secrets, spare capacity), and every credential
and certificate on the way; with Prometheus in the fleet file, each answers and every query the app's
PromQL objectives and the abort conditions use returns data. A passive or standby role with no cluster is
an error (nothing was checked) unless the fleet file lists it in absent_roles. Read-only, a few seconds."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.preflight import Preflight, Readiness
from harness.promready import readiness


@pytest.mark.gate
@pytest.mark.quarterly
@pytest.mark.drill(uses={"readiness-read": "every"})
def test_the_dr_path_is_ready(drill: Drill, app: App) -> None:
    found = Preflight(drill.fleet, drill.access, app).run()
    metrics = readiness(drill.fleet, [app], drill.prometheus)
    verdict = Readiness(found.app, found.checks + tuple(metrics)).verdict()
    drill.verdicts.append(verdict)
    assert verdict.status == "pass", verdict.message
