"""The command strategy: the user's own failover script, an argv list (no shell) with its placeholders
filled in; its credentials are its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

from pydantic import Field, model_validator

from harness.config import Failover, Invalid, PositiveDuration, Text, check_templates
from harness.infra.command import render, run_command
from harness.infra.steps import places
from harness.strategies import Strategy, register

if TYPE_CHECKING:
    from harness.config import App
    from harness.fleet import FleetAccess
    from harness.timeline import Timeline

PLACEHOLDERS = ("app", "namespace", "cluster", "context", "region", "zones", "cloud")
"""What a failover command gets: the app, its namespace, and of the cluster taking over its name, context,
region, zones (comma-separated) and cloud ids ({cloud[KEY]}, from clusters[].cloud: a Route 53 record's
set identifier, a load balancer's ARN)."""


class CommandFailover(Failover):
    """The command strategy's settings."""

    command: Annotated[tuple[Text, ...], Field(min_length=1)] | None = None
    """For strategy command: your failover script as an argv list (no shell), with {app}, {namespace},
    {cluster} (the one taking over) and its {context}, {region}, {zones} and {cloud[KEY]} filled in; exit
    status 0 means done."""
    timeout: PositiveDuration = 300.0
    """Longest the command may run."""

    @model_validator(mode="after")
    def _command_when_needed(self) -> CommandFailover:
        if self.strategy == "command" and not self.command:
            raise Invalid("a command (an argv list) for strategy command", self.command, ("command",))
        check_templates(PLACEHOLDERS, list(self.command or ()), ("command",))
        return self


def run(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    """Run the app's failover command for `cluster`; exit status 0 means done."""
    settings = cast(CommandFailover, app.failover)  # the fleet's Failover model derives from every strategy's
    context = access.fleet.context_for(access.fleet.cluster(cluster))
    values = {"app": app.name, "namespace": app.namespace, "cluster": cluster, "context": context}
    values |= places(access.fleet)[cluster]
    argv = render(settings.command or (), values)
    with timeline.phase("failover command", cluster=cluster):
        run_command(argv, f"apps.{app.name}.failover.command", settings.timeout)
    timeline.record("failover.commanded", cluster=cluster, detail={"program": argv[0]})


COMMAND = register(
    Strategy(
        "command", run, events=("failover.commanded",), does="run your `command`", settings=CommandFailover
    )
)
