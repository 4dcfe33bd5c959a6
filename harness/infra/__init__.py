"""The seam for faults the Kubernetes API cannot express (a whole cluster or node lost, a WAN partition).

A provider is chosen by the fleet file's `infrastructure.provider`: `localfleet` drives the embedded
local fleet; `command` runs the user's scripts; `chaostoolkit` runs Chaos Toolkit activities; `none`
refuses such faults with a clear message (harness.infra.providers chooses). The steps a provider runs are
declared once, in harness.infra.registry.
"""

from __future__ import annotations

from typing import Protocol

from harness.infra.registry import Step, Target


class Provider(Protocol):
    """What infrastructure faults need from the world the fleet runs in; every restore step is idempotent.

    A lose step (one that `hands_over`: lose_cluster, partition, lose_node) may return a handle, one line of
    text its restore step (restore_cluster, heal, restore_node) needs, such as an AWS FIS experiment id; the
    restore step gets it back as `handle`, "" when there was none or the lose step never returned (a crash
    while it ran).
    """

    def run(self, step: Step, target: Target, handle: str = "") -> str | None:
        """Run `step` on `target` (a restore step with its lose step's handle); a lose step's handle."""

    def look(self, step: Step, target: Target) -> bool | None:
        """Run a step that `looks` (traffic_crosses: whether packets from the rest of the fleet still reach
        the target's clusters, looked at from outside them); None when this provider cannot look."""
