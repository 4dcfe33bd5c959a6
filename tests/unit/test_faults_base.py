"""harness.faults: fault records, the ledger, the FaultStack's reverts on every exit path, signals, and
the crash matrix: a runner killed with SIGKILL at each step of a fault's life, then `recover`."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from harness.errors import FleetDrillError
from harness.faults import (
    KINDS,
    Evidence,
    Fault,
    FaultContext,
    FaultStack,
    KubeContext,
    Ledger,
    LedgerError,
    RecoverError,
    RevertError,
    fault_from_record,
    interrupt_main_thread,
    recover,
    signals_as_interrupts,
)
from harness.timeline import Timeline
from tests.fakefaults import wait_for

PAUSE_AT = "FLEETDRILL_TEST_PAUSE_AT"
"""`target:stage` at which the crash runner announces itself (a `reached` file) and waits to be killed."""


def reach(folder: Path, target: str, stage: str) -> None:
    if os.environ.get(PAUSE_AT) == f"{target}:{stage}":
        partial = folder / "reached.partial"  # renamed whole: the test kills the runner once it exists
        partial.write_text(f"{target}:{stage}")
        partial.rename(folder / "reached")
        time.sleep(120)  # paused here until the test kills it


@dataclass(frozen=True)
class MarkerFault(Fault, kind="test-marker"):
    """In force on a target while `<target>.part1` or `.part2` exists in `folder`; every step is logged.

    Injection makes part1 then part2 (so a crash between them leaves it half applied); revert removes
    part2 then part1, and fails while `folder/revert-blocked` exists.
    """

    folder: str
    fail_inject: bool = False
    signals_on_revert: tuple[str, ...] = ()
    """Signals this process sends itself in the middle of revert."""

    def inject(self, ctx: FaultContext) -> None:
        folder = Path(self.folder)
        for target in self.targets:
            log(folder, f"inject {target}")
            reach(folder, target, "inject-start")
            (folder / f"{target}.part1").touch()
            if self.fail_inject:
                raise RuntimeError(f"cannot inject {target}: part 2 failed")
            reach(folder, target, "inject-mid")
            (folder / f"{target}.part2").touch()

    def revert(self, ctx: FaultContext) -> None:
        folder = Path(self.folder)
        for target in reversed(self.targets):
            if (folder / "revert-blocked").exists():
                raise RuntimeError(f"cannot revert {target}: blocked")
            log(folder, f"revert {target}")
            (folder / f"{target}.part2").unlink(missing_ok=True)
            for name in self.signals_on_revert:
                os.kill(os.getpid(), signal.Signals[name])
            sum(range(1000))  # let the handlers run here
            reach(folder, target, "revert-mid")
            (folder / f"{target}.part1").unlink(missing_ok=True)
            reach(folder, target, "revert-end")

    def effect(self, ctx: FaultContext, observed: object, started: object) -> Evidence:
        parts = in_force(Path(self.folder))
        return Evidence(len(parts) == 2 * len(self.targets), f"parts in force: {parts}")


def log(folder: Path, line: str) -> None:
    with (folder / "log").open("a") as file:
        file.write(line + "\n")


def logged(folder: Path) -> list[str]:
    return (folder / "log").read_text().splitlines() if (folder / "log").exists() else []


def in_force(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.part*"))


def states(ledger: Ledger) -> dict[str, str]:
    return {entry.fault["targets"][0]: entry.state for entry in ledger.entries()}


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.json")


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()


@pytest.fixture
def stack(ledger: Ledger, timeline: Timeline) -> FaultStack:
    return FaultStack(KubeContext(), ledger, timeline, "run-1")


def marker(folder: Path, *targets: str, **params: object) -> MarkerFault:
    return MarkerFault(str(folder), targets=targets, **params)  # type: ignore[arg-type]


# --- records and the registry -------------------------------------------------------------------


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    fault = marker(tmp_path, "a", "b", signals_on_revert=("SIGHUP",))
    record = json.loads(json.dumps(fault.to_record()))
    assert record == {
        "kind": "test-marker",
        "module": __name__,
        "targets": ["a", "b"],
        "params": {"folder": str(tmp_path), "fail_inject": False, "signals_on_revert": ["SIGHUP"]},
    }
    assert fault_from_record(record) == fault
    assert fault.describe() == (
        f"test-marker on a, b (folder={str(tmp_path)!r}, fail_inject=False, signals_on_revert=('SIGHUP',))"
    )


def test_unknown_kind_imports_its_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = """
from dataclasses import dataclass
from harness.faults import Fault

@dataclass(frozen=True)
class Late(Fault, kind="test-late"):
    size: int = 0
    def inject(self, ctx): pass
    def revert(self, ctx): pass
    def effect(self, ctx, observed, started): pass
"""
    (tmp_path / "late_faults.py").write_text(source)
    monkeypatch.syspath_prepend(tmp_path)
    try:
        record = {"kind": "test-late", "module": "late_faults", "targets": ["a"], "params": {}}
        fault = fault_from_record(record)
        assert (type(fault).__module__, fault.kind, fault.targets) == ("late_faults", "test-late", ("a",))
    finally:
        KINDS.pop("test-late", None)
        sys.modules.pop("late_faults", None)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"kind": "nope", "targets": ["a"], "params": {}}, "unknown fault kind 'nope'"),
        ({"kind": "nope", "module": "no_such_module_x", "targets": ["a"]}, "cannot import module 'no_such_"),
        ({"kind": "test-marker", "targets": ["a"], "params": {"colour": 1}}, "cannot rebuild fault test-m"),
        ({"kind": "test-marker", "params": {}}, "cannot rebuild fault"),
    ],
)
def test_bad_records_name_the_problem(record: dict, message: str) -> None:
    with pytest.raises(FleetDrillError, match=message):
        fault_from_record(record)


def test_a_fault_checks_itself(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"already taken by test_faults_base\.MarkerFault"):

        class Again(MarkerFault, kind="test-marker"):
            pass

    with pytest.raises(TypeError, match="tuple of cluster names"):
        MarkerFault(str(tmp_path), targets="a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tuple of cluster names"):
        MarkerFault(str(tmp_path), targets=())

    @dataclass(frozen=True)
    class Kindless(Fault):
        def inject(self, ctx: FaultContext) -> None: ...
        def revert(self, ctx: FaultContext) -> None: ...
        def effect(self, ctx: FaultContext, observed: object, started: object) -> Evidence: ...

    with pytest.raises(TypeError, match="has no fault kind"):
        Kindless(targets=("a",))


def test_a_fault_the_ledger_could_not_rebuild_is_refused_before_it_acts(
    stack: FaultStack, ledger: Ledger, tmp_path: Path
) -> None:
    not_json = MarkerFault(tmp_path, targets=("a",))  # type: ignore[arg-type]
    back_as_tuple = marker(tmp_path, "a", signals_on_revert=["SIGHUP"])
    for fault in (not_json, back_as_tuple):
        with pytest.raises(TypeError, match="its ledger record does not rebuild it"), stack.applied(fault):
            pytest.fail("the block ran")
    assert (in_force(tmp_path), ledger.entries(), stack.faulted_clusters()) == ([], [], frozenset())


# --- the ledger -------------------------------------------------------------------------------


def test_ledger_add_mark_remove(ledger: Ledger, tmp_path: Path) -> None:
    assert ledger.entries() == []
    before = time.time()
    first = ledger.add(marker(tmp_path, "a"), "run-1")
    second = ledger.add(marker(tmp_path, "b"), "run-1")
    assert (first.state, first.run_id, first.pid) == ("intended", "run-1", os.getpid())
    assert before <= first.created_at == first.updated_at <= time.time()
    assert first.fault == json.loads(json.dumps(marker(tmp_path, "a").to_record()))
    marked = ledger.mark(first.id, "applied")
    assert marked.state == "applied" and marked.updated_at >= first.updated_at
    ledger.mark(second.id, "reverted")
    assert [e.id for e in ledger.entries()] == [first.id, second.id]
    assert ledger.open_entries() == [marked]
    assert Ledger(ledger.path).entries() == ledger.entries()
    ledger.remove(first.id)
    ledger.remove(first.id)
    assert [e.id for e in ledger.entries()] == [second.id]
    with pytest.raises(LedgerError, match=f"no entry {first.id!r}"):
        ledger.mark(first.id, "applied")
    with pytest.raises(ValueError, match="expected a ledger state"):
        ledger.mark(second.id, "gone")  # type: ignore[arg-type]


def test_an_entry_keeps_what_its_steps_handed_over(ledger: Ledger, tmp_path: Path) -> None:
    entry = ledger.add(marker(tmp_path, "a"), "run-1")
    assert entry.handles == {}
    kept = ledger.keep(entry.id, {"a": "EXP-1"})
    assert (kept.handles, kept.state, kept.updated_at) == ({"a": "EXP-1"}, "intended", entry.updated_at)
    assert ledger.entries() == [kept] and kept.describe().endswith("; handed over a: EXP-1]")
    data = json.loads(ledger.path.read_text())
    del data["entries"][0]["handles"]  # written before entries had handles
    ledger.path.write_text(json.dumps(data))
    assert ledger.entries() == [entry]
    data["entries"][0]["handles"] = {"a": 1}
    ledger.path.write_text(json.dumps(data))
    with pytest.raises(LedgerError, match="handles other than a mapping of texts"):
        ledger.entries()


def test_a_failed_write_keeps_the_old_ledger_whole(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = ledger.add(marker(tmp_path, "a"), "run-1")
    old = ledger.path.read_bytes()

    def crash(self: Path, target: Path) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        ledger.add(marker(tmp_path, "b"), "run-1")
    assert ledger.path.read_bytes() == old
    assert ledger.entries() == [kept]
    assert sorted(p.name for p in ledger.path.parent.iterdir()) == ["ledger.json", "ledger.json.lock"]


def test_every_write_is_fsynced_file_then_folder(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    entry = ledger.add(marker(tmp_path, "a"), "run-1")
    ledger.remove(entry.id)
    assert synced == ["file", "folder", "file", "folder"]


def test_concurrent_writers_lose_nothing_and_readers_never_see_a_torn_file(
    ledger: Ledger, tmp_path: Path
) -> None:
    done = threading.Event()
    reader_errors: list[Exception] = []

    def read() -> None:
        while not done.is_set():
            try:
                Ledger(ledger.path).entries()
            except Exception as exc:
                reader_errors.append(exc)

    def write(n: int) -> None:
        for i in range(15):
            ledger.add(marker(tmp_path, f"t{n}-{i}"), f"run-{n}")

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert reader_errors == []
    entries = ledger.entries()
    assert len(entries) == len({e.id for e in entries}) == 60
    assert {e.fault["targets"][0] for e in entries} == {f"t{n}-{i}" for n in range(4) for i in range(15)}


@pytest.mark.parametrize("content", ["{", '{"version": 9, "entries": []}', '{"version": 1, "entries": [{}]}'])
def test_a_corrupt_ledger_is_an_error_naming_it(ledger: Ledger, content: str) -> None:
    ledger.path.parent.mkdir()
    ledger.path.write_text(content)
    with pytest.raises(LedgerError, match=rf"^{ledger.path}: not a fault ledger .*revert them by hand"):
        ledger.entries()


# --- the stack --------------------------------------------------------------------------------


def test_applied_is_in_the_ledger_and_on_the_timeline_and_reverted_on_exit(
    stack: FaultStack, ledger: Ledger, timeline: Timeline, tmp_path: Path
) -> None:
    with stack.applied(marker(tmp_path, "a")) as injected:
        assert in_force(tmp_path) == ["a.part1", "a.part2"]
        (entry,) = ledger.entries()
        assert entry.state == "applied"
        assert stack.faulted_clusters() == {"a"}
    assert in_force(tmp_path) == [] and ledger.entries() == [] and stack.faulted_clusters() == frozenset()
    assert [e.name for e in timeline.events()] == ["fault.injecting", "fault.injected", "fault.reverted"]
    started = timeline.first("fault.injecting")
    assert injected == timeline.first("fault.injected")
    assert injected.cluster == started.cluster == "a"
    assert started.t_mono <= injected.t_mono
    assert started.detail == {
        "id": entry.id,
        "kind": "test-marker",
        "targets": ["a"],
        "params": {"folder": str(tmp_path), "fail_inject": False, "signals_on_revert": ()},
    }
    assert injected.detail == started.detail | {"started": started.t_mono}
    assert logged(tmp_path) == ["inject a", "revert a"]


def test_stacked_faults_revert_newest_first(stack: FaultStack, tmp_path: Path) -> None:
    with ExitStack() as nested:
        for target in "abc":
            nested.enter_context(stack.applied(marker(tmp_path, target)))
        assert stack.faulted_clusters() == {"a", "b", "c"}
        assert len(in_force(tmp_path)) == 6
    assert logged(tmp_path) == ["inject a", "inject b", "inject c", "revert c", "revert b", "revert a"]
    assert in_force(tmp_path) == []


def test_three_at_once_a_failing_third_reverts_all_three(
    stack: FaultStack, ledger: Ledger, timeline: Timeline, tmp_path: Path
) -> None:
    """Simultaneous failures: two faults in force, the third fails half-way; the drill's exit reverts it
    and then the first two, newest first, and the ledger ends empty."""
    with pytest.raises(RuntimeError, match="cannot inject c: part 2 failed"), stack:
        stack.push(marker(tmp_path, "a"))
        stack.push(marker(tmp_path, "b"))
        assert states(ledger) == {"a": "applied", "b": "applied"}
        stack.push(marker(tmp_path, "c", fail_inject=True))
    assert logged(tmp_path) == ["inject a", "inject b", "inject c", "revert c", "revert b", "revert a"]
    assert in_force(tmp_path) == [] and ledger.entries() == []
    reverted = [e.detail["targets"] for e in timeline.events() if e.name == "fault.reverted"]
    assert reverted == [["c"], ["b"], ["a"]]


@pytest.mark.parametrize("error", [RuntimeError("drill failed"), KeyboardInterrupt()])
def test_an_exception_in_the_block_reverts(
    stack: FaultStack, ledger: Ledger, tmp_path: Path, error: BaseException
) -> None:
    with (
        pytest.raises(type(error)),
        stack.applied(marker(tmp_path, "a")),
        stack.applied(marker(tmp_path, "b")),
    ):
        raise error
    assert logged(tmp_path)[-2:] == ["revert b", "revert a"]
    assert in_force(tmp_path) == [] and ledger.entries() == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_interrupt_and_revert(
    stack: FaultStack, ledger: Ledger, tmp_path: Path, signum: signal.Signals
) -> None:
    before = signal.getsignal(signum)
    with (
        signals_as_interrupts(),
        pytest.raises(KeyboardInterrupt, match=signum.name),
        stack.applied(marker(tmp_path, "a")),
        stack.applied(marker(tmp_path, "b")),
    ):
        os.kill(os.getpid(), signum)
        wait_for(lambda: False, 5, f"{signum.name} to interrupt the drill")
    assert logged(tmp_path)[-2:] == ["revert b", "revert a"]
    assert in_force(tmp_path) == [] and ledger.entries() == []
    assert signal.getsignal(signum) == before


def test_a_signal_during_a_revert_waits_for_it_a_second_one_does_not(
    stack: FaultStack, ledger: Ledger, tmp_path: Path
) -> None:
    with signals_as_interrupts():
        with (
            pytest.raises(KeyboardInterrupt),
            stack.applied(marker(tmp_path, "a", signals_on_revert=("SIGTERM",))),
        ):
            pass
        assert in_force(tmp_path) == [] and ledger.entries() == []

        twice = marker(tmp_path, "b", signals_on_revert=("SIGTERM", "SIGHUP"))
        with pytest.raises(KeyboardInterrupt), stack.applied(twice):
            pass
    assert in_force(tmp_path) == ["b.part1"]
    assert states(ledger) == {"b": "applied"}


def test_a_failed_injection_is_reverted(
    stack: FaultStack, ledger: Ledger, timeline: Timeline, tmp_path: Path
) -> None:
    with (
        pytest.raises(RuntimeError, match="part 2 failed"),
        stack.applied(marker(tmp_path, "a", fail_inject=True)),
    ):
        pytest.fail("the block ran")
    assert in_force(tmp_path) == [] and ledger.entries() == []
    assert [e.name for e in timeline.events()] == ["fault.injecting", "fault.reverted"]


def test_a_failed_revert_stays_in_the_ledger_and_is_retried(
    stack: FaultStack, ledger: Ledger, timeline: Timeline, tmp_path: Path
) -> None:
    with pytest.raises(RevertError) as raised, stack.applied(marker(tmp_path, "a")):
        (tmp_path / "revert-blocked").touch()
    message = str(raised.value)
    assert message.startswith(f"test-marker on a (folder={str(tmp_path)!r}")
    assert f"cannot revert a: blocked); it stays in the fault ledger {ledger.path}" in message
    assert "fleetdrill recover" in message
    assert states(ledger) == {"a": "applied"} and stack.faulted_clusters() == {"a"}
    assert timeline.last("fault.revert_failed").detail["error"] == "RuntimeError: cannot revert a: blocked"
    with pytest.raises(RevertError, match="test-marker on a"):
        stack.undo_all()
    (tmp_path / "revert-blocked").unlink()
    stack.undo_all()
    stack.undo_all()
    assert in_force(tmp_path) == [] and ledger.entries() == [] and stack.faulted_clusters() == frozenset()


def test_push_lasts_until_undo_all(ledger: Ledger, timeline: Timeline, tmp_path: Path) -> None:
    with FaultStack(KubeContext(), ledger, timeline, "run-1") as stack:
        injected = stack.push(marker(tmp_path, "a"))
        stack.push(marker(tmp_path, "b"))
        assert injected.name == "fault.injected" and len(ledger.entries()) == 2
        with stack.applied(marker(tmp_path, "c")):
            stack.undo_all()
            assert in_force(tmp_path) == []
        stack.undo_all()
    assert logged(tmp_path)[3:] == ["revert c", "revert b", "revert a"]
    assert ledger.entries() == []


def test_the_guard_sees_what_is_faulted_and_can_refuse(ledger: Ledger, tmp_path: Path) -> None:
    seen: list[frozenset[str]] = []

    def guard(fault: Fault, faulted: frozenset[str]) -> None:
        seen.append(faulted)
        if "c" in fault.targets:
            raise FleetDrillError("refused: c")

    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1", guard=guard)
    with stack.applied(marker(tmp_path, "a")), stack.applied(marker(tmp_path, "b")):
        with pytest.raises(FleetDrillError, match="refused: c"), stack.applied(marker(tmp_path, "c")):
            pytest.fail("the block ran")
        assert len(ledger.entries()) == 2
    assert seen == [frozenset(), {"a"}, {"a", "b"}]
    assert "inject c" not in logged(tmp_path)


def test_a_dry_run_plans_and_touches_nothing(ledger: Ledger, timeline: Timeline, tmp_path: Path) -> None:
    seen: list[frozenset[str]] = []
    stack = FaultStack(
        KubeContext(), ledger, timeline, "run-1", guard=lambda f, s: seen.append(s), dry_run=True
    )
    with stack.applied(marker(tmp_path, "a")) as planned, stack.applied(marker(tmp_path, "b")):
        assert stack.faulted_clusters() == {"a", "b"}
    stack.undo_all()
    assert stack.planned == [marker(tmp_path, "a"), marker(tmp_path, "b")]
    assert seen == [frozenset(), {"a"}]
    assert planned.name == "fault.planned" and planned.detail["id"] is None
    assert [e.name for e in timeline.events()] == ["fault.planned", "fault.planned"]
    assert logged(tmp_path) == [] and not ledger.path.parent.exists()


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Ctrl-C's own handler, whatever this process inherited: a shell starts background jobs with SIGINT
    ignored, and then no interrupt reaches the main thread at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("default_sigint")
def test_interrupt_main_thread_raises_the_given_error(stack: FaultStack, tmp_path: Path) -> None:
    def interrupt(exc: BaseException) -> None:
        threading.Timer(0.05, interrupt_main_thread, (exc,)).start()
        wait_for(lambda: False, 5, "the interruption")

    with (
        signals_as_interrupts(),
        pytest.raises(FleetDrillError, match="stop now"),
        stack.applied(marker(tmp_path, "a")),
    ):
        interrupt(FleetDrillError("stop now"))
    assert in_force(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        interrupt(FleetDrillError("outside signals_as_interrupts: Ctrl-C"))


# --- recover and the crash matrix -------------------------------------------------------------

RUNNER = """
import sys
from contextlib import ExitStack
from importlib import import_module
from pathlib import Path

sys.path[:0] = {path!r}
from harness.faults import FaultStack, KubeContext, Ledger
from harness.timeline import Timeline

tests = import_module({module!r})
folder = Path(sys.argv[1])
stack = FaultStack(KubeContext(), Ledger(folder / "ledger.json"), Timeline(), "crashed-run")
with ExitStack() as faults:
    for target in sys.argv[2].split(","):
        faults.enter_context(stack.applied(tests.MarkerFault(str(folder), targets=(target,))))
    tests.reach(folder, "all", "applied")
"""

CRASHES = [
    # targets, where the runner is killed, what is then in force, the ledger's states
    ("a", "a:inject-start", [], {"a": "intended"}),
    ("a", "a:inject-mid", ["a.part1"], {"a": "intended"}),
    ("a", "all:applied", ["a.part1", "a.part2"], {"a": "applied"}),
    ("a", "a:revert-mid", ["a.part1"], {"a": "applied"}),
    ("a", "a:revert-end", [], {"a": "applied"}),
    ("a,b", "b:inject-mid", ["a.part1", "a.part2", "b.part1"], {"a": "applied", "b": "intended"}),
    ("a,b", "a:revert-mid", ["a.part1"], {"a": "applied"}),
]


@pytest.mark.parametrize(
    ("targets", "kill_at", "left", "ledger_states"),
    CRASHES,
    ids=[f"{c[0]}-killed-at-{c[1]}" for c in CRASHES],
)
def test_recover_after_a_kill(
    tmp_path: Path, targets: str, kill_at: str, left: list[str], ledger_states: dict[str, str]
) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(path=sys.path, module=MarkerFault.__module__))
    env = {**os.environ, PAUSE_AT: kill_at}
    with (tmp_path / "stderr").open("w") as stderr:
        runner = subprocess.Popen([sys.executable, script, tmp_path, targets], env=env, stderr=stderr)
    try:
        wait_for(lambda: (tmp_path / "reached").exists() or runner.poll() is not None, 60, kill_at)
        assert runner.poll() is None, (tmp_path / "stderr").read_text()
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.kill()
        runner.wait()
    assert (tmp_path / "reached").read_text() == kill_at
    ledger = Ledger(tmp_path / "ledger.json")
    assert in_force(tmp_path) == left
    assert states(ledger) == ledger_states
    assert ledger.left_behind() == ledger.open_entries(), "the killed run reverts none of them"

    reports = recover(ledger.path, KubeContext())
    assert [(r.entry.fault["targets"], r.outcome) for r in reports] == [
        ([target], "reverted") for target in reversed(ledger_states)
    ]
    assert in_force(tmp_path) == [] and ledger.entries() == []
    assert recover(ledger.path, KubeContext()) == []
    assert in_force(tmp_path) == [] and ledger.entries() == []


def test_recover_keeps_what_it_cannot_revert_and_names_it(ledger: Ledger, tmp_path: Path) -> None:
    stack = FaultStack(KubeContext(), ledger, Timeline(), "run-1")
    stack.push(marker(tmp_path, "a"))
    stack.push(marker(tmp_path, "b"))
    (tmp_path / "revert-blocked").touch()
    with pytest.raises(RecoverError) as raised:
        recover(ledger.path, KubeContext())
    assert str(raised.value).startswith(f"2 fault(s) may still be in force, kept in {ledger.path}: failed: ")
    assert "test-marker on b" in str(raised.value)
    assert "RuntimeError: cannot revert a: blocked" in str(raised.value)
    assert [r.outcome for r in raised.value.reports] == ["failed", "failed"]
    assert states(ledger) == {"a": "applied", "b": "applied"}
    (tmp_path / "revert-blocked").unlink()
    assert [r.line().split(":")[0] for r in recover(ledger.path, KubeContext())] == ["reverted", "reverted"]
    assert in_force(tmp_path) == [] and ledger.entries() == []


def test_recover_skips_a_live_run_unless_forced(ledger: Ledger, tmp_path: Path) -> None:
    entry = ledger.add(marker(tmp_path, "a"), "other-run")
    data = json.loads(ledger.path.read_text())
    data["entries"][0]["pid"] = 1  # init: alive on every host
    ledger.path.write_text(json.dumps(data))
    with pytest.raises(RecoverError, match=r"skipped: .*its drill is still running .* pass --force"):
        recover(ledger.path, KubeContext())
    assert [e.id for e in ledger.entries()] == [entry.id]
    assert [r.outcome for r in recover(ledger.path, KubeContext(), force=True)] == ["reverted"]
    assert ledger.entries() == []


def test_left_behind_are_the_open_entries_no_running_process_will_revert(
    ledger: Ledger, tmp_path: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    owners = {
        "ours": {},
        "live": {"pid": 1},  # init: alive on every host
        "gone": {"pid": gone.pid},
        "elsewhere": {"host": "another-host", "pid": 1},
        "reverted": {"pid": gone.pid, "state": "reverted"},
    }
    for target in owners:
        ledger.add(marker(tmp_path, target), "run-1")
    data = json.loads(ledger.path.read_text())
    for entry, changes in zip(data["entries"], owners.values(), strict=True):
        entry.update(changes)
    ledger.path.write_text(json.dumps(data))
    assert [entry.fault["targets"] for entry in ledger.left_behind()] == [["gone"], ["elsewhere"]]


def test_recover_drops_reverted_entries_without_reverting_again(ledger: Ledger, tmp_path: Path) -> None:
    ledger.mark(ledger.add(marker(tmp_path, "a"), "run-1").id, "reverted")
    assert [r.outcome for r in recover(ledger.path, KubeContext())] == ["removed"]
    assert ledger.entries() == [] and logged(tmp_path) == []


# --- recovery changes (a failover the drill made) ------------------------------------------------


@dataclass(frozen=True)
class Recovery(MarkerFault, kind="test-recovery"):
    """A marker that is a recovery change: undone after every fault."""

    recovery: ClassVar[bool] = True


def test_recovery_changes_are_undone_after_every_fault_and_never_guarded(
    ledger: Ledger, timeline: Timeline, tmp_path: Path
) -> None:
    guarded: list[str] = []
    stack = FaultStack(
        KubeContext(), ledger, timeline, "run-1", guard=lambda fault, _: guarded.append(fault.kind)
    )
    stack.push(marker(tmp_path, "a"))
    stack.push(Recovery(str(tmp_path), targets=("b",)))
    stack.push(marker(tmp_path, "c"))
    assert guarded == ["test-marker", "test-marker"] and stack.faulted_clusters() == {"a", "c"}
    stack.undo_all(recoveries=False)
    assert logged(tmp_path)[-2:] == ["revert c", "revert a"] and in_force(tmp_path) == ["b.part1", "b.part2"]
    stack.undo_all()
    assert logged(tmp_path)[-1] == "revert b" and ledger.entries() == []


def test_recover_reverts_recovery_changes_after_every_fault(ledger: Ledger, tmp_path: Path) -> None:
    for fault in (marker(tmp_path, "a"), Recovery(str(tmp_path), targets=("b",)), marker(tmp_path, "c")):
        fault.inject(KubeContext())
        ledger.mark(ledger.add(fault, "crashed-run").id, "applied")
    recover(ledger.path, KubeContext(), force=True)
    assert [line for line in logged(tmp_path) if line.startswith("revert")] == [
        "revert c",
        "revert a",
        "revert b",
    ]


def test_a_recovery_change_the_drill_undid_itself_is_forgotten(stack: FaultStack, tmp_path: Path) -> None:
    change = Recovery(str(tmp_path), targets=("b",))
    stack.push(change)
    stack.forget(change)
    stack.undo_all()
    assert "revert b" not in logged(tmp_path) and stack.in_force() == []
