"""Shared fixtures of fleetdrill's own tests: one local fleet for every test that does not break it."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client, config

from harness import steadystate
from harness.config import load_fleet
from harness.localfleet import build, registry, supervisor
from harness.localfleet.state import STATE

FLEET_UP_TIMEOUT_S = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_matrix: a kill -9 matrix case run with FLEETDRILL_FULL_MATRIX=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without FLEETDRILL_FULL_MATRIX=1, leave out the kill -9 matrix cases beyond one point per kind; then
    put the modules in fleet order."""
    if os.environ.get("FLEETDRILL_FULL_MATRIX") != "1":
        left_out = [item for item in items if item.get_closest_marker("full_matrix")]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker("full_matrix")]
    in_fleet_order(items)


def in_fleet_order(items: list[pytest.Item]) -> None:
    """Modules without a fleet first, then those with fleets of their own, then those on the shared fleet,
    each group in its collection order: one fleet runs at a time, as the shared fleet (a session fixture)
    comes up only once every module fleet is down. Fleets idling beside each other starve a 2-core
    runner (load 9-24 with two test workers, and drills whose probes could not keep pace)."""
    phase: dict[Path, int] = {}
    for item in items:
        phase[item.path] = max(phase.get(item.path, 0), _fleet_phase(item))
    items.sort(key=lambda item: phase[item.path])


def _fleet_phase(item: pytest.Item) -> int:
    """0: no fleet; 1: a fleet of the module's own (or of its tests'); 2: the session's shared fleet."""
    definitions = getattr(item, "_fixtureinfo", None)
    shared = definitions.name2fixturedefs.get("fleet_dir", ()) if definitions else ()
    if shared and shared[-1].scope == "session":
        return 2
    return 0 if "unit" in item.path.parts else 1


def run_cli(
    *args: object, timeout: float = FLEET_UP_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess:
    """Run `fleetdrill ARGS` as a user would, in a subprocess."""
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"fleetdrill {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done


def wait_for(
    condition: Callable[[], object], deadline_s: float, what: str, interval_s: float = 0.05
) -> object:
    """Poll condition until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(interval_s)


def served_from_home(folder: Path) -> bool:
    """Every app's global endpoint answers, served by an active cluster: after a test restarted the primary's
    app, the global load balancer has failed back, so the next drill does not find the fleet mid-failover."""
    fleet = load_fleet(folder / "fleet.yaml")
    home = steadystate.active_clusters(fleet)
    for app in fleet.apps:
        answer = steadystate.look(app, app.global_endpoint) if app.global_endpoint else None
        if answer is not None and not (answer.ok and answer.served_by in home):
            return False
    return True


OWNER = "owner.pid"


def own(folder: Path) -> Path:
    """The folder (made if missing) marked as this test session's: remove_stale_test_fleets leaves a fleet
    in it alone while the session lives."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER).write_text(str(os.getpid()))
    return folder


def remove_stale_test_fleets() -> None:
    """Take down fleets that killed test sessions left behind: their folder is gone, or its owner file
    names a dead pid. A folder without an owner file is left alone: another worker may be starting a fleet
    in it."""
    for claim in registry.claims().values():
        owner = claim.folder / OWNER
        if "/pytest-of-" in str(claim.folder) and (
            not claim.folder.exists()
            or (owner.exists() and not Path(f"/proc/{owner.read_text().strip()}").exists())
        ):
            supervisor.down(claim.folder)


@pytest.fixture(scope="session")
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the local-fleet tests make network namespaces: run them as root (see README)")


@contextmanager
def started_fleet(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    clusters: int = 3,
    backups: bool = False,
    dns: bool = False,
    prometheus: bool = False,
    environments: str = "",
    postgres: bool = False,
    metrics_server: bool = False,
    burst: bool = False,
) -> Iterator[Path]:
    """A local fleet (three clusters unless told; with the backup store and Velero, with CoreDNS, with
    Prometheus, with environments (`--environments`), and with PostgreSQL's replication, when asked) owned
    by this test session, taken down at the end whatever happens."""
    remove_stale_test_fleets()
    folder = own(tmp_path_factory.mktemp(name))
    try:
        options = (
            ([] if backups else ["--no-backups"])
            + (["--dns"] if dns else [])
            + (["--prometheus"] if prometheus else [])
        )
        options += ["--environments", environments] if environments else []
        options += ["--postgres"] if postgres else []
        options += ["--metrics-server"] if metrics_server else []
        options += ["--burst"] if burst else []
        run_cli("fleet", "up", "--dir", folder, "--clusters", clusters, *options)
        yield folder
    finally:
        if (folder / STATE).exists() or any(c.folder == folder for c in registry.claims().values()):
            run_cli("fleet", "down", "--dir", folder)


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    """The fleet shared by every test that does not break it."""
    with started_fleet(tmp_path_factory, "fleet") as folder:
        yield folder


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    return build.ensure_binaries()["kubectl"]


@pytest.fixture(scope="session")
def kubectl(fleet_dir: Path, kubectl_bin: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real kubectl against the shared fleet: kubectl(context, *args, check=True, stdin=None)."""

    def run(
        context: str, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        argv = [str(kubectl_bin), "--kubeconfig", str(fleet_dir / "kubeconfig"), "--context", context, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    return run


@pytest.fixture(scope="session")
def api(fleet_dir: Path) -> Callable[[str], client.ApiClient]:
    """An ApiClient per context of the shared fleet (the official client, one per context)."""
    clients: dict[str, client.ApiClient] = {}

    def get(context: str) -> client.ApiClient:
        if context not in clients:
            clients[context] = config.new_client_from_config(str(fleet_dir / "kubeconfig"), context=context)
        return clients[context]

    yield get
    for api_client in clients.values():
        api_client.close()
