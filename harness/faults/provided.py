"""What the faults the infrastructure provider injects share: the provider, and the hand-over from each
lose step to its restore step (harness.faults.handover)."""

from abc import abstractmethod
from dataclasses import dataclass

from harness.errors import FleetDrillError
from harness.faults.base import Fault, FaultContext
from harness.faults.handover import Handover
from harness.infra import Provider


def provider(ctx: FaultContext) -> Provider:
    """The fleet's infrastructure provider; one clear error when the fleet file names none."""
    if ctx.infra is None:
        raise FleetDrillError("this fault needs an infrastructure provider: set infrastructure.provider")
    return ctx.infra


@dataclass(frozen=True, kw_only=True)
class HandsOver(Fault):
    """A fault whose provider steps hand what they return to the steps that revert it: a subclass implements
    inject_handing and revert_handed; inject and revert alone hand nothing over."""

    def inject(self, ctx: FaultContext) -> None:
        self.inject_handing(ctx, Handover())

    def revert(self, ctx: FaultContext) -> None:
        self.revert_handed(ctx, Handover())

    @abstractmethod
    def inject_handing(self, ctx: FaultContext, handover: Handover) -> None:
        """Run the lose steps, keeping what each returned in `handover` by what it acted on."""

    @abstractmethod
    def revert_handed(self, ctx: FaultContext, handover: Handover) -> None:
        """Run the restore steps, each given what its lose step returned."""
