"""DR readiness, the gate before a production rollout: the pre-flight check of the app's whole DR path
(`fleetdrill doctor`): backups and storage locations, what the clusters taking over need (CRDs, namespace,
secrets, spare capacity), and every credential and certificate on the way. Read-only, a few seconds."""

import pytest

from harness.config import App
from harness.drill import Drill
from harness.preflight import Preflight


@pytest.mark.gate
@pytest.mark.quarterly
@pytest.mark.drill(app="orders")
def test_the_dr_path_is_ready(drill: Drill, app: App) -> None:
    verdict = Preflight(drill.fleet, drill.access, app).run().verdict()
    drill.verdicts.append(verdict)
    assert verdict.status == "pass", verdict.message
