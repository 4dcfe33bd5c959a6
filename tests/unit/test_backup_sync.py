"""A drill's backup must be visible in the restore target before the fault: with velero.restart_to_sync the
target's Velero server is restarted first (its first pass syncs the storage location)."""

from dataclasses import dataclass, field

import pytest

from harness import failover
from harness.config import App
from harness.timeline import Timeline
from harness.velero import Backup, VeleroError

APP = App(name="shop", namespace="shop", workload="deployment/shop")


@dataclass
class FakeVelero:
    """The calls back_up makes, in order, across every cluster's CLI."""

    calls: list[str] = field(default_factory=list)

    def create_backup(self, name: str, spec: object) -> None:
        self.calls.append(f"create {name}")

    def wait_for_backup(self, name: str, deadline_s: float) -> Backup:
        self.calls.append(f"completed {name}")
        return Backup.from_json(
            {"status": {"progress": {"itemsBackedUp": 3}, "hookStatus": {"hooksAttempted": 1}}}
        )

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


HOOK_ERROR = (
    "postgres: resource: /pods name: /postgres-0 message: /Error executing hook hook: /<from-annotation>"
    " err: /command terminated with exit code 2"
)


@dataclass
class FailedVelero(FakeVelero):
    """A backup that ends PartiallyFailed, with `hooks_failed` of its hooks failed."""

    hooks_failed: int = 1
    logs: str = ""

    def wait_for_backup(self, name: str, deadline_s: float) -> Backup:
        raise VeleroError(f"backup {name} on east ended PartiallyFailed: failure reason (none); 1 errors")

    def get_backup(self, name: str) -> Backup:
        status = {
            "phase": "PartiallyFailed",
            "hookStatus": {"hooksAttempted": 1, "hooksFailed": self.hooks_failed},
        }
        return Backup.from_json({"status": status})

    def backup_logs(self, name: str) -> str:
        return self.logs

    def describe_backup(self, name: str, *, details: bool = False) -> str:
        return f"Phase: PartiallyFailed\nErrors:\n  Namespaces:\n    {HOOK_ERROR}\nHooks Attempted: 1\n"


def test_a_backup_whose_hook_failed_raises_naming_the_hook_s_error() -> None:
    timeline = Timeline()
    with pytest.raises(failover.BackupHooksFailed) as raised:
        failover.back_up(lambda cluster: FailedVelero(), APP, "east", "west", "b1", timeline, 60)
    assert (raised.value.attempted, raised.value.failed) == (1, 1)
    assert f"backup b1 in east: 1 of 1 backup hooks failed: {HOOK_ERROR}" in str(raised.value)
    assert "ended PartiallyFailed" in str(raised.value)
    assert [e for e in timeline.events() if e.name == "backup.hooks-failed"]


VELERO = 'logSource="github.com/vmware-tanzu/velero@v1.18.3/pkg/podexec/pod_command_executor.go:133"'
HOOK = (
    'backup=velero/b1 hookCommand="[psql -c CHECKPOINT NOW]" hookContainer=postgres'
    ' hookName="<from-annotation>" hookOnError=Fail hookPhase=pre hookSource=annotation'
    ' hookTimeout="{1m0s}" hookType=exec'
)
LOGS = f"""\
time="2026-12-05T13:28:05Z" level=info msg="running exec hook" {HOOK} {VELERO}
time="2026-12-05T13:28:05Z" level=info msg="stdout: " {HOOK} {VELERO}
time="2026-12-05T13:28:05Z" level=info msg="stderr: psql: error: connection to server on socket \\"/var/run/\
postgresql/.s.PGSQL.5432\\" failed: FATAL:  role \\"root\\" does not exist\\n" {HOOK} {VELERO}
time="2026-12-05T13:28:05Z" level=error msg="Error executing hook" backup=velero/b1 error="command terminated\
 with exit code 2" hookPhase=pre hookSource=annotation hookType=exec {VELERO}
time="2026-12-05T13:28:05Z" level=error msg="Error running pre hooks for pod" backup=velero/b1 error="command\
 terminated with exit code 2" {VELERO} name=postgres-0
"""


def test_the_hook_is_named_as_velero_s_log_tells_it() -> None:
    """Velero 1.18's own lines (`velero backup logs`) of a pre hook run as root, where psql needs -U."""
    velero = FailedVelero(logs=LOGS)
    with pytest.raises(failover.BackupHooksFailed) as raised:
        failover.back_up(lambda cluster: velero, APP, "east", "west", "b1", Timeline(), 60)
    expected = (
        "1 of 1 backup hooks failed: pre hook <from-annotation> [psql -c CHECKPOINT NOW] in container"
        " postgres of pod postgres-0: command terminated with exit code 2 (psql: error: connection to server"
        ' on socket "/var/run/postgresql/.s.PGSQL.5432" failed: FATAL: role "root" does not exist). backup b1'
    )
    assert expected in str(raised.value)


def test_a_backup_that_failed_otherwise_is_velero_s_error() -> None:
    with pytest.raises(VeleroError) as raised:
        failover.back_up(
            lambda cluster: FailedVelero(hooks_failed=0), APP, "east", "west", "b1", Timeline(), 60
        )
    assert not isinstance(raised.value, failover.BackupHooksFailed)


def test_the_backup_point_holds_how_many_hooks_ran() -> None:
    point = failover.back_up(lambda cluster: FakeVelero(), APP, "east", "west", "b1", Timeline(), 60)
    assert point.hooks_attempted == 1


def test_a_backup_holds_the_app_s_data_namespaces_after_its_own() -> None:
    app = APP.model_copy(update={"data_namespaces": ("db", "shop")})
    assert app.backed_up_namespaces == ("shop", "db")
