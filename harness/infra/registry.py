"""The infrastructure steps, each declared once: its name, the placeholders its templates get, the restore
step that undoes it and whether it hands that step a handle, or that it only looks.

Everything else reads this registry: the fleet file's provider settings and their JSON schema
(harness.config), the values each step is given (harness.infra.steps), which steps the chaostoolkit
provider runs as rollbacks or probes, and the faults that run them. A new step is one `register` call here
and its test.
"""

from __future__ import annotations

from dataclasses import dataclass

ONE_CLUSTER = ("cluster", "context", "region", "zones", "cloud")
"""What a step acting on one cluster gets: its name, kubeconfig context, region, zones (comma-separated)
and its cloud ids ({cloud[KEY]}, from clusters[].cloud)."""
CUT = ("clusters", "contexts", "regions")
"""What a step about a cut around clusters gets: their names, contexts and regions, comma-separated."""
VALUES = (*ONE_CLUSTER, *CUT, "name", "node", "handle")
"""Every value a step can be given (harness.infra.steps makes them from its Target and handle)."""


@dataclass(frozen=True)
class Target:
    """What one run of a step acts on: a cluster (and a node of it), or the clusters of a cut and its name."""

    cluster: str = ""
    node: str = ""
    clusters: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class Step:
    """One infrastructure step as the fleet file names it."""

    name: str
    placeholders: tuple[str, ...]
    """The {placeholders} its templates may use ("cloud" stands for {cloud[KEY]})."""
    does: str
    """What it does, in a sentence, for the fleet file's documentation."""
    restored_by: str | None = None
    """The step that undoes it (a lose step's restore step), if any."""
    hands_over: bool = False
    """What it returns is its restore step's {handle}."""
    looks: bool = False
    """It only looks (a probe answering yes or no) and changes nothing."""

    def __post_init__(self) -> None:
        unknown = [name for name in self.placeholders if name not in VALUES]
        if unknown:
            raise ValueError(f"step {self.name}: no value for placeholder {', '.join(unknown)} ({VALUES})")
        if self.hands_over and self.restored_by is None:
            raise ValueError(f"step {self.name}: hands a handle over, but names no step that restores it")


STEPS: dict[str, Step] = {}
"""Every step, by name, in the order registered."""


def register(step: Step) -> Step:
    """Add a step to the registry; a name taken already is a ValueError."""
    if step.name in STEPS:
        raise ValueError(f"step {step.name}: registered already")
    STEPS[step.name] = step
    return step


def restoring(step: Step) -> Step | None:
    """The step `step` restores after (its lose step), if it is a restore step."""
    return next((lose for lose in STEPS.values() if lose.restored_by == step.name), None)


def handing_over() -> tuple[Step, ...]:
    """The steps that hand a handle to their restore step."""
    return tuple(step for step in STEPS.values() if step.hands_over)


LOSE_CLUSTER = register(
    Step(
        "lose_cluster",
        ONE_CLUSTER,
        "Take a whole cluster away",
        restored_by="restore_cluster",
        hands_over=True,
    )
)
RESTORE_CLUSTER = register(
    Step("restore_cluster", (*ONE_CLUSTER, "handle"), "Bring a lost cluster back on its data (idempotent)")
)
PARTITION = register(
    Step(
        "partition",
        (*CUT, "name"),
        "Cut clusters off from the rest of the fleet",
        restored_by="heal",
        hands_over=True,
    )
)
HEAL = register(Step("heal", ("name", "handle"), "End the partition {name} (idempotent)"))
TRAFFIC_CROSSES = register(
    Step(
        "traffic_crosses",
        CUT,
        "Look across a partition from outside it, the evidence that it took effect: yes while traffic from"
        " the rest of the fleet still reaches {clusters}, no once it does not; left out, a partition through"
        " this provider cannot be proven",
        looks=True,
    )
)
LOSE_NODE = register(
    Step(
        "lose_node",
        (*ONE_CLUSTER, "node"),
        "Stop a node dead",
        restored_by="restore_node",
        hands_over=True,
    )
)
RESTORE_NODE = register(
    Step("restore_node", (*ONE_CLUSTER, "node", "handle"), "Bring a lost node back (idempotent)")
)
