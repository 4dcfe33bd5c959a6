"""The steps (harness.infra.registry) with their placeholder values, for providers driven by settings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from harness.config import Fleet
from harness.infra.registry import Step, Target

HANDLE_MAX = 500
"""The longest handle kept (harness.faults.handover); a longer one is cut."""


def as_handle(text: str) -> str:
    """What a lose step returned, as its handle: its lines, stripped, on one line, at most HANDLE_MAX
    characters."""
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= HANDLE_MAX else flat[: HANDLE_MAX - 3] + "..."


def last_line(output: str) -> str:
    """The last line of a step's output that is not blank, stripped: what a command step returns."""
    return next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")


def places(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """By cluster name, what a step acting on it gets besides its name and context: region, zones
    (comma-separated) and cloud ids (clusters[].cloud)."""
    return {
        c.name: {"region": c.region, "zones": ",".join(c.zones), "cloud": dict(c.cloud)}
        for c in fleet.clusters
    }


class Steps(ABC):
    """A Provider that runs each step (harness.infra.registry) with the values its placeholders name
    (cluster, context, region, zones, cloud; clusters, contexts, regions, name, node; handle, what the lose
    step returned, for its restore step); a subclass says how a step runs."""

    contexts: Mapping[str, str]
    """Kubeconfig context by cluster name."""
    places: Mapping[str, Mapping[str, Any]]
    """Region, zones and cloud ids by cluster name (places())."""

    @abstractmethod
    def run_step(self, step: str, values: dict[str, Any]) -> str:
        """Run the step named `step` with its placeholder values; what it returned, as text ("" for
        nothing)."""

    @abstractmethod
    def look_across(self, step: str, values: dict[str, Any]) -> bool | None:
        """Run the looking step named `step` with its values: whether it says yes; None without the step."""

    def run(self, step: Step, target: Target, handle: str = "") -> str | None:
        """Run the step; a step that hands over returns its handle."""
        text = self.run_step(step.name, self.values(step, target, handle))
        return as_handle(text) if step.hands_over else None

    def look(self, step: Step, target: Target) -> bool | None:
        return self.look_across(step.name, self.values(step, target))

    def values(self, step: Step, target: Target, handle: str = "") -> dict[str, Any]:
        """What `step` gets for `target`: the values its placeholders name."""
        available: dict[str, Any] = {"handle": handle}
        if target.cluster:
            where = self.places.get(target.cluster, {"region": "", "zones": "", "cloud": {}})
            available |= {"cluster": target.cluster, "context": self._context(target.cluster), **where}
        if target.node:
            available["node"] = target.node
        if target.clusters:
            available |= self._cut(target.clusters)
        if target.name:
            available["name"] = target.name
        return {name: value for name, value in available.items() if name in step.placeholders}

    def _context(self, cluster: str) -> str:
        return self.contexts.get(cluster, cluster)

    def _cut(self, clusters: tuple[str, ...]) -> dict[str, Any]:
        """The values of a step about the cut around `clusters`."""
        contexts = ",".join(self._context(cluster) for cluster in clusters)
        regions = ",".join(dict.fromkeys(str(self.places.get(c, {}).get("region", "")) for c in clusters))
        return {"clusters": ",".join(clusters), "contexts": contexts, "regions": regions}
