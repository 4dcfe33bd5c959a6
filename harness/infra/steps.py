"""The provider methods as named steps with their placeholder values, for providers driven by settings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from harness.config import Fleet

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
    """A Provider whose every method runs the step of the same name with its values (config.PLACEHOLDERS:
    cluster, context, region, zones, cloud; clusters, contexts, regions, name, node; handle, what the lose
    step returned, for its restore step); a subclass says how a step runs."""

    contexts: Mapping[str, str]
    """Kubeconfig context by cluster name."""
    places: Mapping[str, Mapping[str, Any]]
    """Region, zones and cloud ids by cluster name (places())."""

    @abstractmethod
    def run_step(self, step: str, values: dict[str, Any]) -> str:
        """Run the step named after the provider method, with its placeholder values; what it returned, as
        text ("" for nothing)."""

    def _lose(self, step: str, values: dict[str, Any]) -> str:
        """Run a lose step; its handle."""
        return as_handle(self.run_step(step, values))

    def _context(self, cluster: str) -> str:
        return self.contexts.get(cluster, cluster)

    def _one(self, cluster: str) -> dict[str, Any]:
        """The values of a step acting on `cluster`."""
        where = self.places.get(cluster, {"region": "", "zones": "", "cloud": {}})
        return {"cluster": cluster, "context": self._context(cluster), **where}

    def lose_cluster(self, cluster: str) -> str:
        return self._lose("lose_cluster", self._one(cluster))

    def restore_cluster(self, cluster: str, handle: str = "") -> None:
        self.run_step("restore_cluster", {**self._one(cluster), "handle": handle})

    @abstractmethod
    def look_across(self, values: dict[str, Any]) -> bool | None:
        """Run the traffic_crosses step with its values: whether traffic crosses; None without the step."""

    def _cut(self, clusters: list[str]) -> dict[str, Any]:
        """The values of a step about the cut around `clusters`."""
        contexts = ",".join(self._context(cluster) for cluster in clusters)
        regions = ",".join(dict.fromkeys(str(self.places.get(c, {}).get("region", "")) for c in clusters))
        return {"clusters": ",".join(clusters), "contexts": contexts, "regions": regions}

    def partition(self, clusters: list[str], name: str) -> str:
        return self._lose("partition", {**self._cut(clusters), "name": name})

    def heal(self, name: str, handle: str = "") -> None:
        self.run_step("heal", {"name": name, "handle": handle})

    def traffic_crosses(self, clusters: list[str]) -> bool | None:
        return self.look_across(self._cut(clusters))

    def lose_node(self, cluster: str, node: str) -> str:
        return self._lose("lose_node", {**self._one(cluster), "node": node})

    def restore_node(self, cluster: str, node: str, handle: str = "") -> None:
        self.run_step("restore_node", {**self._one(cluster), "node": node, "handle": handle})
