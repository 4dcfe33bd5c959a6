"""The rollout gate's judgements without a fleet: probes of a stage's endpoints (a local HTTP server that
fails a share of its answers stops the stage, naming what the probes got), a missing objective or
endpoint is an error, the passive clusters that take over for a stage, and a gate that judged nothing."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from harness import parity
from harness.config import Fleet
from harness.gate import GateResult, parity_checks, rolled_out, soak_checks, takeover_clusters
from harness.preflight import Check


class Flaky(BaseHTTPRequestHandler):
    """Answers 200 naming its cluster, and 500 to every `every`-th request (0: never)."""

    every = 0
    count = 0

    def do_GET(self) -> None:
        type(self).count += 1
        status = 500 if self.every and self.count % self.every == 0 else 200
        self.send_response(status)
        self.send_header("X-Served-By", "us-east/orders-1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[tuple[str, type[Flaky]]]:
    handler = type("Handler", (Flaky,), {"every": 0, "count": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", handler
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def fleet_of(url: str, objectives: dict[str, Any], stage: dict[str, Any] | None = None) -> Fleet:
    return Fleet.model_validate(
        {
            "name": "f",
            "clusters": [
                {"name": "us-east", "region": "r1", "role": "active", "environment": "prod"},
                {"name": "eu-west", "region": "r2", "role": "passive", "environment": "prod"},
                {"name": "ap-south", "region": "r3", "environment": "staging"},
            ],
            "apps": [
                {
                    "name": "orders",
                    "namespace": "orders",
                    "workload": "deployment/orders",
                    "endpoints": {"us-east": url, "ap-south": url},
                    "health_path": "/readyz",
                    "served_by": {"header": "X-Served-By"},
                    "objectives": objectives,
                }
            ],
            "rollout": {
                "stages": [
                    {"name": "staging", "clusters": ["ap-south"]},
                    {"name": "canary", "clusters": ["us-east"]} | (stage or {}),
                    {"name": "prod", "clusters": ["eu-west"]},
                ]
            },
        }
    )


def canary(fleet: Fleet) -> list[Check]:
    stage, _ = fleet.stage("canary")
    return soak_checks(fleet, fleet.apps[0], stage, 1.0)


def test_a_version_that_fails_a_share_of_requests_is_stopped_naming_what_the_probes_got(
    server: tuple[str, type[Flaky]],
) -> None:
    url, handler = server
    handler.every = 4
    (check,) = canary(fleet_of(url, {"availability": "99%"}))
    assert (check.cluster, check.what, check.ok, check.error) == (
        "us-east",
        "availability over the soak",
        False,
        False,
    )
    share, detail = check.found.split("% (")
    failed, total = (int(n) for n in detail.split(" probes failed")[0].split(" of "))
    assert 0.2 < failed / total < 0.3 and float(share) < 80, check.found
    assert detail.endswith(f"probes failed: HTTP 500 x{failed})"), check.found


def test_the_stage_bounds_stand_in_for_the_apps(server: tuple[str, type[Flaky]]) -> None:
    url, handler = server
    handler.every = 4
    (check,) = canary(fleet_of(url, {"availability": "99%"}, {"objectives": {"availability": 0.5}}))
    assert check.ok and check.expected == ">= 50.00%", check


def test_a_healthy_stage_holds_availability_and_latency(server: tuple[str, type[Flaky]]) -> None:
    url, _ = server
    checks = canary(fleet_of(url, {"availability": "99%", "latency": "1s"}))
    assert [(c.what, c.ok) for c in checks] == [
        ("availability over the soak", True),
        ("p99 latency over the soak", True),
    ], checks


def test_no_objective_and_no_endpoint_are_errors_naming_the_fields(server: tuple[str, type[Flaky]]) -> None:
    url, _ = server
    fleet = fleet_of(url, {})
    stage, _ = fleet.stage("prod")
    checks = soak_checks(fleet, fleet.apps[0], stage, 0.5)
    assert [(c.error, c.expected) for c in checks] == [
        (True, "set (rollout.stages[2].objectives.availability or apps[0].objectives.availability)"),
        (True, "set (apps[0].endpoints.eu-west)"),
    ]


def test_the_passive_cluster_of_the_stages_environment_takes_over() -> None:
    fleet = fleet_of("http://x/", {})
    assert takeover_clusters(fleet, fleet.stage("canary")[0]) == ["eu-west"]
    assert takeover_clusters(fleet, fleet.stage("prod")[0]) == [], "the passive cluster is the stage's own"
    assert takeover_clusters(fleet, fleet.stage("staging")[0]) == [], "no passive cluster in staging"


def test_a_gate_that_judged_nothing_does_not_pass() -> None:
    nothing = GateResult("dev", "orders", (), ("parity: first stage",), 5.0, 5.2)
    assert not nothing.passed and nothing.headline().startswith("stage dev: error: no check judged")
    failed = Check(
        "eu-west", "configmap orders/schema (the new version reads it)", "present", "missing", False
    )
    stopped = GateResult("canary", "orders", (Check("us-east", "x", "y", "y", True), failed), (), 5.0, 6.0)
    assert not stopped.passed
    assert stopped.headline() == (
        "stage canary: stopped: 1 of 2 checks failed: eu-west: configmap orders/schema (the new version "
        "reads it): expected present, found missing"
    )


def test_parity_with_the_stage_before_names_each_difference_but_the_replica_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = fleet_of("http://x/", {})
    staging, canary = fleet.stage("staging")[0], fleet.apps[0]
    drifts = [
        parity.Drift("us-east", "deployment/orders.replicas", 1, 3),
        parity.Drift("us-east", "deployment/orders.containers.orders.image", "orders:1", "orders:2"),
    ]
    monkeypatch.setattr(parity, "compare", lambda *_: drifts)
    (check,) = parity_checks(None, canary, staging, "us-east")  # type: ignore[arg-type]
    assert check.text() == (
        "us-east: configuration parity with ap-south (stage staging): "
        "deployment/orders.containers.orders.image: expected 'orders:1', found 'orders:2'"
    )
    monkeypatch.setattr(parity, "compare", lambda *_: drifts[:1])
    assert [c.ok for c in parity_checks(None, canary, staging, "us-east")] == [True]  # type: ignore[arg-type]

    def unanswered(*_: object) -> list:
        raise parity.ParityError("ap-south: reading deployment/orders: HTTP 503")

    monkeypatch.setattr(parity, "compare", unanswered)
    (error,) = parity_checks(None, canary, staging, "us-east")  # type: ignore[arg-type]
    assert error.error and "HTTP 503" in error.found


def workload(image: str, updated: int, available: int, generation: int = 2) -> SimpleNamespace:
    container = SimpleNamespace(image=image)
    return SimpleNamespace(
        metadata=SimpleNamespace(generation=2),
        spec=SimpleNamespace(
            replicas=1, template=SimpleNamespace(spec=SimpleNamespace(containers=[container]))
        ),
        status=SimpleNamespace(
            observed_generation=generation, updated_replicas=updated, available_replicas=available
        ),
    )


@pytest.mark.parametrize(
    ("found", "ok"),
    [
        (workload("orders:2", 1, 1), True),
        (workload("orders:1", 1, 1), False),
        (workload("orders:2", 0, 1), False),
        (workload("orders:2", 1, 1, generation=1), False),
        (None, False),
    ],
)
def test_the_version_must_have_rolled_out_before_it_is_judged(
    monkeypatch: pytest.MonkeyPatch, found: SimpleNamespace | None, ok: bool
) -> None:
    monkeypatch.setattr(parity, "read_workload", lambda *_: found)
    check = rolled_out(None, fleet_of("http://x/", {}).apps[0], "us-east", "orders:2")  # type: ignore[arg-type]
    assert check.ok is ok, check
