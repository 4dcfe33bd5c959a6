"""A WAN partition through the infrastructure provider: the target clusters lose the rest of the fleet."""

import re
from dataclasses import dataclass
from typing import ClassVar

from harness.faults.base import Evidence, Fault, FaultContext, Observed
from harness.faults.cluster import provider
from harness.faults.evidence import endpoint_answers
from harness.timeline import Event


@dataclass(frozen=True)
class WanPartition(Fault, kind="wan-partition"):
    """Packets between the target clusters and every other part of the fleet are dropped, both ways."""

    cuts_api: ClassVar[bool] = True
    by_provider: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """A name derived from the targets, so a revert after a crash finds the same partition."""
        return re.sub(r"[^a-z0-9]+", "_", "_".join(sorted(self.targets)).lower())

    def inject(self, ctx: FaultContext) -> None:
        provider(ctx).partition(list(self.targets), self.name)

    def revert(self, ctx: FaultContext) -> None:
        provider(ctx).heal(self.name)

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Packets from the rest of the fleet no longer reach the targets (the provider looks from the
        other side of the cut); what each target's endpoint does meanwhile is part of the evidence."""
        crosses = provider(ctx).traffic_crosses(list(self.targets))
        sides = [e.detail for c in self.targets if (e := endpoint_answers(observed, c, started.t_mono))]
        if crosses is None:
            cut = "the provider cannot observe traffic across the cut (infrastructure.provider)"
        else:
            cut = "traffic from the rest of the fleet " + (
                "still reaches" if crosses else "no longer reaches"
            )
            cut += f" {', '.join(self.targets)}"
        return Evidence(crosses is False, "; ".join([cut, *sides]))
