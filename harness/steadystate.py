"""The fleet as a drill found it, and the wait after the drill until it is so again.

Before a drill: which of each app's endpoints answer (through the app contract's accepted statuses), who
serves its global endpoint (where the app declares a served-by identity), whether its data path takes a
sentinel write (where it declares sentinels: one write through its global endpoint, to a stream of its
own), and which of its pods are not settled (Pending or ending). After the drill has reverted its faults
and failed back, the fleet must come back to that (or its global traffic to an active cluster), within a
deadline; what did not come back is named, so the next drill's steady state never inherits this drill's
damage.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from urllib.parse import urljoin

from kubernetes.client import CoreV1Api

from harness import appcontract
from harness.config import App, Fleet
from harness.data import new_seq_base
from harness.fleet import FleetAccess
from harness.permissions import APP, Permission
from harness.sentinels import GLOBAL, Attempt, Where, store_for
from harness.traffic import status_codes

POLL_S = 0.5
PROBE_TIMEOUT_S = 2.0
API_TIMEOUT_S = 10.0
AS_FOUND_STREAM = "fleetdrill-as-found"
"""The sentinel stream of the writes that look at an app's data path before and after a drill."""
AS_FOUND_PERMISSIONS = (Permission("list", "pods", namespace=APP),)
"""What the fleet as found (unsettled_pods) reads in each cluster the app has an endpoint in."""


@dataclass(frozen=True)
class Answer:
    """One look at an endpoint: did it answer as the app declares, and who served it (when declared)."""

    ok: bool
    served_by: str | None


@dataclass(frozen=True)
class Snapshot:
    """What a drill found, per app: (app, endpoint) -> answer, and (app, cluster) -> unsettled pods."""

    answers: dict[tuple[str, str], Answer]
    unsettled: dict[tuple[str, str], frozenset[str]]
    home: frozenset[str] = frozenset()
    """The fleet's active clusters: a global endpoint that moved back to one of them has recovered (the drill
    found the fleet failing over or back), it is not damage."""
    writes: dict[str, Attempt] = field(default_factory=dict)
    """App -> one sentinel write through its global endpoint (apps that declare sentinels)."""


Look = Callable[[App, str], Answer]
"""How to look at one URL of an app."""
Write = Callable[[App, str], Attempt]
"""How to make one sentinel write through an app's global endpoint (its sentinels' place in the fleet file
given, for a configuration error)."""


def look(app: App, url: str) -> Answer:
    """GET the app's health path at `url`: ok on a status the app accepts; its served-by identity."""
    try:
        with urllib.request.urlopen(urljoin(url, app.health_path), timeout=PROBE_TIMEOUT_S) as answer:
            status, headers = answer.status, answer.headers
    except urllib.error.HTTPError as error:
        status, headers = error.code, error.headers
    except (urllib.error.URLError, OSError):
        return Answer(False, None)
    identity = app.served_by.header if app.served_by is not None else None
    served_by = headers.get(identity) if identity else None
    accepted = any(status in status_codes(spec) for spec in app.accepted_statuses)
    return Answer(accepted, (served_by or "").split("/")[0] or None)


def write(app: App, where_in_file: str) -> Attempt:
    """One sentinel write through the app's global endpoint (the postgresql adapter: its primary): a data
    path that takes none (a primary left read-only, a store that refuses) is damage a drill must not leave."""
    channel = store_for(app, where_in_file, appcontract.identity_header(app)).channel(
        Where(GLOBAL, app.global_endpoint or "")
    )
    try:
        return channel.send(new_seq_base(), AS_FOUND_STREAM)
    finally:
        channel.close()


def endpoints(app: App) -> dict[str, str]:
    """The app's endpoints by name: "global" and each cluster's."""
    found = {"global": app.global_endpoint} if app.global_endpoint else {}
    return found | dict(app.endpoints)


def unsettled_pods(access: FleetAccess, app: App, cluster: str) -> frozenset[str]:
    """The app's pods in `cluster` that are Pending or ending."""
    pods = (
        CoreV1Api(access.api_client(cluster))
        .list_namespaced_pod(app.namespace, _request_timeout=API_TIMEOUT_S)
        .items
    )
    return frozenset(
        pod.metadata.name
        for pod in pods
        if pod.metadata.deletion_timestamp is not None or pod.status.phase == "Pending"
    )


def take(
    fleet: Fleet,
    access: FleetAccess,
    look_at: Look = look,
    write_to: Write = write,
    writing: Collection[str] | None = None,
) -> Snapshot:
    """The fleet as it is now, for every app of the fleet file; a sentinel write for each app that declares
    sentinels (only those named in `writing`, when given)."""
    answers, unsettled, writes = {}, {}, {}
    for index, app in enumerate(fleet.apps):
        for name, url in endpoints(app).items():
            answers[(app.name, name)] = look_at(app, url)
        if app.sentinels is not None and (writing is None or app.name in writing):
            writes[app.name] = write_to(app, f"apps[{index}].sentinels")
        for cluster in app.endpoints:
            try:
                unsettled[(app.name, cluster)] = unsettled_pods(access, app, cluster)
            except Exception:  # a cluster whose API does not answer has nothing settled to compare
                continue
    return Snapshot(answers, unsettled, active_clusters(fleet), writes)


def active_clusters(fleet: Fleet) -> frozenset[str]:
    """The clusters the fleet file makes active: where global traffic belongs."""
    return frozenset(c.name for c in fleet.clusters if c.role == "active")


def differences(before: Snapshot, now: Snapshot) -> list[str]:
    """What the drill found that is not so now, one phrase each."""
    found = []
    for (app, name), was in before.answers.items():
        answer = now.answers.get((app, name), Answer(False, None))
        if was.ok and not answer.ok:
            found.append(f"{app}: the {name} endpoint does not answer as before")
        elif was.ok and was.served_by and answer.served_by not in {was.served_by, *before.home}:
            found.append(f"{app}: the {name} endpoint is served by {answer.served_by}, not {was.served_by}")
    for app, was in before.writes.items():
        attempt = now.writes.get(app)
        if was.outcome == "acked" and (attempt is None or attempt.outcome != "acked"):
            why = f" ({attempt.outcome}: {attempt.error})" if attempt and attempt.error else ""
            found.append(f"{app}: its data path takes no sentinel write as before{why}")
    for (app, cluster), was in before.unsettled.items():
        extra = now.unsettled.get((app, cluster), frozenset()) - was
        if (app, cluster) not in now.unsettled:
            found.append(f"{app}: {cluster}'s API server does not answer")
        elif extra:
            found.append(f"{app}: pods in {cluster} Pending or ending: {', '.join(sorted(extra)[:5])}")
    return found


def wait_as_found(
    fleet: Fleet,
    access: FleetAccess,
    before: Snapshot,
    deadline_s: float,
    look_at: Look = look,
    write_to: Write = write,
) -> list[str]:
    """Poll until the fleet is as `before` again; what still differs at the deadline (empty: as found)."""
    deadline = time.monotonic() + deadline_s
    writing = {app for app, attempt in before.writes.items() if attempt.outcome == "acked"}
    while True:
        left = differences(before, take(fleet, access, look_at, write_to, writing))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(POLL_S)
