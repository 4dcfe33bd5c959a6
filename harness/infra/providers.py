"""The fleet's infrastructure provider, as its fleet file's `infrastructure.provider` names it."""

from __future__ import annotations

from harness.config import ChaosToolkitSettings, CommandSettings, Fleet
from harness.infra import Provider


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
