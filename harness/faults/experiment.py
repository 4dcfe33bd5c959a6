"""A Chaos Toolkit experiment as a fault: what its method changes is in the fault ledger before it runs.

`prepare` fills an experiment for a fleet (configuration values, secret scopes) and `targets` names the
clusters its actions act on. ExperimentFault stands for the method's changes: inject does nothing
(chaoslib runs the method), revert runs the experiment's rollbacks through chaoslib (after a crash,
`fleetdrill recover` prepares the experiment again from its file, the fleet file and the values recorded
at the start), and its effect is what the method's actions selected: one that selected nothing (no pod,
no node) tested nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin

from chaoslib.configuration import load_configuration, load_dynamic_configuration
from chaoslib.loader import load_experiment
from chaoslib.rollback import run_rollbacks
from chaoslib.secret import load_secrets
from kubernetes.config import kube_config

from harness.config import App, Fleet, load_fleet
from harness.errors import ConfigError, FleetDrillError
from harness.faults import kube
from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.timeline import Event

ACTIVE_SCOPE = "k8s"
"""The secret scope of the active cluster; chaosk8s activities that name no scope get it."""
_REPLICAS = re.compile(r"\$\{(replicas(?:_\w+)?)\}")


def _key(name: str) -> str:
    return name.replace("-", "_")


def _declared(value: Any) -> Any:
    """What the experiment itself sets a configuration key to: a literal, or an env-typed key whose
    variable is set or which has a default; None when it leaves the key to the fleet."""
    if isinstance(value, dict) and value.get("type") == "env":
        return os.environ.get(str(value.get("key")), value.get("default"))
    return value


def app_of(fleet: Fleet, configuration: dict[str, Any]) -> App | None:
    """The app the experiment names (configuration.app), else the fleet's only app."""
    named = _declared(configuration.get("app"))
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
    workload (its name), global_url, health_url (global_url + health path), url_<cluster> and, when the app
    names who served in a header, served_by_header.
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
        if app.served_by is not None and app.served_by.header:
            values["served_by_header"] = app.served_by.header
    return values


def replicas_keys(experiment: Mapping[str, Any], fleet: Fleet) -> dict[str, str]:
    """The replicas values the experiment uses and leaves to the fleet, by key, and the cluster each is read
    in: ${replicas} (the active cluster), ${replicas_<role>} (its first cluster), ${replicas_<cluster>}."""
    clusters = {f"replicas_{c.role}": c.name for c in reversed(fleet.clusters)}
    clusters |= {f"replicas_{_key(c.name)}": c.name for c in fleet.clusters}
    if "replicas_active" in clusters:
        clusters["replicas"] = clusters["replicas_active"]
    configuration = experiment.get("configuration") or {}
    used = _REPLICAS.findall(json.dumps(experiment, default=str))
    return {
        key: clusters[key]
        for key in dict.fromkeys(used)
        if key in clusters and _declared(configuration.get(key)) is None
    }


def workload_replicas(ctx: FaultContext, app: App, cluster: str) -> int:
    """The replicas the app's workload asks for in `cluster` now."""
    kind, _, name = app.workload.partition("/")
    api = kube.apps(ctx.api_client(cluster))
    read = api.read_namespaced_deployment if kind == "deployment" else api.read_namespaced_stateful_set
    return int(read(name, app.namespace, _request_timeout=kube.REQUEST_TIMEOUT_S).spec.replicas or 0)


def record_values(
    experiment: Mapping[str, Any], fleet: Fleet, replicas: Callable[[App, str], int]
) -> dict[str, int]:
    """The values the fleet measures for the experiment at its start (see replicas_keys), so its rollbacks
    restore what was there; `replicas(app, cluster)` reads one (workload_replicas)."""
    keys = replicas_keys(experiment, fleet)
    app = app_of(fleet, dict(experiment.get("configuration") or {})) if keys else None
    if app is None:
        return {}
    return {key: replicas(app, cluster) for key, cluster in keys.items()}


def environment_keys(experiment: Mapping[str, Any]) -> tuple[str, ...]:
    """The environment variables the experiment's configuration reads and finds set."""
    found = [
        str(value["key"])
        for value in (experiment.get("configuration") or {}).values()
        if isinstance(value, dict) and value.get("type") == "env" and str(value.get("key")) in os.environ
    ]
    return tuple(dict.fromkeys(found))


def secret_scopes(fleet: Fleet) -> dict[str, dict[str, str]]:
    """The chaosk8s secret scopes of the fleet: k8s (the active cluster), k8s-<role> and k8s-<cluster>."""
    scopes: dict[str, dict[str, str]] = {}
    for cluster in reversed(fleet.clusters):
        context = {"KUBERNETES_CONTEXT": fleet.context_for(cluster)}
        scopes[f"k8s-{cluster.role}"] = context
        scopes[f"k8s-{cluster.name}"] = context
    if "k8s-active" in scopes:
        scopes[ACTIVE_SCOPE] = scopes["k8s-active"]
    return scopes


def kubeconfig_paths(fleet: Fleet) -> str:
    """Every kubeconfig of the fleet, joined as KUBECONFIG joins them."""
    paths = dict.fromkeys(str(fleet.kubeconfig_for(c)) for c in fleet.clusters)
    return os.pathsep.join(paths)


def _activities(experiment: Mapping[str, Any], *parts: str) -> Iterator[dict[str, Any]]:
    for part in parts:
        found = experiment.get(part) or []
        if part == "steady-state-hypothesis":
            found = (found or {}).get("probes") or []
        yield from (a for a in found if isinstance(a, dict))


def _unscoped(activity: dict[str, Any]) -> bool:
    provider = activity.get("provider") or {}
    return isinstance(provider, dict) and not provider.get("secrets")


def _scoped(activity: dict[str, Any]) -> dict[str, Any]:
    """A chaosk8s activity that names no secret scope acts on the active cluster, as `chaos run` acts on
    the current context: it gets the k8s scope."""
    provider = activity.get("provider") or {}
    if _unscoped(activity) and str(provider.get("module", "")).startswith("chaosk8s"):
        return {**activity, "provider": {**provider, "secrets": [ACTIVE_SCOPE]}}
    return activity


def prepare(
    experiment: Mapping[str, Any], fleet: Fleet, recorded: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The experiment with the fleet's configuration values, the values `recorded` at its start and the
    fleet's secret scopes filled in.

    The experiment's own configuration wins: the fleet fills only a key it leaves out, or reads from an
    environment variable that is not set and has no default. Its declared secret scopes are kept.
    """
    configuration = dict(experiment.get("configuration") or {})
    values = configuration_values(fleet, app_of(fleet, configuration)) | dict(recorded or {})
    for key, value in values.items():
        if _declared(configuration.get(key)) is None:
            configuration[key] = value
    secrets = {**secret_scopes(fleet), **(experiment.get("secrets") or {})}
    prepared = {**experiment, "configuration": configuration, "secrets": secrets}
    for part in ("method", "rollbacks"):
        if part in experiment:
            prepared[part] = [_scoped(a) if isinstance(a, dict) else a for a in experiment[part] or []]
    hypothesis = experiment.get("steady-state-hypothesis")
    if isinstance(hypothesis, dict) and "probes" in hypothesis:
        probes = [_scoped(a) if isinstance(a, dict) else a for a in hypothesis["probes"] or []]
        prepared["steady-state-hypothesis"] = {**hypothesis, "probes": probes}
    return prepared


@dataclass(frozen=True)
class Targets:
    """The clusters an experiment's actions act on; `unscoped`: actions that name no secret scope, so act
    on the active cluster."""

    clusters: tuple[str, ...]
    unscoped: tuple[str, ...] = ()


def targets(experiment: Mapping[str, Any], fleet: Fleet) -> Targets:
    """The clusters the method's and rollbacks' actions act on, from the secret scopes they name (the
    fleet's and the experiment's, see prepare); an action that names none acts on the active cluster.
    ConfigError for a scope whose context is not one of the fleet's: nothing unguarded runs."""
    declared = {**secret_scopes(fleet), **(experiment.get("secrets") or {})}
    scopes = {name: s for name, s in declared.items() if isinstance(s, dict)}
    by_context = {fleet.context_for(c): c.name for c in fleet.clusters}
    found: list[str] = []
    unscoped: list[str] = []
    for activity in _activities(experiment, "method", "rollbacks"):
        if activity.get("type") != "action":
            continue
        name, provider = activity.get("name"), activity.get("provider") or {}
        contexts = [scopes.get(s, {}).get("KUBERNETES_CONTEXT") for s in provider.get("secrets") or []]
        if _unscoped(activity):
            try:
                contexts = [fleet.context_for(fleet.primary())]
            except ConfigError as error:
                raise ConfigError(
                    f"action {name!r} names no secret scope, so it acts on the active cluster: {error}"
                ) from None
            unscoped.append(str(name))
        for context in filter(None, contexts):
            if not isinstance(context, str) or context not in by_context:
                raise ConfigError(
                    f"action {name!r}: its secrets name context {context!r}, which is not a context of "
                    f"fleet {fleet.name} ({', '.join(by_context)})"
                )
            if by_context[context] not in found:
                found.append(by_context[context])
    return Targets(tuple(found), tuple(unscoped))


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


def rollback(experiment: dict[str, Any], fleet: Fleet) -> list[dict[str, Any]]:
    """Run a prepared experiment's rollbacks through chaoslib, in order; their runs (status, output, ...)."""
    configuration = load_configuration(experiment.get("configuration") or {})
    secrets = load_secrets(experiment.get("secrets") or {}, configuration)
    configuration = load_dynamic_configuration(configuration, secrets)
    runs: list[dict[str, Any]] = []
    with kubeconfig_for_chaosk8s(kubeconfig_paths(fleet)), ThreadPoolExecutor(4) as pool:
        for run in run_rollbacks(experiment, configuration, secrets, pool, None, None, runs):
            if isinstance(run, Future):
                run.result()
    return runs


def failed_run(runs: list[dict[str, Any]]) -> str | None:
    """`activity 'NAME' STATUS: WHY` for the first run that did not succeed, or None."""
    for run in runs:
        if run.get("status") != "succeeded":
            error = "".join(run.get("exception") or []).strip().splitlines()
            why = error[-1] if error else run.get("status")
            return f"activity {run.get('activity', {}).get('name')!r} {run.get('status')}: {why}"
    return None


def _empty(output: Any) -> bool:
    if isinstance(output, list | tuple | dict | set):
        return not output
    return isinstance(output, int) and not isinstance(output, bool) and output == 0


def selections(journal: Mapping[str, Any]) -> Evidence:
    """Whether the method's actions selected something: not when one that succeeded returned an empty
    selection ([], {} or 0), which means it acted on nothing."""
    actions = [
        run
        for run in journal.get("run") or []
        if (run.get("activity") or {}).get("type") == "action" and run.get("status") == "succeeded"
    ]
    empty = [str(run["activity"].get("name")) for run in actions if _empty(run.get("output"))]
    if empty:
        named = ", ".join(repr(name) for name in empty)
        return Evidence(False, f"the method's action(s) {named} selected nothing")
    chosen = [
        f"{run['activity'].get('name')!r} selected {len(run['output'])}"
        for run in actions
        if isinstance(run.get("output"), list | tuple | dict | set)
    ]
    return Evidence(True, "; ".join(chosen) or f"{len(actions)} method action(s) succeeded")


@dataclass(frozen=True)
class ExperimentFault(Fault, kind="chaostoolkit-experiment"):
    """What the experiment file `experiment`, run against the fleet of the fleet file `fleet`, changes in
    the target clusters. Revert runs its rollbacks, prepared again with the values `recorded` at its
    start; `environment` names the variables its configuration read (recover needs them set again).
    The effect is read from the run's journal (`journal`). Its actions may be anything (a cloud's
    instances stopped), so the drill lease of its targets is held elsewhere (cuts_api)."""

    cuts_api: ClassVar[bool] = True

    experiment: str
    fleet: str
    journal: str = ""
    recorded: dict[str, int] = field(default_factory=dict)
    environment: tuple[str, ...] = ()

    def inject(self, ctx: FaultContext) -> None:
        """Nothing: chaoslib runs the experiment's method right after."""

    def revert(self, ctx: FaultContext) -> None:
        missing = [name for name in self.environment if name not in os.environ]
        if missing:
            raise FleetDrillError(
                f"{self.experiment}: its configuration read {', '.join(missing)} from the environment when "
                "it ran: set them as they were, then run `fleetdrill recover` again"
            )
        fleet = load_fleet(self.fleet)
        prepared = prepare(load_experiment(self.experiment), fleet, self.recorded)
        failed = failed_run(rollback(prepared, fleet))
        if failed is not None:
            raise FleetDrillError(f"{self.experiment}: rollback {failed}")

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """The method's actions selected something (see selections), from the run's journal."""
        return selections(json.loads(Path(self.journal).read_text()))
