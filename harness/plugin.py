"""pytest glue for fleetdrill: options, markers, fixtures and hooks only (entry point pytest11)."""

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import paths
from harness.config import Fleet, load_fleet
from harness.drill import Drill
from harness.errors import FleetDrillError
from harness.faults import FaultStack, Ledger, new_run_id, signals_as_interrupts
from harness.fleet import FleetAccess
from harness.report import record
from harness.safety import Guard
from harness.timeline import Timeline

fleet_key = pytest.StashKey[Fleet]()
run_key = pytest.StashKey[str]()
outcome_key = pytest.StashKey[tuple[str, str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fleetdrill", "fleetdrill DR drills")
    group.addoption("--fleet", metavar="PATH", help=f"fleet file (default: {paths.default_fleet_file()})")
    group.addoption("--report-dir", metavar="DIR", help="where drill records go (default: reports)")
    group.addoption("--ledger", metavar="PATH", help=f"fault ledger (default: {paths.default_ledger()})")
    group.addoption("--allow-prod", action="store_true", help="allow destructive drills on prod clusters")
    parser.addini("fleet", "fleet file of the fleet to drill", default="")
    parser.addini("report_dir", "where drill records go", default="reports")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "drill(app): a DR drill against the named app of the fleet")
    config.addinivalue_line("markers", "destructive: the drill injects faults; needs an allowlisted context")
    config.stash[run_key] = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ-") + new_run_id()[:6]


def _option(config: pytest.Config, name: str) -> str:
    """A setting from the command line, else from the ini file."""
    return config.getoption(name) or config.getini(name)


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest) -> Fleet:
    """The fleet file of the fleet under drill, validated (a mistake in it is one clear line)."""
    path = Path(_option(request.config, "fleet") or paths.default_fleet_file())
    try:
        return load_fleet(path)
    except FleetDrillError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.fixture(scope="session")
def fleet_access(fleet: Fleet) -> Iterator[FleetAccess]:
    access = FleetAccess(fleet)
    yield access
    access.close()


@pytest.fixture
def drill(request: pytest.FixtureRequest, fleet: Fleet, fleet_access: FleetAccess) -> Iterator[Drill]:
    """The running drill: faults pushed on it are reverted on every exit path; its record is written after."""
    config = request.config
    ledger = Ledger(Path(config.getoption("--ledger") or paths.default_ledger()))
    timeline = Timeline()
    stack = FaultStack(
        fleet_access,
        ledger,
        timeline,
        config.stash[run_key],
        guard=Guard(fleet, allow_prod=config.getoption("--allow-prod")),
    )
    current = Drill(request.node.name, fleet, fleet_access, stack, timeline)
    try:
        with signals_as_interrupts():
            yield current
    finally:
        try:
            stack.undo_all()
        finally:
            outcome, message = request.node.stash.get(outcome_key, ("error", "the drill did not finish"))
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            folder = Path(_option(config, "report_dir")) / config.stash[run_key] / name
            record.write(current, folder, config.stash[run_key], outcome, message)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep the call's outcome for the drill's record."""
    report = yield
    if report.when == "call":
        item.stash[outcome_key] = (report.outcome, report.longreprtext[-2000:] if report.failed else "")
    return report
