"""A fault's effect, proven from outside the faulted part: the evidence helpers and the wait for them."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes.client import ApiClient, Configuration

from harness.faults import Evidence, Fault, FaultContext, KubeContext, kube, resources
from harness.faults.cluster import ClusterLoss
from harness.faults.evidence import DOWN_PROBES, FaultNotEffective, await_effect, endpoint_down
from harness.faults.partition import WanPartition
from harness.faults.resources import NodeStress
from harness.samples import ProbeSample
from harness.timeline import Event, Timeline


@dataclass
class Probes:
    """Observed: a fixed probe series per cluster."""

    series: dict[str, list[ProbeSample]]

    def endpoint_probes(self, cluster: str, since: float) -> list[ProbeSample] | None:
        found = self.series.get(cluster)
        return None if found is None else [s for s in found if s.sent >= since]


def probes(*oks: bool, start: float = 10.0) -> list[ProbeSample]:
    return [
        ProbeSample.of(
            "east",
            start + i * 0.02,
            start + i * 0.02 + 0.01,
            ok=ok,
            status=200 if ok else None,
            error=None if ok else "ConnectionRefusedError",
        )
        for i, ok in enumerate(oks)
    ]


def unreachable_api() -> ApiClient:
    """An API client for a port nothing listens on (a lost control plane)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Configuration()
    config.host = f"http://127.0.0.1:{port}"
    return ApiClient(config)


@pytest.fixture
def ctx() -> KubeContext:
    return KubeContext({"east": unreachable_api()})


def test_a_cluster_is_down_only_after_enough_failed_probes_since_injection() -> None:
    observed = Probes({"east": probes(*[True] * 50, *[False] * (DOWN_PROBES - 1))})
    evidence = endpoint_down(observed, "east", 0.0)
    assert evidence == Evidence(False, "east's endpoint answered 50 of 54 probes")
    observed = Probes({"east": probes(*[True] * 50, *[False] * DOWN_PROBES)})
    assert endpoint_down(observed, "east", 0.0).effective
    assert endpoint_down(observed, "west", 0.0) is None


def test_a_cluster_loss_whose_endpoint_still_answers_is_not_effective(ctx: KubeContext) -> None:
    fault = ClusterLoss(targets=("east",))
    started = Event("fault.injecting", 10.0, 1_700_000_000.0)
    evidence = fault.effect(ctx, Probes({"east": probes(*[True] * 1420)}), started)
    assert not evidence.effective
    assert evidence.detail.startswith(
        "east's endpoint answered 1,420 of 1,420 probes; its API server is unreachable"
    )


def test_a_cluster_loss_is_shown_by_its_endpoint_and_says_what_the_api_did(ctx: KubeContext) -> None:
    fault = ClusterLoss(targets=("east",))
    started = Event("fault.injecting", 10.0, 1_700_000_000.0)
    evidence = fault.effect(ctx, Probes({"east": probes(True, *[False] * 10)}), started)
    assert evidence.effective
    assert "failed its last 10 probes (ConnectionRefusedError)" in evidence.detail
    assert "its API server is unreachable" in evidence.detail
    unprobed = fault.effect(ctx, Probes({}), started)
    assert unprobed.effective and unprobed.detail.startswith("east's endpoints are not probed")


@dataclass
class GoingDown:
    """Observed: the endpoint answers until the probes have been read `reads` times, then fails."""

    reads: int

    def endpoint_probes(self, cluster: str, since: float) -> list[ProbeSample]:
        self.reads -= 1
        return probes(True, *[False] * DOWN_PROBES) if self.reads < 0 else probes(True)


def test_a_cluster_loss_reads_its_probes_until_they_show_it_after_the_api_answered(ctx: KubeContext) -> None:
    """The probes sent since injection end by their own timeout, after the API's answer: they are read
    again meanwhile, so one poll shows the loss instead of a second API timeout later."""
    started = Event("fault.injecting", 10.0, 1_700_000_000.0)
    evidence = ClusterLoss(targets=("east",)).effect(ctx, GoingDown(reads=3), started)
    assert evidence.effective, evidence
    assert f"failed its last {DOWN_PROBES} probes" in evidence.detail and "API server is unreachable" in (
        evidence.detail
    )


def test_failures_before_injection_began_are_no_evidence(ctx: KubeContext) -> None:
    series = probes(*[False] * 20, *[True] * 20, start=0.0)
    started = Event("fault.injecting", series[20].sent, 1_700_000_000.0)
    assert not ClusterLoss(targets=("east",)).effect(ctx, Probes({"east": series}), started).effective


@dataclass(frozen=True)
class Flag(Fault, kind="test-effect-flag"):
    """Takes effect once `folder/<target>` exists (written by someone else, or never)."""

    folder: str
    effect_deadline_s = 0.5

    def inject(self, ctx: FaultContext) -> None: ...

    def revert(self, ctx: FaultContext) -> None: ...

    def effect(self, ctx: FaultContext, observed: object, started: Event) -> Evidence:
        present = (Path(self.folder) / self.targets[0]).exists()
        return Evidence(present, "flag written" if present else "no flag")


def test_the_drill_waits_for_the_effect_and_records_it(tmp_path: Path) -> None:
    timeline = Timeline()
    started, completed = timeline.record("fault.injecting"), timeline.record("fault.injected")
    (tmp_path / "east").touch()
    injection = await_effect(
        Flag(str(tmp_path), targets=("east",)), KubeContext(), Probes({}), started, completed, timeline
    )
    assert (injection.started, injection.completed) == (started.t_mono, completed.t_mono)
    assert injection.effective == timeline.last("fault.effective").t_mono >= completed.t_mono
    assert timeline.last("fault.effective").detail == {"kind": "test-effect-flag", "evidence": "flag written"}


def test_a_fault_whose_effect_never_shows_is_an_error_naming_the_evidence(tmp_path: Path) -> None:
    timeline = Timeline()
    started, completed = timeline.record("fault.injecting"), timeline.record("fault.injected")
    with pytest.raises(
        FaultNotEffective, match=r"test-effect-flag on east .* did not take effect within 0.5 s: no flag"
    ):
        await_effect(
            Flag(str(tmp_path), targets=("east",)), KubeContext(), Probes({}), started, completed, timeline
        )
    assert timeline.last("fault.not_effective").detail["evidence"] == "no flag"


def test_the_fleet_file_sets_how_long_provider_faults_have_to_show_their_effect() -> None:
    """infrastructure.effect_timeout (a cloud step may take minutes) bounds the wait of the faults the
    provider injects, and only theirs."""
    slow_cloud = KubeContext(infra_effect_timeout_s=300.0)
    assert ClusterLoss(targets=("east",)).effect_deadline(slow_cloud) == 300.0
    assert WanPartition(targets=("east",)).effect_deadline(slow_cloud) == 300.0
    assert Flag("/nowhere", targets=("east",)).effect_deadline(slow_cloud) == 0.5
    assert ClusterLoss(targets=("east",)).effect_deadline(KubeContext()) == ClusterLoss.effect_deadline_s


class Clock:
    """The stress evidence's clock: time moves only when it sleeps, so the kubelet's CPU counters and the
    time they are divided by agree however busy the machine running the test is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Nodes:
    """A CoreV1Api with stress pods on nodes whose kubelet reports CPU time at `burns` cores and `holds`
    bytes of working set per pod (the Summary API through the node proxy), on `clock`."""

    def __init__(self, phases: list[str], burns: float, holds: int, clock: Clock) -> None:
        self.phases, self.burns, self.holds, self.clock = phases, burns, holds, clock

    def list_namespaced_pod(self, namespace: str, **_options: object) -> SimpleNamespace:
        amounts = {"cpu": "500m", "memory": "256Mi"}
        pods = [
            SimpleNamespace(
                metadata=SimpleNamespace(name=f"stress-{i}", namespace=namespace),
                spec=SimpleNamespace(
                    node_name=f"east-{i}",
                    containers=[SimpleNamespace(resources=SimpleNamespace(requests=amounts))],
                ),
                status=SimpleNamespace(phase=phase),
            )
            for i, phase in enumerate(self.phases)
        ]
        return SimpleNamespace(items=pods)

    def connect_get_node_proxy_with_path(self, node: str, path: str, **_options: object) -> SimpleNamespace:
        assert path == "stats/summary"
        used = {"usageCoreNanoSeconds": int(self.burns * self.clock.monotonic() * 1e9)}
        entry = {
            "podRef": {"namespace": "default", "name": f"stress-{node.rpartition('-')[2]}"},
            "cpu": used,
            "memory": {"workingSetBytes": self.holds},
        }
        return SimpleNamespace(data=json.dumps({"node": {"nodeName": node}, "pods": [entry]}).encode())


@pytest.mark.parametrize(
    ("phases", "burns", "holds", "effective", "said"),
    [
        (["Running", "Running"], 0.4, 240 * 2**20, True, "east: stress pod on east-1 burns 0.40 of 0.50 CPU"),
        (
            ["Running", "Running"],
            0.0,
            240 * 2**20,
            False,
            "burns 0.00 of 0.50 CPU requested, holds 240 of 256",
        ),
        (["Running", "Running"], 0.4, 2**20, False, "holds 1 of 256 MiB"),
        (["Running", "Pending"], 0.4, 240 * 2**20, False, "east: 1 of 2 stress pod(s) running"),
        ([], 0.4, 240 * 2**20, False, "east: 0 of 0 stress pod(s) running"),
    ],
)
def test_stress_shows_only_when_its_pods_burn_and_hold_what_they_requested(
    monkeypatch: pytest.MonkeyPatch, phases: list[str], burns: float, holds: int, effective: bool, said: str
) -> None:
    """Running is not enough: a pod whose image burns nothing (not stress-ng) is no stress."""
    clock = Clock()
    monkeypatch.setattr(resources, "time", clock)
    monkeypatch.setattr(kube, "core", lambda _client: Nodes(phases, burns, holds, clock))
    stress = NodeStress(targets=("east",))
    evidence = stress.effect(
        KubeContext({"east": unreachable_api()}), Probes({}), Event("fault.injecting", 0.0, 0.0)
    )
    assert evidence.effective is effective and said in evidence.detail, evidence.detail
