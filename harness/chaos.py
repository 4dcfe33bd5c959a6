"""The Chaos Toolkit bridge: experiments/*.yaml|json run as pytest items through chaoslib, as drills.

An experiment is loaded, prepared for the fleet (harness.faults.experiment: the fleet fills only the
configuration the experiment leaves unset, and adds the secret scopes `k8s`, `k8s-<role>` and
`k8s-<cluster>`), checked and run with chaoslib (never the CLI), with rollbacks always run, inside a
DrillRun: the clusters its actions act on pass the allowlist and blast radius and are leased, and its
changes are in the fault ledger (an ExperimentFault) before its method runs, so a crash leaves them for
`fleetdrill recover`. While it runs, the app's endpoints are probed (and the fleet's abort rule watched),
each activity goes to the timeline and to allure. A steady state not met, a deviation, a failed method
activity or a method action that selected nothing fails it; a rollback that failed, an abort or an
interruption is an error. The verdict goes to the drill record (report, history, evidence); the journal
(secrets masked) to the record's folder and to allure.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import allure
import pytest
from chaoslib.exceptions import ActivityFailed, ChaosException
from chaoslib.experiment import ensure_experiment_is_valid, run_experiment
from chaoslib.loader import load_experiment
from chaoslib.run import RunEventHandler
from chaoslib.types import Strategy

from harness.config import Fleet
from harness.drill import Drill
from harness.errors import ConfigError, FleetDrillError
from harness.faults.base import Evidence
from harness.faults.experiment import (
    ExperimentFault,
    Targets,
    app_of,
    environment_keys,
    failed_run,
    kubeconfig_for_chaosk8s,
    kubeconfig_paths,
    prepare,
    record_values,
    targets,
    workload_replicas,
)
from harness.fleet import FleetAccess
from harness.report import allure as allure_results
from harness.run import DrillRun, RunSettings
from harness.safety import DrillAborted, Guard, SafetyError
from harness.samples import Status, Verdict
from harness.timeline import Timeline

SUFFIXES = (".yaml", ".yml", ".json")
FOLDER = "experiments"
SETTINGS = {"runtime": {"rollbacks": {"strategy": "always"}}}
SUITE_TAGS = ("gate", "quarterly", "gameday")
READ_ONLY_TAG = "gate"
POLL_S = 0.2
MASK = "***"
JOURNAL = "journal.json"
EXPECTED = "the steady state holds through the method, whose actions select something, and rollbacks succeed"
OUTCOMES: dict[Status, str] = {"pass": "passed", "fail": "failed", "error": "error"}
_ABORTED = f"{DrillAborted.__module__}.{DrillAborted.__qualname__}: "


class ExperimentFailed(FleetDrillError):
    """An experiment could not run as written, or ended in error."""


def is_experiment(path: Path) -> bool:
    """A YAML or JSON file under a folder called experiments."""
    return path.suffix in SUFFIXES and FOLDER in path.parent.parts


def masked(journal: dict[str, Any]) -> dict[str, Any]:
    """The journal with every secret value replaced by ***."""

    def mask(value: Any) -> Any:
        return {k: mask(v) for k, v in value.items()} if isinstance(value, dict) else MASK

    experiment = dict(journal.get("experiment") or {})
    if "secrets" in experiment:
        experiment["secrets"] = mask(experiment["secrets"])
    return {**journal, "experiment": experiment}


def _probe_line(run: dict[str, Any]) -> str:
    activity = run.get("activity", {})
    error = "".join(run.get("exception") or []).strip().splitlines()
    got = error[-1] if error else f"got {json.dumps(run.get('output'), default=str)[:200]}"
    return f"probe {activity.get('name')!r} expected {activity.get('tolerance')!r}, {got}"


def _failure(journal: dict[str, Any]) -> tuple[Status, str] | None:
    """Why the run counts as failed or in error (one line), or None."""
    states = journal.get("steady_states") or {}
    for moment, label in (("before", "before the method"), ("after", "after the method (deviated)")):
        state = states.get(moment) or {}
        if state.get("steady_state_met") is False:
            unmet = [_probe_line(r) for r in state.get("probes", []) if r.get("tolerance_met") is False]
            return "fail", f"steady-state hypothesis not met {label}: {'; '.join(unmet) or 'a probe failed'}"
    failed = failed_run(journal.get("run") or [])
    if failed is not None:
        return "fail", f"method {failed}"
    failed = failed_run(journal.get("rollbacks") or [])
    if failed is not None:
        return "error", f"rollback {failed}"
    if journal.get("deviated"):
        return "fail", "the steady state deviated"
    if journal.get("status") != "completed":
        return "error", f"the experiment ended {journal.get('status')}"
    return None


def judge(journal: dict[str, Any], evidence: Evidence | None, stopped: str | None = None) -> Verdict:
    """The experiment's verdict from its journal, the evidence of what its method's actions selected
    (None when it changed nothing) and why the drill stopped it, if it did."""
    measured = f"ended {journal.get('status')}" + (", deviated" if journal.get("deviated") else "")
    failure = _failure(journal)
    if stopped is not None:
        failure = "error", stopped
    elif failure is None and evidence is not None and not evidence.effective:
        failure = "fail", f"{evidence.detail}: the experiment tested nothing"
    if failure is not None:
        return Verdict(failure[0], "experiment", EXPECTED, measured, failure[1], {})
    selected = evidence.detail if evidence is not None else "its method changed nothing"
    return Verdict("pass", "experiment", EXPECTED, measured, f"the steady state held; {selected}", {})


def rolled_back(experiment: dict[str, Any], journal: dict[str, Any]) -> bool:
    """Every rollback the experiment declares ran and succeeded."""
    runs = journal.get("rollbacks") or []
    return len(runs) == len(experiment.get("rollbacks") or []) and failed_run(runs) is None


class AllureSteps(RunEventHandler):  # type: ignore[misc]
    """Each phase and each activity of the run as an allure step."""

    def __init__(self) -> None:
        self._open: dict[int, Any] = {}

    def _start(self, key: int, title: str) -> None:
        self._open[key] = allure.step(title)
        self._open[key].__enter__()

    def _stop(self, key: int, failed: str | None = None) -> None:
        step = self._open.pop(key, None)
        if step is not None:
            error = ExperimentFailed(failed) if failed else None
            step.__exit__(type(error) if error else None, error, None)

    def start_hypothesis_before(self, experiment: Any) -> None:
        self._start(1, "steady-state hypothesis (before)")

    def hypothesis_before_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._stop(1, None if (state or {}).get("steady_state_met") else "steady state not met")

    def start_method(self, experiment: Any) -> None:
        self._start(2, "method")

    def method_completed(self, experiment: Any, state: Any = None) -> None:
        self._stop(2)

    def start_hypothesis_after(self, experiment: Any) -> None:
        self._start(3, "steady-state hypothesis (after)")

    def hypothesis_after_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._stop(3, None if (state or {}).get("steady_state_met") else "steady state deviated")

    def start_rollbacks(self, experiment: Any) -> None:
        self._start(4, "rollbacks")

    def rollbacks_completed(self, experiment: Any, journal: Any) -> None:
        self._stop(4)

    def start_activity(self, activity: Any) -> None:
        self._start(id(activity), f"{activity.get('type')} {activity.get('name')}")

    def activity_completed(self, activity: Any, run: Any) -> None:
        self._stop(id(activity), None if run.get("status") == "succeeded" else f"{run.get('status')}")

    def finish(self, journal: Any) -> None:
        for key in list(self._open):  # phases an interruption left open
            self._stop(key, "interrupted")


class Watch(RunEventHandler):  # type: ignore[misc]
    """Each activity on the drill's timeline; an abort of the drill (its abort rule, a lost lease) stops the
    experiment, whose rollbacks still run (chaoslib reports the abort as the failure of the activity it
    interrupted); a signal (Ctrl-C) is kept to stop the session after the record is written."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.stopped: str | None = None
        self.interrupted = False
        self._rolling_back = False

    def start_rollbacks(self, experiment: Any) -> None:
        self._rolling_back = True

    def activity_completed(self, activity: Any, run: Any) -> None:
        detail = {"name": activity.get("name"), "type": activity.get("type"), "status": run.get("status")}
        self.timeline.record("experiment.activity", detail=detail)
        error = "".join(run.get("exception") or [])
        if _ABORTED in error and self.stopped is None:
            self.stopped = error.rpartition(_ABORTED)[2].strip().splitlines()[0]
            if not self._rolling_back and threading.current_thread() is threading.main_thread():
                raise KeyboardInterrupt(self.stopped)  # chaoslib: "interrupted", then the rollbacks

    def signal_exit(self) -> None:
        if self.stopped is None:
            self.interrupted = True


def run(
    experiment: dict[str, Any], fleet: Fleet, journal_path: Path, handlers: tuple[RunEventHandler, ...] = ()
) -> dict[str, Any]:
    """Run a prepared, valid experiment with rollbacks always run; the journal goes to journal_path."""
    try:
        with kubeconfig_for_chaosk8s(kubeconfig_paths(fleet)):
            journal = run_experiment(
                experiment,
                settings=SETTINGS,
                strategy=Strategy.DEFAULT,
                event_handlers=[AllureSteps(), *handlers],
            )
    except ChaosException as error:
        raise ExperimentFailed(f"the experiment could not run: {error}") from None
    text = json.dumps(masked(journal), indent=2, default=str)
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal_path.write_text(text)
    allure.attach(text, name="chaostoolkit journal", attachment_type=allure.attachment_type.JSON)
    return journal


def validate(experiment: dict[str, Any]) -> None:
    """ExperimentFailed, in one line, for an experiment chaoslib would refuse."""
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as error:
        raise ExperimentFailed(f"invalid experiment: {error}") from None


def answers_within(
    url: str, timeout: float = 30, served_by: str | None = None, header: str | None = None
) -> bool:
    """Probe for experiments that wait for recovery or a failover: poll `url` until it answers 2xx (from
    the cluster `served_by`, as the app's identity `header` names it: "cluster" or "cluster/pod"; the fleet
    fills ${served_by_header}), at most `timeout` seconds; ActivityFailed at the deadline, naming the last
    answer."""
    if served_by is not None and not header:
        raise ActivityFailed(
            f"served_by {served_by!r} needs the header naming who served: pass header "
            "(${served_by_header}, from the app's served_by.header in the fleet file)"
        )
    deadline, last = time.monotonic() + float(timeout), "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, float(timeout))) as response:
                origin = (response.headers.get(header or "") or "").split("/")[0]
                if served_by is None or origin == served_by:
                    return True
                last = f"HTTP {response.status} from {origin or 'an unnamed server'}"
        except OSError as error:  # URLError and HTTPError (4xx, 5xx) are OSErrors
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            wanted = f"2xx from {served_by}" if served_by else "2xx"
            raise ActivityFailed(f"{url} did not answer {wanted} within {timeout}s (last: {last})")
        time.sleep(POLL_S)


def acting_on(experiment: dict[str, Any], fleet: Fleet, tags: list[str]) -> Targets:
    """The clusters an experiment acts on; ConfigError when it acts on some yet is tagged gate."""
    found = targets(experiment, fleet)
    if found.clusters and READ_ONLY_TAG in tags:
        raise ConfigError(
            f"tagged {READ_ONLY_TAG} (read-only drills) yet its actions act on {', '.join(found.clusters)}: "
            "tag it quarterly or gameday"
        )
    return found


def plan(title: str, found: Targets, fleet: Fleet, allow_prod: bool) -> str:
    """What the experiment would act on, with the safety verdict (allowlist, blast radius) per cluster."""
    guard, verdicts = Guard(fleet, allow_prod=allow_prod), []
    for i, cluster in enumerate(found.clusters):
        marker = ExperimentFault(targets=(cluster,), experiment="", fleet="")
        try:
            guard(marker, frozenset(found.clusters[:i]))
            verdicts.append(f"{cluster} (allowed)")
        except SafetyError as refusal:
            verdicts.append(f"{cluster} ({refusal})")
    text = f"would run {title!r} acting on {', '.join(verdicts) or 'no cluster'}"
    if found.unscoped:
        active = fleet.primary().name
        text += (
            f"; without a secret scope, acting on the active cluster {active}: {', '.join(found.unscoped)}"
        )
    return text


class ExperimentItem(pytest.Item):
    """One Chaos Toolkit experiment, run against the fleet as a drill (harness.run.DrillRun)."""

    def __init__(
        self,
        *,
        raw: dict[str, Any],
        fleet: Callable[[], Fleet],
        settings: Callable[[pytest.Item], RunSettings],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.raw, self._fleet, self._settings = raw, fleet, settings
        for tag in self.tags:
            if tag in SUITE_TAGS:
                self.add_marker(tag)
        self.add_marker("destructive")

    @property
    def tags(self) -> list[str]:
        return [str(tag) for tag in self.raw.get("tags") or []]

    def runtest(self) -> None:
        fleet, settings = self._fleet(), self._settings(self)
        if self.config.getoption("--dry-run"):
            try:
                found = acting_on(self.raw, fleet, self.tags)
            except ConfigError as error:
                raise ExperimentFailed(f"{self.path.name}: {error}") from None
            text = plan(str(self.raw.get("title")), found, fleet, settings.allow_prod)
            pytest.skip(f"dry run: {self.name}: {text}")
        access = FleetAccess(fleet)
        try:
            self._run(DrillRun(self.name, fleet, access, settings), settings)
        finally:
            access.close()

    def _run(self, drill_run: DrillRun, settings: RunSettings) -> None:
        """Run the experiment in the drill run, write its record, and end as its verdict says."""
        try:
            with drill_run.running() as drill:
                verdict, interrupted = self._experiment(drill, settings)
        except BaseException as error:
            outcome = "failed" if isinstance(error, SafetyError) else "error"
            why = str(error) if isinstance(error, FleetDrillError) else f"{type(error).__name__}: {error}"
            drill_run.finish(outcome, why)
            allure_results.attach(self.config, self, settings.folder)
            raise
        outcome, message = drill_run.finish(
            OUTCOMES[verdict.status], "" if verdict.status == "pass" else verdict.message
        )
        allure_results.attach(self.config, self, settings.folder)
        if interrupted:
            raise KeyboardInterrupt(f"{self.path.name}: interrupted")
        where = f" (journal: {settings.folder / JOURNAL})" if (settings.folder / JOURNAL).exists() else ""
        if outcome == "failed":
            raise pytest.fail.Exception(f"{self.path.name}: {message}{where}", pytrace=False)
        if outcome == "error":
            raise ExperimentFailed(f"{self.path.name}: {message}{where}")

    def _experiment(self, drill: Drill, settings: RunSettings) -> tuple[Verdict, bool]:
        """Prepare, guard, ledger, run and judge the experiment: its verdict, and whether a signal stopped
        it."""
        fleet = drill.fleet
        try:
            found = acting_on(self.raw, fleet, self.tags)
            if found.clusters and settings.fleet_file is None:
                raise ConfigError("the run names no fleet file, which `fleetdrill recover` would need")
            recorded = record_values(self.raw, fleet, lambda app, c: workload_replicas(drill.access, app, c))
            experiment = prepare(self.raw, fleet, recorded)
            validate(experiment)
        except (ConfigError, ExperimentFailed) as error:
            verdict = Verdict("error", "experiment", EXPECTED, "not run", str(error), {})
            drill.verdicts.append(verdict)
            return verdict, False
        detail = {
            "title": experiment.get("title"),
            "targets": list(found.clusters),
            "unscoped": list(found.unscoped),
        }
        drill.timeline.record("experiment.planned", detail=detail)
        journal_path = settings.folder / JOURNAL
        fault = (
            ExperimentFault(
                targets=found.clusters,
                experiment=str(self.path.absolute()),
                fleet=str(Path(settings.fleet_file or "").absolute()),
                journal=str(journal_path.absolute()),
                recorded=recorded,
                environment=environment_keys(self.raw),
            )
            if found.clusters
            else None
        )
        watch = Watch(drill.timeline)
        with self._observed(drill, experiment):
            injected = drill.stack.push(fault) if fault is not None else None
            journal = run(experiment, fleet, journal_path, (watch,))
        evidence = None
        if fault is not None and injected is not None:
            if rolled_back(experiment, journal):  # its rollbacks undid it: out of the stack and the ledger
                drill.stack.forget(fault)
                record = fault.to_record()
                keep = {key: record[key] for key in ("kind", "targets", "params")}
                drill.timeline.record("fault.reverted", detail={"id": injected.detail["id"], **keep})
            if journal.get("run"):
                evidence = fault.effect(drill.access, drill, injected)
                name = "fault.effective" if evidence.effective else "fault.not_effective"
                drill.timeline.record(name, detail={"kind": fault.kind, "evidence": evidence.detail})
        verdict = judge(journal, evidence, watch.stopped)
        drill.verdicts.append(verdict)
        return verdict, watch.interrupted

    def _observed(self, drill: Drill, experiment: dict[str, Any]) -> AbstractContextManager[Any]:
        """The experiment's app probed (and the abort rule watched) while it runs, when it has a global
        endpoint."""
        app = app_of(drill.fleet, dict(experiment.get("configuration") or {}))
        return drill.observe(app) if app is not None and app.global_endpoint else nullcontext()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, FleetDrillError | ChaosException):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"experiment: {self.raw.get('title', self.name)}"


class ExperimentFile(pytest.File):
    """An experiment file: one item, named after the file."""

    def __init__(
        self, *, fleet: Callable[[], Fleet], settings: Callable[[pytest.Item], RunSettings], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._fleet, self._settings = fleet, settings

    def collect(self) -> Iterator[ExperimentItem]:
        try:
            raw = load_experiment(str(self.path))
        except ChaosException as error:
            raise pytest.UsageError(f"{self.path}: not a Chaos Toolkit experiment: {error}") from None
        yield ExperimentItem.from_parent(
            self, name=self.path.stem, raw=raw, fleet=self._fleet, settings=self._settings
        )


def collect(
    parent: pytest.Collector,
    file_path: Path,
    fleet: Callable[[], Fleet],
    settings: Callable[[pytest.Item], RunSettings],
) -> ExperimentFile | None:
    """The collector for an experiment file (see is_experiment); None for any other file. `settings` gives
    an item's RunSettings, as the drill fixture's are built."""
    if not is_experiment(file_path):
        return None
    return ExperimentFile.from_parent(parent, path=file_path, fleet=fleet, settings=settings)
