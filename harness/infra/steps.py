"""The provider methods as named steps with their placeholder values, for providers driven by settings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any


class Steps(ABC):
    """A Provider whose every method runs the step of the same name with its values (cluster, context,
    clusters, contexts, name, node); a subclass says how a step runs."""

    contexts: Mapping[str, str]
    """Kubeconfig context by cluster name."""

    @abstractmethod
    def run_step(self, step: str, values: dict[str, str]) -> Any:
        """Run the step named after the provider method, with its placeholder values."""

    def _context(self, cluster: str) -> str:
        return self.contexts.get(cluster, cluster)

    def lose_cluster(self, cluster: str) -> None:
        self.run_step("lose_cluster", {"cluster": cluster, "context": self._context(cluster)})

    def restore_cluster(self, cluster: str) -> None:
        self.run_step("restore_cluster", {"cluster": cluster, "context": self._context(cluster)})

    def partition(self, clusters: list[str], name: str) -> None:
        contexts = ",".join(self._context(cluster) for cluster in clusters)
        self.run_step("partition", {"clusters": ",".join(clusters), "contexts": contexts, "name": name})

    def heal(self, name: str) -> None:
        self.run_step("heal", {"name": name})

    def traffic_crosses(self, clusters: list[str]) -> bool | None:
        """Settings-driven providers have no step that looks across a cut yet."""
        return None

    def lose_node(self, cluster: str, node: str) -> None:
        self.run_step("lose_node", {"cluster": cluster, "context": self._context(cluster), "node": node})

    def restore_node(self, cluster: str, node: str) -> None:
        self.run_step("restore_node", {"cluster": cluster, "context": self._context(cluster), "node": node})
