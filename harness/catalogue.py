"""The drills a run would select, and what each declares it does to the fleet: its drill marker's `uses`.

    @pytest.mark.drill(app="orders", uses={"cluster-loss": "active", "failover": "passive"})

Each key names a part (a fault kind, or one of harness.needs.PARTS); each value the clusters it acts on: a
role, a list of roles (the clusters of the first of them the fleet has), "every" (every cluster) or
"non-prod" (every cluster whose environment is not prod).
`fleetdrill doctor` collects the drills as `fleetdrill run --drills ... --suite ...` selects them (pytest
collection: nothing runs, no cluster is asked), then asks for what they need (harness.needs) and warns of a
runner they would cut off (harness.placement).
"""

import contextlib
import io
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import Fleet
from harness.errors import ConfigError

ROLES = ("active", "passive", "standby")
EVERY = "every"
NON_PROD = "non-prod"
ALONE = (EVERY, NON_PROD)
"""The values that stand alone, never in a list of roles."""


@dataclass(frozen=True)
class Use:
    """One part a drill uses, and the roles of the clusters it acts on ((EVERY,): every cluster; (NON_PROD,):
    every cluster not in prod)."""

    part: str
    roles: tuple[str, ...]

    def clusters(self, fleet: Fleet) -> tuple[str, ...]:
        """The clusters of the first of the roles the fleet has (every cluster for EVERY; for NON_PROD every
        one not in prod, none in a fleet that does not segment environments: such a drill faults none)."""
        if self.roles == (EVERY,):
            return tuple(cluster.name for cluster in fleet.clusters)
        if self.roles == (NON_PROD,):
            others = (cluster.name for cluster in fleet.clusters if cluster.environment != "prod")
            return tuple(others) if fleet.segmented() else ()
        for role in self.roles:
            found = tuple(cluster.name for cluster in fleet.clusters if cluster.role == role)
            if found:
                return found
        return ()


@dataclass(frozen=True)
class SelectedDrill:
    """A drill a run would select: its file and name (FILE::TEST, without parameters), app, and what it
    uses."""

    name: str
    app: str
    destructive: bool
    uses: tuple[Use, ...]

    @property
    def short(self) -> str:
        """Its test function's name."""
        return self.name.rpartition("::")[2]


def uses_of(name: str, declared: object, known: Collection[str]) -> tuple[Use, ...]:
    """The drill marker's `uses` of drill `name`, checked: ConfigError naming the drill and what is wrong."""
    where = f"{name}: @pytest.mark.drill(uses=...)"
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{where}: expected a mapping of part to roles, got {declared!r}")
    found = []
    for part, roles in declared.items():
        if part not in known:
            raise ConfigError(f"{where}: expected a part ({', '.join(sorted(known))}), got {part!r}")
        spec = (roles,) if isinstance(roles, str) else roles
        alone = isinstance(spec, tuple | list) and (not set(ALONE) & set(spec) or len(spec) == 1)
        if not (alone and spec and all(role in (*ROLES, *ALONE) for role in spec)):
            raise ConfigError(
                f"{where}[{part!r}]: expected a role ({', '.join(ROLES)}), a list of them, {EVERY!r} or "
                f"{NON_PROD!r}, got {roles!r}"
            )
        found.append(Use(part, tuple(spec)))
    return tuple(found)


class _Collector:
    """A pytest plugin keeping the items a session selects and the collection errors."""

    def __init__(self) -> None:
        self.items: list[pytest.Item] = []
        self.errors: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            lines = report.longreprtext.strip().splitlines()
            self.errors.append(f"{report.nodeid}: {lines[-1] if lines else 'cannot be collected'}")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = list(session.items)


def collect(
    drills: Path, fleet_file: Path, suite: str | None, known: Collection[str], app: str | None = None
) -> list[SelectedDrill]:
    """The drills `fleetdrill run --drills DRILLS --suite SUITE --app APP` would run (those with a drill
    marker), each once whatever its parameters; ConfigError when they cannot be collected."""
    from harness.plugin import drilled_app  # the plugin imports what imports this module

    collector = _Collector()
    argv = [str(drills), "--collect-only", "-q", "-p", "no:cacheprovider", "--fleet", str(fleet_file)]
    argv += ["--rootdir", str(drills.resolve().parent)]  # errors name drills/FILE wherever this runs from
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        chosen = [*(["--suite", suite] if suite else []), *(["--app", app] if app else [])]
        code = pytest.main([*argv, *chosen], plugins=[collector])
    if collector.errors or code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        why = "; ".join(collector.errors) or " ".join(said.getvalue().split())[-300:] or f"pytest exit {code}"
        raise ConfigError(f"{drills}: the drills cannot be collected: {why}")
    selected: dict[str, SelectedDrill] = {}
    for item in collector.items:
        marker = item.get_closest_marker("drill")
        name = f"{item.path}::{item.nodeid.partition('::')[2].partition('[')[0]}"
        if marker is None or name in selected:
            continue
        selected[name] = SelectedDrill(
            name,
            drilled_app(item),
            item.get_closest_marker("destructive") is not None,
            uses_of(name, marker.kwargs.get("uses", {}), known),
        )
    return list(selected.values())
