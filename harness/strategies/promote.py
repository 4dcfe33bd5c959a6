"""The promote strategy: point the k8gb Gslb at the cluster taking over (harness.k8gb), then make the app's
data primary there: by the fleet file's promote call, at an epoch above every reachable cluster's, or by its
promote command (none: the Gslb alone)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import Field, model_validator

from harness import k8gb
from harness.config import (
    Failover,
    Invalid,
    Model,
    PositiveDuration,
    Text,
    UrlPath,
    check_templates,
    fill_json,
)
from harness.errors import FleetDrillError
from harness.infra.command import render, run_command
from harness.infra.steps import places
from harness.strategies import Strategy, register
from harness.strategies.command import PLACEHOLDERS

if TYPE_CHECKING:
    from harness.config import App
    from harness.fleet import FleetAccess
    from harness.timeline import Timeline


class PromoteError(FleetDrillError):
    """The app's promote call failed."""


class PromoteCall(Model):
    """The HTTP call that makes the app's data primary in the cluster taking over."""

    path: UrlPath
    """A path on the endpoint of the cluster taking over."""
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    """The request's method; a 2xx answer means promoted."""
    body: dict[str, Any] = {}
    """The JSON body; "$epoch" becomes the new epoch (one above every reachable cluster's, see epoch_path)."""
    epoch_path: UrlPath | None = None
    """A path on every cluster's endpoint answering a JSON object with the cluster's fencing epoch (term,
    timeline) at epoch_field: promotion outranks every epoch it finds, so a primary that never stepped
    down is fenced when it returns."""
    epoch_field: Text = "epoch"
    """The field of epoch_path's answer, and of the promote call's answer, holding the epoch."""

    @model_validator(mode="after")
    def _epoch_known(self) -> PromoteCall:
        if self.epoch_path is None and "$epoch" in json.dumps(self.body):
            raise Invalid("epoch_path set when the body uses $epoch", None, ("epoch_path",))
        return self


class PromoteFailover(Failover):
    """The promote strategy's settings."""

    promote: PromoteCall | None = None
    """For strategy promote: the HTTP call that makes the app's data primary in the cluster taking over
    (none, and no promote_command: the Gslb moves traffic, the app's data needs no promotion)."""
    promote_command: Annotated[tuple[Text, ...], Field(min_length=1)] | None = None
    """For strategy promote, instead of the promote call: your script that makes the app's data primary in
    the cluster taking over (e.g. a database operator's promote), an argv list (no shell) with {app},
    {namespace}, {cluster} and its {context}, {region}, {zones} and {cloud[KEY]} filled in; exit status 0
    means promoted."""
    promote_timeout: PositiveDuration = 300.0
    """Longest the promote command may run."""

    @model_validator(mode="after")
    def _one_promote_step(self) -> PromoteFailover:
        if self.promote is not None and self.promote_command is not None:
            both = ("promote_command",)
            raise Invalid("one of promote, promote_command (not both)", self.promote_command, both)
        check_templates(PLACEHOLDERS, list(self.promote_command or ()), ("promote_command",))
        return self


def newest_epoch(app: App, call: PromoteCall) -> int:
    """The highest epoch any reachable cluster's app reports at its epoch_path (0 when none answers)."""

    def epoch(url: str) -> int:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}{call.epoch_path}", timeout=1) as response:
                return int(json.loads(response.read())[call.epoch_field])
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return 0  # a lost or cut-off cluster: the newer epoch fences it when it returns

    with ThreadPoolExecutor(max_workers=max(1, len(app.endpoints))) as pool:
        return max([0, *pool.map(epoch, app.endpoints.values())])


def promote_data(app: App, call: PromoteCall, cluster: str) -> int | None:
    """Make the app's data primary in `cluster` by the fleet file's promote call, at an epoch above every
    reachable cluster's when it names an epoch_path (so a primary that never stepped down is outranked
    too); return the epoch the app answers (None without an epoch_path)."""
    url = app.endpoints.get(cluster)
    if not url:
        raise PromoteError(f"app {app.name}: no endpoint for cluster {cluster} in the fleet file")
    values = {"epoch": newest_epoch(app, call) + 1} if call.epoch_path else {}
    request = urllib.request.Request(
        f"{url.rstrip('/')}{call.path}",
        data=json.dumps(fill_json(call.body, values)).encode(),
        method=call.method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = response.read()
        return int(json.loads(answer)[call.epoch_field]) if call.epoch_path else None
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as error:
        raise PromoteError(
            f"promoting {app.name} in {cluster} ({call.method} {call.path}): {error}"
        ) from error


def discover_gslbs(access: FleetAccess, app: App) -> None:
    """Learn the API group every cluster serves the Gslb in (cached for the run); a cluster that cannot
    be asked now is asked again when the Gslb moves."""
    access.each(lambda cluster: k8gb.gslb_group(access, cluster))


def promote(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    """Fail over to `cluster`: traffic switch through the Gslb, then the data primary; each step timed."""
    with timeline.phase("traffic switch", cluster=cluster):
        updated = k8gb.move_primary(access, app, cluster)
    timeline.record("gslb.updated", cluster=cluster, detail={"clusters": updated})
    settings = cast(PromoteFailover, app.failover)  # the fleet's Failover model derives from every strategy's
    if settings.promote_command is not None:
        values = {"app": app.name, "namespace": app.namespace, "cluster": cluster}
        values |= {"context": access.fleet.context_for(access.fleet.cluster(cluster))}
        argv = render(settings.promote_command, values | places(access.fleet)[cluster])
        with timeline.phase("promote", cluster=cluster):
            run_command(argv, f"apps.{app.name}.failover.promote_command", settings.promote_timeout)
        timeline.record("data.promoted", cluster=cluster, detail={"epoch": None, "program": argv[0]})
        return
    if settings.promote is None:  # the Gslb moves traffic; the app's data needs no promotion
        return
    with timeline.phase("promote", cluster=cluster):
        epoch = promote_data(app, settings.promote, cluster)
    timeline.record("data.promoted", cluster=cluster, detail={"epoch": epoch})


PROMOTE = register(
    Strategy(
        "promote",
        promote,
        events=("gslb.updated", "data.promoted"),
        does="point the k8gb Gslb at the cluster, then make the app's data primary there with the `promote`"
        " call or the `promote_command` when set",
        settings=PromoteFailover,
        permissions=(k8gb.PATCH,),  # the Gslb, in every cluster
        prepare=discover_gslbs,
    )
)
