"""The chaos controller's reconcile, against a fake API and a fake chaos kind: records, finalizer,
duration, delete, restart, and failures written as Chaos Mesh writes them."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client

from harness.localfleet.chaos import controller, records
from harness.localfleet.chaos.kinds import Kind

KEY = "orders/drill"


class FakeKind(Kind):
    plural = "networkchaos"

    def __init__(self, fail: bool = False) -> None:
        self.log: list[str] = []
        self.fail = fail

    def record_ids(self, obj: dict, cluster: object) -> list[str]:
        return ["orders/a", "orders/b"]

    def apply(self, obj: dict, record_id: str, cluster: object) -> str:
        if self.fail:
            raise RuntimeError("tc netem is needed for delay and failed here")
        self.log.append(f"apply {record_id}")
        return "applied"

    def recover(self, obj: dict, record_id: str, cluster: object) -> str:
        self.log.append(f"recover {record_id}")
        return "recovered"


class FakeCustom:
    """Merge patches of one object's metadata and status; a version number that grows with each."""

    def __init__(self, obj: dict) -> None:
        self.obj = obj

    def _bump(self) -> dict:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return {**self.obj, "metadata": dict(meta)}

    def patch_namespaced_custom_object(self, *args: object, **kwargs: object) -> dict:
        self.obj["metadata"].update(args[5]["metadata"])
        return self._bump()

    def patch_namespaced_custom_object_status(self, *args: object, **kwargs: object) -> dict:
        self.obj["status"] = args[5]["status"]
        return self._bump()


def chaos(duration: str = "30s", created: datetime | None = None) -> dict:
    stamp = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {
            "name": "drill",
            "namespace": "orders",
            "uid": "u1",
            "resourceVersion": "1",
            "creationTimestamp": stamp,
        },
        "spec": {"action": "partition", "mode": "all", "selector": {}, "duration": duration},
    }


Make = Callable[[dict, FakeKind], tuple[controller.Controller, FakeCustom]]


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch) -> Make:
    def build(obj: dict, kind: FakeKind) -> tuple[controller.Controller, FakeCustom]:
        monkeypatch.setitem(controller.KINDS, "NetworkChaos", kind)
        ctl = controller.Controller(client.ApiClient(), lambda line: None)
        fake = FakeCustom(obj)
        ctl.custom = fake
        ctl.reflectors["NetworkChaos"].store[KEY] = obj
        return ctl, fake

    return build


def phases(obj: dict) -> list[str]:
    return [r["phase"] for r in obj["status"]["experiment"]["containerRecords"]]


def test_a_new_chaos_is_applied_then_finalized_and_its_status_written(make: Make) -> None:
    kind = FakeKind()
    ctl, fake = make(chaos(), kind)
    ctl.reconcile("NetworkChaos", KEY)
    assert kind.log == ["apply orders/a", "apply orders/b"]
    assert fake.obj["metadata"]["finalizers"] == [controller.FINALIZER]
    assert phases(fake.obj) == [records.INJECTED] * 2
    assert {c["type"]: c["status"] for c in fake.obj["status"]["conditions"]}["AllInjected"] == "True"
    assert ctl.timers, "a timer for the end of the duration"
    ctl.reconcile("NetworkChaos", KEY)  # a second look applies nothing twice
    assert len(kind.log) == 2


def test_duration_over_recovers_and_a_restarted_controller_does_it_from_the_records(make: Make) -> None:
    kind = FakeKind()
    ctl, fake = make(chaos("30s", datetime.now(UTC) - timedelta(seconds=10)), kind)
    ctl.reconcile("NetworkChaos", KEY)
    fake.obj["metadata"]["creationTimestamp"] = (datetime.now(UTC) - timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    restarted, _ = make(fake.obj, kind)  # a new controller: nothing in memory, only the object
    restarted.reconcile("NetworkChaos", KEY)
    assert kind.log[2:] == ["recover orders/a", "recover orders/b"]
    assert phases(fake.obj) == [records.NOT_INJECTED] * 2
    assert fake.obj["status"]["experiment"]["desiredPhase"] == records.STOP


def test_a_delete_recovers_before_the_finalizer_goes(make: Make) -> None:
    kind = FakeKind()
    ctl, fake = make(chaos(), kind)
    ctl.reconcile("NetworkChaos", KEY)
    fake.obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ctl.latest.clear()
    ctl.reconcile("NetworkChaos", KEY)
    assert kind.log[2:] == ["recover orders/a", "recover orders/b"]
    assert fake.obj["metadata"]["finalizers"] == []


def test_failures_are_events_retried_a_few_times_then_left(make: Make) -> None:
    kind = FakeKind(fail=True)
    ctl, fake = make(chaos("10m"), kind)
    ctl.reconcile("NetworkChaos", KEY)
    record = fake.obj["status"]["experiment"]["containerRecords"][0]
    assert record["phase"] == records.NOT_INJECTED
    assert record["events"][0]["type"] == "Failed" and "netem" in record["events"][0]["message"]
    assert {c["type"]: c["status"] for c in fake.obj["status"]["conditions"]}["AllInjected"] == "False"
    for event in record["events"]:
        event["timestamp"] = records.timestamp(datetime.now(UTC) - timedelta(minutes=1))
    record["events"] *= controller.MAX_FAILURES
    ctl.latest.clear()
    ctl.reconcile("NetworkChaos", KEY)
    assert len(fake.obj["status"]["experiment"]["containerRecords"][0]["events"]) == controller.MAX_FAILURES
