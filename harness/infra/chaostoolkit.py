"""The chaostoolkit provider: any Chaos Toolkit activity does each infrastructure step, run by chaoslib.

A step is an activity's `provider` mapping (python: module, func, arguments; process; http), so every
chaostoolkit extension (chaosaws, chaosgcp, chaosazure, chaosk8s, your own module) can lose and restore a
cluster or node, or partition and heal; the restore steps are the rollbacks of the lose steps. Activities
are checked with chaoslib when the fleet is loaded; configuration and secrets are loaded as chaostoolkit
loads an experiment's, and secrets never appear in messages. What a lose step's activity returns (a python
function's value, a process's last line of stdout, an http call's body; the part at its `handle` path
when set) is the handle its restore step gets as {handle}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chaoslib.activity import ensure_activity_is_valid, run_activity
from chaoslib.configuration import load_configuration
from chaoslib.exceptions import ChaosException
from chaoslib.secret import load_secrets

from harness.config import ChaosToolkitSettings, Fleet
from harness.errors import ConfigError, FleetDrillError
from harness.infra.registry import STEPS, restoring
from harness.infra.steps import Steps, as_handle, last_line, places

HANDLE = "handle"
"""fleetdrill's own key beside a lose step's provider mapping: the path of its handle in what it returns."""


def fill(value: Any, values: dict[str, Any]) -> Any:
    """`value` with {placeholder}s ({cloud[KEY]} too) replaced in every string inside it (other braces are
    left alone)."""
    if isinstance(value, str):
        texts = {name: text for name, text in values.items() if isinstance(text, str)}
        texts |= {f"cloud[{key}]": text for key, text in (values.get("cloud") or {}).items()}
        for name, text in texts.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, list | tuple):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


def returned(kind: str | None, result: Any) -> Any:
    """What an activity returned, as its step hands it over: a python function's value, a process's last line
    of stdout, an http call's body (never a process's stderr nor an http call's headers)."""
    if kind == "process" and isinstance(result, dict):
        return last_line(str(result.get("stdout") or ""))
    if kind == "http" and isinstance(result, dict):
        return result.get("body")
    return result


def as_text(value: Any) -> str:
    """A returned value as text: a string itself, None nothing, anything else its JSON (what JSON cannot
    hold, such as the datetimes in a boto3 response, as its text)."""
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (TypeError, ValueError):  # keys JSON cannot hold, a cycle
        return str(value)


def pick(text: str, path: str, where: str) -> str:
    """The part at `path` (keys and list indexes joined by ".") of the JSON in `text`, as text; a
    FleetDrillError naming `where` shows what was there when it is not."""
    try:
        found = json.loads(text)
    except ValueError:
        found = text
    for part in path.split("."):
        if isinstance(found, dict) and part in found:
            found = found[part]
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            shown = as_handle(as_text(found)) or "nothing"
            raise FleetDrillError(
                f"{where}: expected {path} in what the step returned, found no {part!r} in {shown}"
            )
    return as_text(found)


def activity(step: str, provider: dict[str, Any]) -> dict[str, Any]:
    """The Chaos Toolkit activity for a step: a probe for a step that looks, else an action (in the
    rollbacks, for a restore step)."""
    kind = "probe" if STEPS[step].looks else "action"
    return {"type": kind, "name": f"fleetdrill-{step.replace('_', '-')}", "provider": provider}


@dataclass(frozen=True)
class ChaosToolkitProvider(Steps):
    """Runs infrastructure.settings.<step> as a Chaos Toolkit activity for each provider method."""

    steps: dict[str, dict[str, Any]]
    configuration: dict[str, Any]
    secrets: dict[str, Any] = field(repr=False)
    contexts: dict[str, str]
    places: dict[str, dict[str, Any]] = field(default_factory=dict)
    handle_paths: dict[str, str] = field(default_factory=dict)
    """By lose step, the path of its handle in what it returns (its `handle` key)."""

    @classmethod
    def from_settings(cls, settings: ChaosToolkitSettings, fleet: Fleet) -> ChaosToolkitProvider:
        """Check every step with chaoslib (its module and function must exist); ConfigError on the first
        that does not pass."""
        given = {step: provider for step in STEPS if (provider := settings.step(step)) is not None}
        steps = {step: {k: v for k, v in provider.items() if k != HANDLE} for step, provider in given.items()}
        paths = {step: provider[HANDLE] for step, provider in given.items() if HANDLE in provider}
        for step, provider in steps.items():
            try:
                ensure_activity_is_valid(activity(step, provider))
            except ChaosException as exc:
                raise ConfigError(
                    f"infrastructure.settings.{step}: not a valid Chaos Toolkit activity: {exc}"
                ) from None
        try:
            configuration = load_configuration(dict(settings.configuration)) or {}
            secrets = load_secrets(dict(settings.secrets), configuration) or {}
        except ChaosException as exc:
            raise ConfigError(
                f"infrastructure.settings: cannot load configuration or secrets: {exc}"
            ) from None
        contexts = {c.name: fleet.context_for(c) for c in fleet.clusters}
        return cls(steps, configuration, secrets, contexts, places(fleet), paths)

    def _configured(self, values: dict[str, Any]) -> dict[str, Any]:
        """The configuration for one step: its placeholders filled with the step's values, so a value such
        as chaosaws' `aws_region: "{region}"` follows the cluster the step acts on."""
        return fill(self.configuration, values)

    def run_step(self, step: str, values: dict[str, Any]) -> str:
        """Run the step's activity; what it returned as text (its part at the step's handle path)."""
        where = f"infrastructure.settings.{step}"
        provider = self.steps.get(step)
        if provider is None:
            raise FleetDrillError(
                f"{where}: not set, and this fault needs it: add the activity to the fleet file"
            )
        what = provider.get("func") or provider.get("path") or provider.get("url") or provider.get("type")
        kind = "rollback" if restoring(STEPS[step]) else "action"
        try:
            result = run_activity(
                activity(step, fill(provider, values)), self._configured(values), self.secrets
            )
        except Exception as exc:
            raise FleetDrillError(f"{where}: Chaos Toolkit {kind} {what} failed: {exc}") from None
        failed = _failure(provider.get("type"), result)
        if failed:
            raise FleetDrillError(f"{where}: Chaos Toolkit {kind} {what} failed: {failed}")
        text = as_text(returned(provider.get("type"), result))
        path = self.handle_paths.get(step)
        return text if path is None else pick(text, path, f"{where}.{HANDLE}")

    def look_across(self, step: str, values: dict[str, Any]) -> bool | None:
        """A python probe's True or False; a process probe's exit 0 (yes) or 1 (no)."""
        provider = self.steps.get(step)
        if provider is None:
            return None
        where = f"infrastructure.settings.{step}"
        try:
            result = run_activity(
                activity(step, fill(provider, values)), self._configured(values), self.secrets
            )
        except Exception as exc:
            raise FleetDrillError(f"{where}: Chaos Toolkit probe failed: {exc}") from None
        if provider.get("type") == "process" and isinstance(result, dict) and result.get("status") in (0, 1):
            return result["status"] == 0
        if isinstance(result, bool):
            return result
        raise FleetDrillError(
            f"{where}: expected the probe to return True or False (a process to exit 0 or 1), "
            f"got {result!r:.100}"
        )


def _failure(kind: str | None, result: Any) -> str:
    """Why a process or http activity failed (chaoslib returns their status instead of raising); "" if not."""
    status = result.get("status") if isinstance(result, dict) else None
    if kind == "process" and status:
        said = " ".join(str(result.get("stderr") or "").split())[-300:] or "no stderr"
        return f"exited {status}: {said}"
    if kind == "http" and isinstance(status, int) and status >= 400:
        return f"HTTP {status}"
    return ""
