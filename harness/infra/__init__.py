"""The seam for faults the Kubernetes API cannot express (a whole cluster lost, and its return).

A provider is chosen by the fleet file's `infrastructure.provider`: `localfleet` drives the embedded
local fleet; `none` refuses such faults with a clear message.
"""

from typing import Protocol

from harness.config import Fleet
from harness.errors import ConfigError


class Provider(Protocol):
    """What infrastructure faults need from the world the fleet runs in."""

    def lose_cluster(self, cluster: str) -> None:
        """Take the whole cluster away at once (control plane, nodes, pods, ingress)."""

    def restore_cluster(self, cluster: str) -> None:
        """Bring a lost cluster back on its data; idempotent."""

    def partition(self, clusters: list[str], name: str) -> None:
        """Cut the clusters off from the rest of the fleet (packets dropped, both ways)."""

    def heal(self, name: str) -> None:
        """End the partition `name`; idempotent."""


def provider_for(fleet: Fleet) -> Provider | None:
    """The fleet's provider, or None when the fleet file names none."""
    name = fleet.infrastructure.provider
    if name == "none":
        return None
    if name == "localfleet":
        from harness.infra.localfleet import LocalFleetProvider

        return LocalFleetProvider.from_settings(fleet.infrastructure.settings)
    raise ConfigError(f"infrastructure.provider: {name!r} is not available yet (available: localfleet, none)")
