"""The local fleet as an infrastructure provider: cluster loss is SIGKILL of everything it runs, node loss
freezes the node (its agent, pods and kube-proxy stop dead), a partition drops packets in its router; its
steps hand nothing over (the fleet's state says what is lost)."""

from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
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

    def lose_cluster(self, cluster: str) -> None:
        supervisor.stop_cluster(self.folder, cluster)

    def restore_cluster(self, cluster: str, handle: str = "") -> None:
        if not supervisor.cluster_running(self.folder, cluster):
            supervisor.start_cluster(self.folder, cluster)

    def partition(self, clusters: list[str], name: str) -> None:
        supervisor.partition(self.folder, clusters, name)

    def heal(self, name: str, handle: str = "") -> None:
        supervisor.heal(self.folder, name)

    def traffic_crosses(self, clusters: list[str]) -> bool:
        return supervisor.traffic_crosses(self.folder, clusters)

    def lose_node(self, cluster: str, node: str) -> None:
        freeze.freeze(FleetState.load(self.folder.resolve()), node)

    def restore_node(self, cluster: str, node: str, handle: str = "") -> None:
        if node in freeze.frozen(self.folder.resolve()):  # recorded before it freezes: never missed
            freeze.thaw(FleetState.load(self.folder.resolve()), node)
