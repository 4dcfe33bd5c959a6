"""The seam for faults the Kubernetes API cannot express (a whole cluster or node lost, a WAN partition).

A provider is chosen by the fleet file's `infrastructure.provider`: `localfleet` drives the embedded
local fleet; `command` runs the user's scripts; `chaostoolkit` runs Chaos Toolkit activities; `none`
refuses such faults with a clear message.
"""

from typing import Protocol

from harness.config import ChaosToolkitSettings, CommandSettings, Fleet


class Provider(Protocol):
    """What infrastructure faults need from the world the fleet runs in; every restore is idempotent.

    A lose step (lose_cluster, partition, lose_node) may return a handle, one line of text its restore step
    (restore_cluster, heal, restore_node) needs, such as an AWS FIS experiment id; the restore step gets it
    back as `handle`, "" when there was none or the lose step never returned (a crash while it ran).
    """

    def lose_cluster(self, cluster: str) -> str | None:
        """Take the whole cluster away at once (control plane, nodes, pods, ingress); its handle."""

    def restore_cluster(self, cluster: str, handle: str = "") -> None:
        """Bring a lost cluster back on its data; idempotent."""

    def partition(self, clusters: list[str], name: str) -> str | None:
        """Cut the clusters off from the rest of the fleet (packets dropped, both ways); its handle."""

    def heal(self, name: str, handle: str = "") -> None:
        """End the partition `name`; idempotent."""

    def traffic_crosses(self, clusters: list[str]) -> bool | None:
        """Whether packets from the rest of the fleet still reach the clusters, looked at from outside them
        (the evidence that a partition took effect); None when this provider cannot look."""

    def lose_node(self, cluster: str, node: str) -> str | None:
        """Stop the node dead (its kubelet and pods stop answering; the machine is not shut down cleanly);
        its handle."""

    def restore_node(self, cluster: str, node: str, handle: str = "") -> None:
        """Bring a lost node back; idempotent."""


def provider_for(fleet: Fleet) -> Provider | None:
    """The fleet's provider, or None when the fleet file names none."""
    infrastructure = fleet.infrastructure
    if infrastructure.provider == "localfleet":
        from harness.infra.localfleet import LocalFleetProvider

        return LocalFleetProvider.from_settings(infrastructure.settings)
    settings = infrastructure.typed_settings()
    if isinstance(settings, CommandSettings):
        from harness.infra.command import CommandProvider
        from harness.infra.steps import places

        return CommandProvider(
            settings, {c.name: fleet.context_for(c) for c in fleet.clusters}, places(fleet)
        )
    if isinstance(settings, ChaosToolkitSettings):
        from harness.infra.chaostoolkit import ChaosToolkitProvider

        return ChaosToolkitProvider.from_settings(settings, fleet)
    return None
