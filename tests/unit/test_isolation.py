"""harness.isolation: the environment isolation drill's segments (prod measured, the others faulted), the
safety check before its first fault, and its verdicts from probes, a miss naming the coupling seen."""

from dataclasses import replace
from typing import Any

import pytest

from harness import isolation
from harness.config import Fleet
from harness.errors import ConfigError
from harness.isolation import Step
from harness.safety import SafetyError
from harness.samples import ProbeSample
from harness.sentinels import GLOBAL

INTERVAL = 0.1
ENVIRONMENTS = ("prod", "staging", "dev")
NAMES = ("east", "west", "south")


def make_fleet(environments: tuple[str | None, ...] = ENVIRONMENTS, **more: Any) -> Fleet:
    clusters = [
        {"name": name, "region": name} | ({"environment": env} if env else {})
        for name, env in zip(NAMES, environments, strict=True)
    ]
    app = {
        "name": "shop",
        "namespace": "shop",
        "workload": "deployment/shop",
        "global_endpoint": "http://g/",
        "endpoints": {name: f"http://{name}/" for name in NAMES},
        "objectives": {"availability": 0.9, "latency": "1s"},
    } | more.pop("app", {})
    safety = {"allowlist": list(NAMES)} | more.pop("safety", {})
    document = {"name": "unit", "clusters": clusters, "apps": [app], "safety": safety}
    return Fleet.model_validate(document | more)


def series(
    target: str, start: float, end: float, failing: tuple[float, float] | None = None, by: str = "east"
) -> list:
    """Probes every INTERVAL from start to end, answered by cluster `by`, failed (HTTP 503) inside
    `failing`."""
    found = []
    for i in range(round((end - start) / INTERVAL)):
        t = start + i * INTERVAL
        bad = failing is not None and failing[0] <= t < failing[1]
        found.append(ProbeSample.of(target, t, t + 0.01, status=503 if bad else 200, served_by=f"{by}/p"))
    return found


STEPS = (Step("west", "staging", 10.0, 10.5), Step("south", "dev", 15.0, 15.4))


def judge(fleet: Fleet, samples: dict[str, list]) -> tuple[list, dict]:
    return isolation.judge(fleet, fleet.app("shop"), samples, STEPS, 30.0, INTERVAL, 3.0)


def test_prod_is_measured_and_every_other_environment_faulted() -> None:
    assert isolation.segments(make_fleet()) == isolation.Segments(("east",), ("west", "south"))


@pytest.mark.parametrize("environments", [(None, None, None), ("dev", "dev", None)])
def test_a_fleet_of_dev_clusters_only_does_not_segment(environments: tuple) -> None:
    with pytest.raises(isolation.NotSegmented, match=r"fleet unit does not segment environments: every"):
        isolation.segments(make_fleet(environments))


@pytest.mark.parametrize(
    ("environments", "problem"),
    [
        (("dev", "staging", None), "fleet unit has no prod cluster (east=dev, west=staging, south=dev)"),
        (("prod", "prod", "prod"), "fleet unit has no non-prod cluster to fault"),
    ],
)
def test_no_prod_or_no_other_cluster_is_an_error(environments: tuple, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        isolation.segments(make_fleet(environments))
    assert problem in str(raised.value)


def test_every_target_is_checked_before_the_first_fault() -> None:
    fleet = make_fleet(safety={"allowlist": ["east", "west"]})
    with pytest.raises(SafetyError, match=r"refused: cluster south .* not in safety.allowlist"):
        isolation.check_before(fleet, isolation.segments(fleet))
    capped = make_fleet(safety={"blast_radius": {"max_clusters": 1}})
    with pytest.raises(SafetyError, match="south, west faulted at once would be 2 clusters"):
        isolation.check_before(capped, isolation.segments(capped))
    isolation.check_before(make_fleet(), isolation.segments(make_fleet()))


def test_prod_that_holds_passes_with_its_figures() -> None:
    samples = {target: series(target, 0.0, 30.0) for target in ("east", GLOBAL)}
    verdicts, figures = judge(make_fleet(), samples)
    assert [(v.objective, v.status) for v in verdicts] == [
        ("east availability", "pass"),
        ("east p99 latency", "pass"),
        ("global availability", "pass"),
        ("global p99 latency", "pass"),
    ]
    assert figures["prod"]["east"]["availability"] == 1.0 and figures["prod"]["east"]["probes"] == 200
    assert figures["faulted"][0] == {
        "cluster": "west",
        "environment": "staging",
        "fault": "cluster-loss",
        "injected_s": 0.0,
        "effective_s": 0.5,
    }


def test_a_prod_endpoint_that_degrades_names_the_non_prod_loss_it_followed() -> None:
    samples = {
        "east": series("east", 0.0, 30.0, failing=(11.15, 30.0)),
        GLOBAL: series(GLOBAL, 0.0, 30.0),
    }
    verdicts, figures = judge(make_fleet(), samples)
    [miss] = [v for v in verdicts if v.status == "fail" and v.objective == "east availability"]
    assert miss.message.startswith(
        "coupling: prod endpoint east degraded: its longest outage (18.7 s) began 1.2 s after non-prod "
        "cluster west (staging) was lost "
        "(faulted then: west (staging)); availability 6.00% below objective 90.00%"
    ), miss.message
    assert figures["prod"]["east"]["outage_began_s"] == pytest.approx(1.2)
    assert figures["prod"]["east"]["served_by_non_prod"] == {}
    assert {v.status for v in verdicts if v.objective.startswith("global")} == {"pass"}


def test_a_coupling_under_a_partition_says_the_cluster_was_cut_off() -> None:
    samples = {"east": series("east", 0.0, 30.0, failing=(11.15, 30.0)), GLOBAL: series(GLOBAL, 0.0, 30.0)}
    cut = tuple(replace(step, fault="wan-partition") for step in STEPS)
    fleet = make_fleet()
    verdicts, _ = isolation.judge(fleet, fleet.app("shop"), samples, cut, 30.0, INTERVAL, 3.0)
    [miss] = [v for v in verdicts if v.status == "fail" and v.objective == "east availability"]
    assert "after non-prod cluster west (staging) was cut off (faulted then: west (staging))" in miss.message


def test_an_outage_after_the_second_loss_names_it_and_both() -> None:
    samples = {"east": series("east", 0.0, 30.0, failing=(16.0, 30.0)), GLOBAL: series(GLOBAL, 0.0, 30.0)}
    samples[GLOBAL] += series(GLOBAL, 30.0, 31.0, by="south")  # after the window: not counted
    samples[GLOBAL][120:130] = series(GLOBAL, 12.0, 13.0, by="south")
    verdicts, figures = judge(make_fleet(), samples)
    assert figures["prod"][GLOBAL]["served_by_non_prod"] == {"south": 10}, "prod traffic answered by dev"
    [miss, *_] = [v for v in verdicts if v.status == "fail"]
    assert "after non-prod cluster south (dev) was lost (faulted then: west (staging), south (dev))" in (
        miss.message
    )


def test_what_was_not_measured_is_an_error_never_a_pass() -> None:
    no_objective = make_fleet(app={"objectives": {}})
    verdicts, _ = judge(no_objective, {t: series(t, 0.0, 30.0) for t in ("east", GLOBAL)})
    assert [(v.objective, v.status) for v in verdicts] == [
        ("east availability", "error"),
        ("global availability", "error"),
    ]
    assert "apps[0].objectives.availability" in verdicts[0].message
    no_endpoint = make_fleet(app={"endpoints": {"west": "http://west/"}, "global_endpoint": None})
    [verdict] = judge(no_endpoint, {})[0]
    assert verdict.status == "error" and "app shop has no endpoint there (apps[0].endpoints.east)" in (
        verdict.message
    )
    gap = {"east": series("east", 0.0, 12.0), GLOBAL: series(GLOBAL, 0.0, 30.0)}
    assert judge(make_fleet(), gap)[0][0].status == "error"
    none = isolation.judge(make_fleet(), make_fleet().app("shop"), {}, (), 30.0, INTERVAL, 3.0)[0]
    assert [v.status for v in none] == ["error"]
