"""The local fleet as an infrastructure provider: cluster loss is SIGKILL of everything it runs, node loss
freezes the node (its agent, pods and kube-proxy stop dead), a partition drops packets in its router; its
steps hand nothing over (the fleet's state says what is lost)."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, FleetDrillError
from harness.infra import registry
from harness.infra.registry import Step, Target
from harness.localfleet import freeze, supervisor
from harness.localfleet.state import FleetState


@dataclass(frozen=True)
class LocalFleetProvider:
    """Loses and restores clusters and nodes of the local fleet in `folder`."""

    folder: Path

    @classmethod
    def from_settings(cls, settings: dict) -> "LocalFleetProvider":
        if not isinstance(settings.get("dir"), str):
            raise ConfigError("infrastructure.settings.dir: expected the local fleet's folder, got nothing")
        return cls(Path(settings["dir"]))

    def run(self, step: Step, target: Target, handle: str = "") -> None:
        self._method(step)(target)

    def look(self, step: Step, target: Target) -> bool:
        return bool(self._method(step)(target))

    def _method(self, step: Step) -> Callable[[Target], object]:
        """The method that runs `step` here; a FleetDrillError for a step the local fleet cannot run."""
        methods: dict[Step, Callable[[Target], object]] = {
            registry.LOSE_CLUSTER: self.lose_cluster,
            registry.RESTORE_CLUSTER: self.restore_cluster,
            registry.PARTITION: self.partition,
            registry.HEAL: self.heal,
            registry.TRAFFIC_CROSSES: self.traffic_crosses,
            registry.LOSE_NODE: self.lose_node,
            registry.RESTORE_NODE: self.restore_node,
        }
        if step not in methods:
            raise FleetDrillError(
                f"infrastructure.provider localfleet: the local fleet has no step {step.name}"
            )
        return methods[step]

    def lose_cluster(self, target: Target) -> None:
        supervisor.stop_cluster(self.folder, target.cluster)

    def restore_cluster(self, target: Target) -> None:
        if not supervisor.cluster_running(self.folder, target.cluster):
            supervisor.start_cluster(self.folder, target.cluster)

    def partition(self, target: Target) -> None:
        supervisor.partition(self.folder, list(target.clusters), target.name)

    def heal(self, target: Target) -> None:
        supervisor.heal(self.folder, target.name)

    def traffic_crosses(self, target: Target) -> bool:
        return supervisor.traffic_crosses(self.folder, list(target.clusters))

    def lose_node(self, target: Target) -> None:
        freeze.freeze(FleetState.load(self.folder.resolve()), target.node)

    def restore_node(self, target: Target) -> None:
        if target.node in freeze.frozen(self.folder.resolve()):  # recorded before it freezes: never missed
            freeze.thaw(FleetState.load(self.folder.resolve()), target.node)
