"""Configuration parity: every passive and standby cluster holds what the active cluster runs and what a
failed-over app needs - the workload, the ConfigMaps and Secrets it references, and the Services,
Ingresses, autoscalers, disruption budgets, service accounts and their RBAC, network policies, claims and
custom resources of its namespace - so a failover starts what was tested. A role with no cluster has
nothing to compare: an error, unless the fleet file lists it in absent_roles (then the verdict says so)."""

import pytest

from harness import parity
from harness.config import App
from harness.drill import Drill
from harness.preflight import role_check
from harness.samples import Verdict

OBJECTIVE = "configuration parity"


@pytest.mark.gate
@pytest.mark.quarterly
@pytest.mark.drill(uses={"parity-read": "every"})
@pytest.mark.parametrize("role", ["passive", "standby"])
def test_standby_runs_what_the_active_cluster_runs(drill: Drill, app: App, role: str) -> None:
    absent = role_check(drill.fleet, role)
    if absent is not None:
        drill.verdicts.append(absent.verdict(OBJECTIVE))
        assert absent.ok, absent.text()
        return
    reference, drifts = drill.fleet.primary().name, []
    for cluster in (c.name for c in drill.fleet.clusters if c.role == role):
        expected = f"{cluster} matches {reference}"
        try:
            found = [d.line(reference) for d in parity.compare(drill.access, app, reference, cluster)]
        except parity.ParityError as error:
            drill.verdicts.append(Verdict("error", OBJECTIVE, expected, "not read", str(error), {}))
            pytest.fail(str(error), pytrace=False)
        drill.judge_drift(OBJECTIVE, expected, found)
        drifts += found
    assert not drifts, "; ".join(drifts)
