"""A WAN partition through the infrastructure provider: the target clusters lose the rest of the fleet."""

import re
from dataclasses import dataclass

from harness.faults.base import Fault, FaultContext
from harness.faults.cluster import provider


@dataclass(frozen=True)
class WanPartition(Fault, kind="wan-partition"):
    """Packets between the target clusters and every other part of the fleet are dropped, both ways."""

    @property
    def name(self) -> str:
        """A name derived from the targets, so a revert after a crash finds the same partition."""
        return re.sub(r"[^a-z0-9]+", "_", "_".join(sorted(self.targets)).lower())

    def inject(self, ctx: FaultContext) -> None:
        provider(ctx).partition(list(self.targets), self.name)

    def revert(self, ctx: FaultContext) -> None:
        provider(ctx).heal(self.name)
