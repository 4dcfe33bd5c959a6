"""A WAN partition through the infrastructure provider: the target clusters lose the rest of the fleet."""

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from harness.faults.base import Evidence, FaultContext, Observed
from harness.faults.evidence import endpoint_answers
from harness.faults.handover import Handover
from harness.faults.provided import HandsOver, provider
from harness.infra.registry import HEAL, PARTITION, TRAFFIC_CROSSES, Target
from harness.timeline import Event


@dataclass(frozen=True)
class WanPartition(HandsOver, kind="wan-partition"):
    """Packets between the target clusters and every other part of the fleet are dropped, both ways; the heal
    step is given what the partition step returned."""

    cuts_api: ClassVar[bool] = True
    by_provider: ClassVar[bool] = True
    cuts_off: ClassVar[Literal["cluster", "region"] | None] = "region"

    @property
    def name(self) -> str:
        """A name derived from the targets, so a revert after a crash finds the same partition."""
        return re.sub(r"[^a-z0-9]+", "_", "_".join(sorted(self.targets)).lower())

    def inject_handing(self, ctx: FaultContext, handover: Handover) -> None:
        cut = Target(clusters=self.targets, name=self.name)
        handover.keep(self.name, provider(ctx).run(PARTITION, cut))

    def revert_handed(self, ctx: FaultContext, handover: Handover) -> None:
        provider(ctx).run(HEAL, Target(name=self.name), handover.get(self.name))

    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """Packets from the rest of the fleet no longer reach the targets (the provider looks from the
        other side of the cut); what each target's endpoint does meanwhile is part of the evidence."""
        crosses = provider(ctx).look(TRAFFIC_CROSSES, Target(clusters=self.targets))
        sides = [e.detail for c in self.targets if (e := endpoint_answers(observed, c, started.t_mono))]
        if crosses is None:
            cut = "the provider cannot observe traffic across the cut (infrastructure.provider)"
        else:
            cut = "traffic from the rest of the fleet " + (
                "still reaches" if crosses else "no longer reaches"
            )
            cut += f" {', '.join(self.targets)}"
        return Evidence(crosses is False, "; ".join([cut, *sides]))
