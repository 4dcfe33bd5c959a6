"""The node agent's kubelet rules without a fleet: crash-loop back-off, probe thresholds, pod phase."""

import subprocess
import time

import pytest
from kubernetes import client

from harness.localfleet.nodeagent import podstatus
from harness.localfleet.nodeagent.backoff import Backoff
from harness.localfleet.nodeagent.containers import APP, INIT, NEVER, SIDECAR, Container
from harness.localfleet.nodeagent.pods import PodWorker
from harness.localfleet.nodeagent.probes import LIVENESS, READINESS, STARTUP, ContainerProbes, ProbeState
from harness.localfleet.nodeagent.runtime import Sandbox


def test_back_off_restarts_at_once_then_waits_10_20_40_seconds_up_to_300() -> None:
    backoff, waits, now = Backoff(), [], 0.0
    for _ in range(8):
        restart = backoff.restart_at(now)
        waits.append(restart - now)
        backoff.restarted(restart)
        now = restart + 1.0  # each run crashes after a second
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]


def test_back_off_starts_over_after_ten_clean_minutes() -> None:
    backoff = Backoff()
    backoff.restarted(backoff.restart_at(0.0))
    backoff.restarted(backoff.restart_at(1.0))
    assert backoff.restart_at(2.0) == 22.0
    assert backoff.restart_at(1000.0) == 1000.0


def _probe(**fields: int) -> client.V1Probe:
    return client.V1Probe(_exec=client.V1ExecAction(command=["true"]), **fields)


def test_probe_result_flips_only_at_its_thresholds() -> None:
    state = ProbeState(
        READINESS, _probe(success_threshold=2, failure_threshold=3, period_seconds=5), 0.0, False
    )
    state.record(True, 0.0)
    assert not state.result and state.next_at == 5.0
    state.record(True, 5.0)
    assert state.result
    state.record(False, 10.0)
    state.record(False, 15.0)
    assert state.result
    state.record(True, 20.0)  # a success resets the run of failures
    state.record(False, 25.0)
    state.record(False, 30.0)
    assert state.result
    state.record(False, 35.0)
    assert not state.result


def test_probe_waits_for_its_initial_delay_and_a_failed_liveness_probe_holds() -> None:
    state = ProbeState(LIVENESS, _probe(initial_delay_seconds=3, failure_threshold=1), 100.0, True)
    assert not state.due(102.9) and state.due(103.0)
    state.record(False, 103.0)
    assert not state.result and state.on_hold and not state.due(1e9)


def test_liveness_and_readiness_wait_for_the_startup_probe() -> None:
    kinds = {STARTUP: _probe(period_seconds=1), LIVENESS: _probe(period_seconds=1)}
    kinds[READINESS] = _probe(period_seconds=1)
    spec = client.V1Container(
        name="c",
        startup_probe=kinds[STARTUP],
        liveness_probe=kinds[LIVENESS],
        readiness_probe=kinds[READINESS],
    )
    probes, attempts = ContainerProbes(spec, 0.0), []

    class Prober:
        def check(self, probe: client.V1Probe, _target: object) -> bool:
            attempts.append(next(kind for kind, known in kinds.items() if known is probe))
            return True

    assert probes.run_due(Prober(), None, 0.0) == ""
    assert attempts == [STARTUP] and probes.started and not probes.ready
    probes.run_due(Prober(), None, 0.0)
    assert attempts == [STARTUP, LIVENESS, READINESS] and probes.ready
    assert probes.next_due() == 1.0


def test_readiness_runs_as_the_container_starts_then_retries_soon_until_it_first_passes() -> None:
    spec = client.V1Container(name="c", readiness_probe=_probe(period_seconds=1, success_threshold=2))
    probes, outcomes = ContainerProbes(spec, 10.0), iter([False, False, False, True, True, False])

    class Prober:
        def check(self, _probe: client.V1Probe, _target: object) -> bool:
            return next(outcomes)

    assert probes.next_due() == 10.0, "the first readiness probe runs as soon as the container started"
    times = []
    for _ in range(6):
        now = probes.next_due()
        times.append(round(now - 10.0, 4))
        probes.run_due(Prober(), None, now)
    # before its first success: again after 25 ms, then 1.5 times later each time; after it, every period
    assert times == [0.0, 0.025, 0.0625, 0.1188, 1.1188, 2.1188]
    assert probes.ready, "the second success in a row (successThreshold 2) came a whole period later"


def test_readiness_retries_wait_for_the_initial_delay_and_never_exceed_the_period() -> None:
    state = ProbeState(READINESS, _probe(initial_delay_seconds=2, period_seconds=1), 100.0, False)
    assert not state.due(101.9) and state.due(102.0)
    for _ in range(12):
        state.record(False, 200.0)
    assert state.next_at == 201.0 and not state.result


def test_liveness_and_startup_probes_keep_their_period_from_the_first_attempt() -> None:
    for kind, initial in ((LIVENESS, True), (STARTUP, False)):
        state = ProbeState(kind, _probe(period_seconds=3, failure_threshold=5), 0.0, initial)
        state.record(False, 0.0)
        assert state.next_at == 3.0


def _exited(kind: str, code: int, again: bool = False) -> Container:
    container = Container(client.V1Container(name=f"{kind}{code}"), kind)
    container.last_exit = {"exitCode": code}
    container.restart_at = 5.0 if again else NEVER
    return container


def _running(kind: str) -> Container:
    container = Container(client.V1Container(name=kind), kind)
    container.process = subprocess.Popen(["true"])
    container.process.wait()
    return container


@pytest.mark.parametrize(
    ("containers", "policy", "phase"),
    [
        (
            [Container(client.V1Container(name="i"), INIT), Container(client.V1Container(name="a"), APP)],
            "Always",
            "Pending",
        ),
        ([_exited(INIT, 1), Container(client.V1Container(name="a"), APP)], "Never", "Failed"),
        ([_exited(INIT, 1, again=True), Container(client.V1Container(name="a"), APP)], "Always", "Pending"),
        ([_exited(INIT, 0), _running(SIDECAR), _running(APP)], "Always", "Running"),
        ([_exited(APP, 0), _exited(APP, 0)], "Never", "Succeeded"),
        ([_exited(APP, 0), _exited(APP, 2)], "Never", "Failed"),
        ([_exited(APP, 0), _exited(APP, 2, again=True)], "OnFailure", "Running"),
        ([_exited(APP, 1, again=True)], "Always", "Running"),
        ([_running(SIDECAR), _exited(APP, 0)], "OnFailure", "Succeeded"),
    ],
)
def test_pod_phase_follows_the_kubelets_get_phase(containers: list, policy: str, phase: str) -> None:
    assert podstatus.phase(containers, policy) == phase


def test_a_pod_worker_patches_status_only_when_a_probe_result_or_the_pod_changes() -> None:
    probe = _probe(period_seconds=1, failure_threshold=1)
    spec = client.V1Container(name="c", image="busybox", readiness_probe=probe)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", namespace="n", uid="0123456789"),
        spec=client.V1PodSpec(containers=[spec]),
        status=client.V1PodStatus(),
    )
    worker = PodWorker(pod, client.ApiClient(), None, None, "10.0.0.1", None, None)
    patches, outcomes = [], iter([True, True, True, False])
    worker.core.patch_namespaced_pod_status = lambda *args, **_: patches.append(args[2]["status"])
    worker.prober = type("Prober", (), {"check": lambda _self, _probe, _target: next(outcomes)})()
    worker.sandbox = Sandbox("netns", "10.1.0.2")
    container = worker.containers[0]
    container.process = subprocess.Popen(["sleep", "60"])
    try:
        container.probes = ContainerProbes(spec, time.monotonic())
        worker._tick()  # passes: Ready
        for _ in range(2):  # passes again: nothing to write
            container.probes.readiness.next_at = 0.0
            worker._tick()
        ours = [client.V1PodCondition(type=c["type"], status=c["status"]) for c in patches[0]["conditions"]]
        copy = client.V1Pod(
            metadata=pod.metadata, spec=pod.spec, status=client.V1PodStatus(phase="Running", conditions=ours)
        )
        worker.update(copy)  # a new pod object (a readiness gate may have changed): computed, still the same
        worker._tick()
        container.probes.readiness.next_at = 0.0
        worker._tick()  # fails: not Ready
    finally:
        container.process.kill()
        container.process.wait()
    ready = [next(c["status"] for c in status["conditions"] if c["type"] == "Ready") for status in patches]
    assert ready == ["True", "False"]
