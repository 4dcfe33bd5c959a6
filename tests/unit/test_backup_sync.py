"""A drill's backup must be visible in the restore target before the fault: with velero.restart_to_sync the
target's Velero server is restarted first (its first pass syncs the storage location)."""

from dataclasses import dataclass, field

from harness import failover
from harness.config import App
from harness.timeline import Timeline

APP = App(name="shop", namespace="shop", workload="deployment/shop")


@dataclass
class FakeVelero:
    """The calls back_up makes, in order, across every cluster's CLI."""

    calls: list[str] = field(default_factory=list)

    def create_backup(self, name: str, spec: object) -> None:
        self.calls.append(f"create {name}")

    def wait_for_backup(self, name: str, deadline_s: float) -> object:
        self.calls.append(f"completed {name}")
        return type("Backup", (), {"items_backed_up": 3})()

    def wait_for_backup_visible(self, name: str, deadline_s: float) -> object:
        self.calls.append(f"visible {name}")
        return object()


def test_the_target_s_velero_is_restarted_after_the_backup_and_before_waiting_for_it_to_sync() -> None:
    velero, timeline = FakeVelero(), Timeline()

    def restart() -> None:
        velero.calls.append("restart")

    failover.back_up(lambda cluster: velero, APP, "east", "west", "b1", timeline, 60, restart)
    assert velero.calls == ["create b1", "completed b1", "restart", "visible b1"]
    [restarted] = [e for e in timeline.events() if e.name == "velero.restarted"]
    assert restarted.cluster == "west"


def test_without_restart_to_sync_the_target_s_velero_is_left_alone() -> None:
    velero, timeline = FakeVelero(), Timeline()
    failover.back_up(lambda cluster: velero, APP, "east", "west", "b1", timeline, 60)
    assert velero.calls == ["create b1", "completed b1", "visible b1"]
    assert not [e for e in timeline.events() if e.name == "velero.restarted"]
