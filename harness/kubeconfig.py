"""A kubeconfig read for one context: the file, its YAML, the context, and the cluster and user it names.

Every problem is one line naming the file and the context, then the fix. No credential ever reaches it: a
YAML error is told by its line and column, never by the text around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import FleetDrillError


class KubeconfigError(FleetDrillError):
    """A kubeconfig or its context cannot be used: `<file>: context <ctx> of <owner>: <what>; <fix>`."""


@dataclass(frozen=True)
class ContextRef:
    """A context of a kubeconfig file as something names it; the fields say what to change to fix it."""

    path: Path
    context: str
    owner: str = ""
    """Whose context it is, such as "cluster east"."""
    path_field: str = "the kubeconfig path"
    context_field: str = "the context name"

    def error(self, what: str, fix: str) -> KubeconfigError:
        owner = f" of {self.owner}" if self.owner else ""
        return KubeconfigError(f"{self.path}: context {self.context}{owner}: {what}; {fix}")


def _entries(config: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found = config.get(kind)
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def named(config: dict[str, Any], kind: str, name: object) -> dict[str, Any] | None:
    """The body of the `kind` entry called `name` ({} when it has none), or None when there is none."""
    for entry in _entries(config, kind):
        if entry.get("name") == name:
            body = entry.get(kind[:-1])
            return body if isinstance(body, dict) else {}
    return None


def _parse(ref: ContextRef) -> object:
    try:
        text = ref.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ref.error(
            "no such file", f"set {ref.path_field} to the kubeconfig that has the context"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ref.error(f"the file cannot be read ({reason})", "make it a readable kubeconfig") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or "invalid YAML").split())
        raise ref.error(f"the file does not parse as YAML ({where}{problem})", "fix its YAML") from None


def read(ref: ContextRef) -> dict[str, Any]:
    """The kubeconfig, checked to hold the context, the cluster it names (with a server) and the user it
    names (a context may name none); KubeconfigError otherwise."""
    config = _parse(ref)
    if not isinstance(config, dict):
        got = "an empty file" if config is None else f"a {type(config).__name__}"
        raise ref.error(
            f"not a kubeconfig (expected a mapping with clusters, contexts and users, got {got})",
            f"set {ref.path_field} to a kubeconfig",
        )
    context = named(config, "contexts", ref.context)
    if context is None:
        names = ", ".join(str(e.get("name")) for e in _entries(config, "contexts")) or "none"
        raise ref.error(
            f"not in the kubeconfig (it has: {names})",
            f"set {ref.context_field} or add the context to the kubeconfig",
        )
    cluster = named(config, "clusters", context.get("cluster"))
    if cluster is None:
        raise ref.error(
            f"names cluster {context.get('cluster')!r}, which the kubeconfig's clusters do not have",
            "add that cluster to the kubeconfig or point the context at one it has",
        )
    if not cluster.get("server"):
        raise ref.error(f"its cluster {context['cluster']!r} has no server", "set the cluster's server URL")
    if context.get("user") and named(config, "users", context["user"]) is None:
        raise ref.error(
            f"names user {context['user']!r}, which the kubeconfig's users do not have",
            "add that user to the kubeconfig or point the context at one it has",
        )
    return config
