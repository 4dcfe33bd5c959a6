"""The Chaos Toolkit bridge: experiments/*.yaml|json run as pytest items through chaoslib.

An experiment is loaded, checked and run with chaoslib (load_experiment, ensure_experiment_is_valid,
run_experiment), never the CLI, with rollbacks always run (chaoslib skips them after a failure unless
the runtime rollback strategy is "always"). The fleet fills the experiment's configuration (every key
the experiment leaves unset or reads from the environment: ${kubeconfig}, ${context}, ${global_url},
... see configuration_values) and adds the secret scopes chaosk8s activities name to reach a cluster:
`k8s` (the active cluster), `k8s-<role>` (the first cluster of a role) and `k8s-<cluster>`, each with
its KUBERNETES_CONTEXT. chaosk8s reads the kubeconfig path from the process (KUBECONFIG, frozen into
the kubernetes client at import), so it is pointed at the fleet's for the run and put back after.

The journal (secrets masked) goes to the report folder and to allure, each activity is an allure step,
and a steady state not met, a deviation, a failed method activity or a failed rollback fails the item.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import allure
import pytest
from chaoslib.exceptions import ActivityFailed, ChaosException
from chaoslib.experiment import ensure_experiment_is_valid, run_experiment
from chaoslib.loader import load_experiment
from chaoslib.run import RunEventHandler
from chaoslib.types import Strategy
from kubernetes.config import kube_config

from harness.config import App, Fleet
from harness.errors import ConfigError, FleetDrillError
from harness.safety import check_allowed

SUFFIXES = (".yaml", ".yml", ".json")
FOLDER = "experiments"
SETTINGS = {"runtime": {"rollbacks": {"strategy": "always"}}}
SUITE_TAGS = ("gate", "quarterly", "gameday")
POLL_S = 0.2
MASK = "***"


class ExperimentFailed(FleetDrillError):
    """An experiment ran and showed a weakness, or could not run as written."""


def is_experiment(path: Path) -> bool:
    """A YAML or JSON file under a folder called experiments."""
    return path.suffix in SUFFIXES and FOLDER in path.parent.parts


def _key(name: str) -> str:
    return name.replace("-", "_")


def _app(fleet: Fleet, configuration: dict[str, Any]) -> App | None:
    """The app the experiment names (configuration.app), else the fleet's only app."""
    named = configuration.get("app")
    if isinstance(named, str):
        return fleet.app(named)
    if len(fleet.apps) > 1:
        names = ", ".join(a.name for a in fleet.apps)
        raise ConfigError(f"the fleet has several apps ({names}): set configuration.app in the experiment")
    return fleet.apps[0] if fleet.apps else None


def configuration_values(fleet: Fleet, app: App | None) -> dict[str, str]:
    """What the fleet gives an experiment's configuration.

    kubeconfig, fleet; per cluster context_<cluster>; for the first cluster of each role <role>_cluster
    and <role>_context, and cluster and context for the active one; with an app: app, namespace,
    workload (its name), global_url, health_url (global_url + health path) and url_<cluster>.
    Cluster names have "-" turned into "_" in keys.
    """
    values = {"fleet": fleet.name, "kubeconfig": kubeconfig_paths(fleet)}
    for cluster in reversed(fleet.clusters):  # the first of each role wins
        values[f"context_{_key(cluster.name)}"] = fleet.context_for(cluster)
        values[f"{cluster.role}_cluster"] = cluster.name
        values[f"{cluster.role}_context"] = fleet.context_for(cluster)
    if "active_cluster" in values:
        values |= {"cluster": values["active_cluster"], "context": values["active_context"]}
    if app is not None:
        values |= {"app": app.name, "namespace": app.namespace, "workload": app.workload.split("/", 1)[1]}
        if app.global_endpoint:
            values |= {
                "global_url": app.global_endpoint,
                "health_url": urljoin(app.global_endpoint, app.health_path),
            }
        values |= {f"url_{_key(name)}": url for name, url in app.endpoints.items()}
    return values


def secret_scopes(fleet: Fleet) -> dict[str, dict[str, str]]:
    """The chaosk8s secret scopes of the fleet: k8s, k8s-<role> and k8s-<cluster>."""
    scopes: dict[str, dict[str, str]] = {}
    for cluster in reversed(fleet.clusters):
        context = {"KUBERNETES_CONTEXT": fleet.context_for(cluster)}
        scopes[f"k8s-{cluster.role}"] = context
        scopes[f"k8s-{cluster.name}"] = context
    if "k8s-active" in scopes:
        scopes["k8s"] = scopes["k8s-active"]
    return scopes


def kubeconfig_paths(fleet: Fleet) -> str:
    """Every kubeconfig of the fleet, joined as KUBECONFIG joins them."""
    paths = dict.fromkeys(str(fleet.kubeconfig_for(c)) for c in fleet.clusters)
    return os.pathsep.join(paths)


def prepare(experiment: dict[str, Any], fleet: Fleet) -> dict[str, Any]:
    """The experiment with the fleet's configuration values and secret scopes filled in.

    A configuration key the experiment sets to a literal value keeps it; one it reads from the
    environment ({"type": "env", ...}) or leaves out gets the fleet's value. Declared scopes are kept.
    """
    configuration = dict(experiment.get("configuration") or {})
    for key, value in configuration_values(fleet, _app(fleet, configuration)).items():
        declared = configuration.get(key)
        if declared is None or (isinstance(declared, dict) and declared.get("type") == "env"):
            configuration[key] = value
    secrets = {**secret_scopes(fleet), **(experiment.get("secrets") or {})}
    return {**experiment, "configuration": configuration, "secrets": secrets}


def _activities(experiment: dict[str, Any], *parts: str) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from (a for a in experiment.get(part) or [] if isinstance(a, dict))


def targets(experiment: dict[str, Any], fleet: Fleet) -> list[str]:
    """The clusters the method's and rollbacks' actions act on, from the secret scopes they name.

    ConfigError when a chaosk8s action names no scope (it would act on whatever context is current) or
    a scope whose context is not one of the fleet's: nothing unguarded runs.
    """
    scopes = {name: s for name, s in (experiment.get("secrets") or {}).items() if isinstance(s, dict)}
    by_context = {fleet.context_for(c): c.name for c in fleet.clusters}
    found: list[str] = []
    for activity in _activities(experiment, "method", "rollbacks"):
        provider, name = activity.get("provider") or {}, activity.get("name")
        if activity.get("type") != "action":
            continue
        named = [scopes.get(scope, {}) for scope in provider.get("secrets") or []]
        contexts = [scope["KUBERNETES_CONTEXT"] for scope in named if "KUBERNETES_CONTEXT" in scope]
        if not contexts and str(provider.get("module", "")).startswith("chaosk8s"):
            raise ConfigError(
                f"action {name!r}: name the cluster it acts on with secrets: [k8s] (the active cluster), "
                "[k8s-<role>] or [k8s-<cluster>]"
            )
        for context in contexts:
            if not isinstance(context, str) or context not in by_context:
                raise ConfigError(
                    f"action {name!r}: its secrets name context {context!r}, which is not a context of "
                    f"fleet {fleet.name} ({', '.join(by_context)})"
                )
            if by_context[context] not in found:
                found.append(by_context[context])
    return found


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


def failure(journal: dict[str, Any]) -> str | None:
    """Why the run counts as failed (one line), or None when it passed."""
    states = journal.get("steady_states") or {}
    for moment, label in (("before", "before the method"), ("after", "after the method (deviated)")):
        state = states.get(moment) or {}
        if state.get("steady_state_met") is False:
            unmet = [_probe_line(r) for r in state.get("probes", []) if r.get("tolerance_met") is False]
            return f"steady-state hypothesis not met {label}: {'; '.join(unmet) or 'a probe failed'}"
    for part, label in (("run", "method"), ("rollbacks", "rollback")):
        for run in journal.get(part) or []:
            if run.get("status") != "succeeded":
                error = "".join(run.get("exception") or []).strip().splitlines()
                why = error[-1] if error else run.get("status")
                return f"{label} activity {run.get('activity', {}).get('name')!r} {run.get('status')}: {why}"
    if journal.get("deviated"):
        return "the steady state deviated"
    if journal.get("status") != "completed":
        return f"the experiment ended {journal.get('status')}"
    return None


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

    def method_completed(self, experiment: Any, state: Any) -> None:
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


@contextmanager
def kubeconfig_for_chaosk8s(paths: str) -> Iterator[None]:
    """Point chaosk8s (which loads the process's default kubeconfig) at `paths`; put it back after."""
    saved_env, saved_default = os.environ.get("KUBECONFIG"), kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    os.environ["KUBECONFIG"], kube_config.KUBE_CONFIG_DEFAULT_LOCATION = paths, paths
    try:
        yield
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = saved_default
        if saved_env is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved_env


def run(experiment: dict[str, Any], fleet: Fleet, journal_path: Path) -> dict[str, Any]:
    """Check and run a prepared experiment with rollbacks always run; the journal goes to journal_path."""
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as error:
        raise ExperimentFailed(f"invalid experiment: {error}") from None
    with kubeconfig_for_chaosk8s(kubeconfig_paths(fleet)):
        journal = run_experiment(
            experiment, settings=SETTINGS, strategy=Strategy.DEFAULT, event_handlers=[AllureSteps()]
        )
    text = json.dumps(masked(journal), indent=2, default=str)
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal_path.write_text(text)
    allure.attach(text, name="chaostoolkit journal", attachment_type=allure.attachment_type.JSON)
    return journal


def answers_within(
    url: str, timeout: float = 30, served_by: str | None = None, header: str = "X-Served-By"
) -> bool:
    """Probe for experiments that wait for recovery or a failover: poll `url` until it answers 2xx (from
    the cluster `served_by`, as the app's identity header names it: "cluster" or "cluster/pod"), at most
    `timeout` seconds; ActivityFailed at the deadline, naming the last answer."""
    deadline, last = time.monotonic() + float(timeout), "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, float(timeout))) as response:
                origin = (response.headers.get(header) or "").split("/")[0]
                if served_by is None or origin == served_by:
                    return True
                last = f"HTTP {response.status} from {origin or 'an unnamed server'}"
        except OSError as error:  # URLError and HTTPError (4xx, 5xx) are OSErrors
            last = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            wanted = f"2xx from {served_by}" if served_by else "2xx"
            raise ActivityFailed(f"{url} did not answer {wanted} within {timeout}s (last: {last})")
        time.sleep(POLL_S)


class ExperimentItem(pytest.Item):
    """One Chaos Toolkit experiment, run against the fleet."""

    def __init__(
        self, *, raw: dict[str, Any], fleet: Callable[[], Fleet], report: Path, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.raw, self._fleet, self.report = raw, fleet, report
        for tag in raw.get("tags") or []:
            if tag in SUITE_TAGS:
                self.add_marker(tag)
        self.add_marker("destructive")

    def runtest(self) -> None:
        fleet = self._fleet()
        try:
            experiment = prepare(self.raw, fleet)
            clusters = targets(experiment, fleet)
        except ConfigError as error:
            raise ExperimentFailed(f"{self.path.name}: {error}") from None
        if self.config.getoption("--dry-run"):
            where = ", ".join(clusters) or "no cluster"
            pytest.skip(f"dry run: {self.name}: would run {experiment.get('title')!r} acting on {where}")
        for cluster in clusters:
            check_allowed(fleet, cluster, allow_prod=self.config.getoption("--allow-prod"))
        try:
            journal = run(experiment, fleet, self.report / "journal.json")
        except ExperimentFailed as error:
            raise ExperimentFailed(f"{self.path.name}: {error}") from None
        why = failure(journal)
        if why is not None:
            raise ExperimentFailed(f"{self.path.name}: {why} (journal: {self.report / 'journal.json'})")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, FleetDrillError | ChaosException):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"experiment: {self.raw.get('title', self.name)}"


class ExperimentFile(pytest.File):
    """An experiment file: one item, named after the file."""

    def __init__(self, *, fleet: Callable[[], Fleet], report: Callable[[str], Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fleet, self._report = fleet, report

    def collect(self) -> Iterator[ExperimentItem]:
        try:
            raw = load_experiment(str(self.path))
        except ChaosException as error:
            raise pytest.UsageError(f"{self.path}: not a Chaos Toolkit experiment: {error}") from None
        name = self.path.stem
        yield ExperimentItem.from_parent(
            self, name=name, raw=raw, fleet=self._fleet, report=self._report(name)
        )


def collect(
    parent: pytest.Collector, file_path: Path, fleet: Callable[[], Fleet], report: Callable[[str], Path]
) -> ExperimentFile | None:
    """The collector for an experiment file (see is_experiment); None for any other file."""
    if not is_experiment(file_path):
        return None
    return ExperimentFile.from_parent(parent, path=file_path, fleet=fleet, report=report)
