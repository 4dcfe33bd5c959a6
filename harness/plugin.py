"""pytest glue for fleetdrill: options, markers, fixtures and hooks only (entry point pytest11)."""

import argparse
import functools
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from harness import chaos, paths, units
from harness.config import App, Cluster, Fleet, load_fleet
from harness.data import SentinelWriter
from harness.drill import Drill, DrillSettings, Observation
from harness.dryrun import PlanComplete, PlannedDrill, PlannedFailover, PlannedVelero
from harness.errors import FleetDrillError
from harness.failover import Failover
from harness.faults import FaultStack, Ledger, new_run_id
from harness.fleet import FleetAccess
from harness.gameday import NoOperator
from harness.report import allure as allure_results
from harness.report import publish, record, runs
from harness.run import DrillRun, RunSettings
from harness.safety import Guard, SafetyError
from harness.timeline import Event, Timeline
from harness.velero import Velero

fleet_key = pytest.StashKey[Fleet]()
run_key = pytest.StashKey[str]()
outcome_key = pytest.StashKey[tuple[str, str]]()
published_key = pytest.StashKey[publish.Published]()
planned_key = pytest.StashKey[PlannedDrill]()
FAILURES = (AssertionError, pytest.fail.Exception)
"""What a drill raises when it failed (else it broke: an error)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fleetdrill", "fleetdrill DR drills")
    group.addoption("--fleet", metavar="PATH", help=f"fleet file (default: {paths.default_fleet_file()})")
    group.addoption("--report-dir", metavar="DIR", help="where drill records go (default: reports)")
    group.addoption("--ledger", metavar="PATH", help=f"fault ledger (default: {paths.default_ledger()})")
    group.addoption("--allow-prod", action="store_true", help="allow destructive drills on prod clusters")
    group.addoption("--suite", choices=SUITES, help="run only the drills of this suite")
    group.addoption(
        "--app", metavar="NAME", help="the app the drills drill (default: the fleet file's first app)"
    )
    group.addoption("--dry-run", action="store_true", help="print each drill's plan and change nothing")
    group.addoption("--run-id", metavar="ID", help="name of the run's report folder (default: time + random)")
    group.addoption("--progress", action="store_true", help="print each drill's events as they happen")
    group.addoption(
        "--pause-timeout",
        type=_duration,
        default=900.0,
        metavar="DURATION",
        help="--suite gameday: longest a pause waits for the operators before the drill stops (default 15m)",
    )
    group.addoption(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="run the drills in the order this seed shuffles them into: each finds the fleet as the one "
        "before left it",
    )
    group.addoption(
        "--soak",
        type=_duration,
        metavar="DURATION",
        help=f"how long drills keep measuring after recovery (default {DrillSettings.soak_s:g}s)",
    )
    parser.addini("fleet", "fleet file of the fleet to drill", default="")
    parser.addini("report_dir", "where drill records go", default="reports")


SUITES = ("gate", "quarterly", "gameday")


def _duration(text: str) -> float:
    try:
        return units.parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 10s or 1m30s, got {text!r}") from None


@pytest.hookimpl(tryfirst=True)  # before allure-pytest and junitxml read where their output goes
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "drill(app, roles, uses): a DR drill against an app; roles: clusters to run it on; uses: what it "
        "does, by part and roles (harness.catalogue; `fleetdrill doctor` asks for what that needs)",
    )
    config.addinivalue_line("markers", "destructive: the drill injects faults; needs an allowlisted context")
    config.addinivalue_line("markers", "gate: fast and safe, for every rollout")
    config.addinivalue_line("markers", "quarterly: part of the full quarterly set")
    config.addinivalue_line("markers", "gameday: interactive, for operators on a game day")
    config.stash[run_key] = new_run_id()
    if config.getoption("--run-id"):
        try:
            config.stash[run_key] = runs.check_run_id(config.getoption("--run-id"), "--run-id")
        except FleetDrillError as error:
            raise pytest.UsageError(str(error)) from None
    _run_outputs(config)


def _run_outputs(config: pytest.Config) -> None:
    """With --report-dir, allure results and JUnit XML go into the run's folder unless named otherwise (a dry
    run writes nothing)."""
    if not config.getoption("--report-dir") or config.getoption("--dry-run"):
        return
    folder = Path(config.getoption("--report-dir")) / config.stash[run_key]
    if getattr(config.option, "allure_report_dir", "") is None:
        config.option.allure_report_dir = str(folder / "allure-results")
    if not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(folder / "junit.xml")


def _option(config: pytest.Config, name: str) -> str:
    """A setting from the command line, else from the ini file."""
    return config.getoption(name) or config.getini(name)


def _fleet_file(config: pytest.Config) -> Path:
    """The fleet file of the fleet under drill: --fleet, else the ini file's, else the local fleet's."""
    return Path(_option(config, "fleet") or paths.default_fleet_file())


def _ledger(config: pytest.Config) -> Ledger:
    """The fault ledger: --ledger, else the default one."""
    return Ledger(config.getoption("--ledger") or paths.default_ledger())


def _fleet(config: pytest.Config) -> Fleet:
    """The fleet file of the fleet under drill, loaded once (a mistake in it is one clear line)."""
    if fleet_key not in config.stash:
        path = _fleet_file(config)
        try:
            config.stash[fleet_key] = load_fleet(path)
        except FleetDrillError as error:
            raise pytest.UsageError(str(error)) from None
    return config.stash[fleet_key]


def pytest_sessionstart(session: pytest.Session) -> None:
    """A fleet file named on the command line or in the ini file, and the app --app names, are checked before
    anything runs."""
    config = session.config
    if _option(config, "fleet") or config.getoption("--app"):
        fleet = _fleet(config)
        if (name := config.getoption("--app")) and name not in [a.name for a in fleet.apps]:
            known = ", ".join(a.name for a in fleet.apps) or "none"
            why = f"expected an app of {_fleet_file(config)} ({known}), got {name!r}"
            raise pytest.UsageError(f"--app: {why}")


def _report_folder(config: pytest.Config, name: str) -> Path:
    """Where the record of the drill (or experiment) called `name` goes in this run."""
    return Path(_option(config, "report_dir")) / config.stash[run_key] / re.sub(r"[^\w.-]+", "_", name)


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    """Chaos Toolkit experiments (experiments/*.yaml|json) are drills too: see harness.chaos."""
    config = parent.config
    return chaos.collect(parent, file_path, lambda: _fleet(config), _run_settings)


def _run_settings(item: pytest.Item) -> RunSettings:
    """What the run of a drill or an experiment (`item`) needs besides its fleet, from the command line, the
    ini file and the item's markers."""
    config = item.config
    soak = config.getoption("--soak")
    gameday = config.getoption("--suite") == "gameday"
    return RunSettings(
        run_id=config.stash[run_key],
        ledger=_ledger(config).path,
        folder=_report_folder(config, item.name),
        allow_prod=config.getoption("--allow-prod"),
        destructive=item.get_closest_marker("destructive") is not None,
        drill=DrillSettings() if soak is None else DrillSettings(soak_s=soak),
        pause_timeout_s=config.getoption("--pause-timeout") if gameday else None,
        listeners=(_progress(config, item.name),) if config.getoption("--progress") else (),
        fleet_file=_fleet_file(config).absolute(),
        title=record.title_of(item),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--suite keeps only the drills marked with it; --shuffle orders them by its seed."""
    suite = config.getoption("--suite")
    if suite:
        kept = [item for item in items if item.get_closest_marker(suite)]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    seed = config.getoption("--shuffle")
    if seed is not None:
        random.Random(seed).shuffle(items)


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--shuffle")
    return None if seed is None else f"fleetdrill: drills in the order of --shuffle {seed}"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before a run with destructive drills, no fault a run that is gone left in force (its drill would
    judge a fleet still faulted), and every cluster of the fleet answers with its kubeconfig's credentials
    (only now: a drill may lose one on purpose); else one line per problem and nothing runs."""
    config = session.config
    if config.option.collectonly or config.getoption("--dry-run"):
        return
    if not any(item.get_closest_marker("destructive") for item in session.items):
        return
    _refuse_faults_left_behind(config)
    access = FleetAccess(_fleet(config))
    try:
        problems = access.unreachable()
    finally:
        access.close()
    if problems:
        raise pytest.UsageError(*map(str, problems.values()))


def _refuse_faults_left_behind(config: pytest.Config) -> None:
    """One line naming the faults the ledger holds that no running drill will revert, and how to revert
    them."""
    ledger = _ledger(config)
    try:
        left = ledger.left_behind()
    except FleetDrillError as exc:
        raise pytest.UsageError(str(exc)) from None
    if left:
        faults = "; ".join(entry.describe() for entry in left)
        recover = f"fleetdrill recover --fleet {_fleet_file(config)} --ledger {ledger.path}"
        raise pytest.UsageError(
            f"{ledger.path}: {len(left)} fault(s) left in force by a run that is gone ({faults}): "
            f"revert them with `{recover}`, then drill again"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A drill asking for `cluster_name` runs once per cluster (of the roles its drill marker names)."""
    if "cluster_name" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("drill")
        roles = marker.kwargs.get("roles") if marker else None
        names = [c.name for c in _fleet(metafunc.config).clusters if roles is None or c.role in roles]
        metafunc.parametrize("cluster_name", names)


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest) -> Fleet:
    """The fleet file of the fleet under drill, validated."""
    return _fleet(request.config)


@pytest.fixture(scope="session")
def fleet_access(fleet: Fleet) -> Iterator[FleetAccess]:
    access = FleetAccess(fleet)
    yield access
    access.close()


@pytest.fixture
def drill(request: pytest.FixtureRequest, fleet: Fleet, fleet_access: FleetAccess) -> Iterator[Drill]:
    """The running drill (harness.run): faults pushed on it are reverted on every exit path, the fleet is
    back as the drill found it, and its record is written after."""
    config = request.config
    if config.getoption("--dry-run"):
        yield _planned_drill(request.node, fleet, fleet_access)
        return
    settings = _run_settings(request.node)
    run = DrillRun(request.node.name, fleet, fleet_access, settings)
    teardown = ""
    try:
        with run.running() as current:
            yield current
    except BaseException as error:  # recorded, then raised: pytest reports the teardown as an error too
        teardown = f"{type(error).__name__}: {error}"
        raise
    finally:
        called = request.node.stash.get(outcome_key, ("error", "the drill did not finish"))
        outcome, message = run.finish(*called, teardown)
        allure_results.attach(config, request.node, settings.folder)
    if outcome != called[0]:  # a verdict failed, or none was given, yet the test passed: it fails too
        pytest.fail(message, pytrace=False)


def drilled_app(item: pytest.Item) -> str:
    """The app a drill drills: the one its drill marker pins (`@pytest.mark.drill(app=NAME)`), else the
    run's --app, else the fleet file's first app."""
    marker = item.get_closest_marker("drill")
    pinned = marker.kwargs.get("app") if marker else None
    fleet = _fleet(item.config)
    if pinned or item.config.getoption("--app"):
        return fleet.app(pinned or item.config.getoption("--app")).name
    if not fleet.apps:
        raise pytest.UsageError(f"{_fleet_file(item.config)}: apps: expected at least one app to drill")
    return fleet.apps[0].name


@pytest.fixture
def app(request: pytest.FixtureRequest, drill: Drill) -> App:
    """The app the drill drills (see drilled_app)."""
    return drill.app(drilled_app(request.node))


@pytest.fixture
def cluster(request: pytest.FixtureRequest, fleet: Fleet) -> Cluster:
    """The cluster the drill targets: its `cluster_name` parameter, else the fleet's primary."""
    callspec = getattr(request.node, "callspec", None)
    if callspec and "cluster_name" in callspec.params:
        return fleet.cluster(callspec.params["cluster_name"])
    return fleet.primary()


@pytest.fixture
def timeline(drill: Drill) -> Timeline:
    return drill.timeline


@pytest.fixture
def faults(drill: Drill) -> FaultStack:
    """The drill's faults: `faults.push(fault)` applies one until the drill ends, reverted on every exit."""
    return drill.stack


@pytest.fixture
def traffic(drill: Drill, app: App) -> Callable[[], AbstractContextManager[Observation]]:
    """`with traffic() as observation:` probes the app's endpoints and writes sentinels for the block."""
    return functools.partial(drill.observe, app)


@pytest.fixture
def sentinel(drill: Drill, app: App) -> Callable[[str], AbstractContextManager[SentinelWriter]]:
    """`with sentinel(cluster) as writer:` writes sentinels straight to the app in one cluster."""
    return functools.partial(drill.direct_writes, app)


@pytest.fixture(scope="session")
def velero(request: pytest.FixtureRequest, fleet: Fleet) -> Callable[[str], Velero]:
    """`velero(cluster)`: the velero CLI for that cluster's kubeconfig context (in a dry run, one that runs
    nothing: harness.dryrun.PlannedVelero)."""
    planned = request.config.getoption("--dry-run")
    return functools.partial((PlannedVelero if planned else Velero).for_cluster, fleet)


@pytest.fixture
def failover(drill: Drill) -> Failover:
    """The failover strategies, each step timed on the drill's timeline (planned only, in a dry run)."""
    velero = functools.partial(Velero.for_cluster, drill.fleet)
    if isinstance(drill, PlannedDrill):
        return PlannedFailover(drill.access, drill.timeline, velero, drill.stack)
    return Failover.prepared(drill.access, drill.timeline, velero, drill.stack)


def _progress(config: pytest.Config, name: str) -> Callable[[Event], None]:
    """A timeline listener printing each event the drill's own thread records, live, past the capture."""
    plugins, start = config.pluginmanager, time.monotonic()
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def show(event: Event) -> None:
        if reporter is None or threading.current_thread() is not threading.main_thread():
            return
        where = f" {event.cluster}" if event.cluster else ""
        line = f"  {name} +{event.t_mono - start:6.1f}s {event.name}{where}"
        if capture is None:
            reporter.write_line(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return show


def _planned_drill(item: pytest.Item, fleet: Fleet, access: FleetAccess) -> PlannedDrill:
    """The drill for a dry run (harness.dryrun): its faults guarded and planned, nothing changed. A drill
    that injects nothing reads the fleet; the dry run does not run it."""
    if not item.get_closest_marker("destructive"):
        app = drilled_app(item)
        pytest.skip(f"dry run: {item.name}: reads app {app} in fleet {fleet.name}; injects no fault")
    config, timeline = item.config, Timeline()
    guard = Guard(fleet, allow_prod=config.getoption("--allow-prod"))
    stack = FaultStack(  # a dry run never writes its ledger
        access, _ledger(config), timeline, config.stash[run_key], guard=guard, rules=guard, dry_run=True
    )
    planned = PlannedDrill(item.name, fleet, access, stack, timeline)
    item.stash[planned_key] = planned
    return planned


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A safety refusal (allowlist, prod, blast radius, a held lease), an abort or a game-day pause nobody
    answered is one line, no traceback. In a dry run, the drill's plan: skipped once planned, failed when
    a safety rule refuses a fault (with what was planned before it)."""
    planned = item.stash.get(planned_key, None)
    try:
        result = yield
    except PlanComplete:
        result = None
    except (SafetyError, NoOperator) as refusal:
        lines = planned.plan_lines() if planned else []
        before = f" (planned before it: {' '.join(lines)})" if lines else ""
        raise pytest.fail.Exception(f"{refusal}{before}", pytrace=False) from None
    if planned is not None:
        pytest.skip(f"dry run: {item.name} would: {' '.join(planned.plan_lines()) or 'inject no fault'}")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep the call's outcome for the drill's record: failed on an assertion or pytest.fail, error on any
    other exception (as allure tells failed from broken); a skip keeps its reason."""
    report = yield
    if report.when == "call":
        outcome, message = report.outcome, report.longreprtext[-2000:] if report.failed else ""
        if report.failed and not (call.excinfo and call.excinfo.errisinstance(FAILURES)):
            outcome = "error"
        if report.skipped and isinstance(report.longrepr, tuple):  # (path, line, "Skipped: REASON")
            message = str(report.longrepr[2]).removeprefix("Skipped: ")
        item.stash[outcome_key] = (outcome, message)
    return report


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears the fixtures down after Ctrl-C: the record
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """At the end of a run with drill records: run.json, the history, report.html, the evidence pack
    (quarterly and full runs) and reports/latest, from the records (`fleetdrill report` rebuilds them)."""
    config = session.config
    report_dir = Path(_option(config, "report_dir"))
    if any((report_dir / config.stash[run_key]).glob(f"*/{runs.RECORD}")):
        publish.write_meta(report_dir, config.stash[run_key], config.getoption("--suite"), int(exitstatus))
        try:
            config.stash[published_key] = publish.publish(report_dir, config.stash[run_key])
        except FleetDrillError as error:  # e.g. a damaged history file: one line, the records stay
            config.get_terminal_writer().line(f"fleetdrill: report not built: {error}", red=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if published_key in config.stash:
        terminalreporter.write_line(f"fleetdrill: HTML report {config.stash[published_key].report}")
