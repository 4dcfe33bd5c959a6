"""Failover strategies, each step on the timeline: observe (the GSLB moves traffic by itself) and
promote (move the k8gb Gslb's primary, then make the app's data primary on the target cluster)."""

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from harness.config import App
from harness.errors import FleetDrillError
from harness.fleet import ClusterError, FleetAccess
from harness.timeline import Timeline

# The k8gb Gslb resource (k8gb's documented v1beta1 API) and the annotation that orders changes.
GSLB_GROUP, GSLB_VERSION, GSLB_PLURAL = "k8gb.absa.oss", "v1beta1", "gslbs"
CHANGED_AT = "fleetdrill.io/changed-at"
POLL_S = 0.05


class FailoverError(FleetDrillError):
    """A failover step could not be taken."""


def poll(condition: Callable[[], bool], deadline_s: float) -> bool:
    """Poll condition until true (True) or the deadline passes (False)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def wait_until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll condition until true; FailoverError naming `what` at the deadline."""
    if not poll(condition, deadline_s):
        raise FailoverError(f"{what}: not done after {deadline_s:g} s")


def move_gslb_primary(access: FleetAccess, app: App, cluster: str) -> list[str]:
    """Point the app's Gslb at `cluster` in every reachable cluster; return the clusters updated."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {
        "metadata": {"annotations": {CHANGED_AT: stamp}},
        "spec": {"strategy": {"primaryGeoTag": cluster}},
    }

    def update(name: str) -> str:
        client.CustomObjectsApi(access.api_client(name)).patch_namespaced_custom_object(
            GSLB_GROUP, GSLB_VERSION, app.namespace, GSLB_PLURAL, app.name, patch, _request_timeout=(1, 3)
        )
        return name

    results = access.each(update)
    updated = [name for name, result in results.items() if not isinstance(result, ClusterError)]
    if not updated:
        raise FailoverError(f"no cluster took the Gslb change: {'; '.join(map(str, results.values()))}")
    return updated


def newest_epoch(app: App) -> int:
    """The highest epoch any reachable cluster's app reports on GET {endpoint}/status (0 when none)."""

    def epoch(url: str) -> int:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=1) as response:
                return int(json.loads(response.read())["epoch"])
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return 0  # a lost or cut-off cluster: the newer epoch fences it when it returns

    with ThreadPoolExecutor(max_workers=max(1, len(app.endpoints))) as pool:
        return max([0, *pool.map(epoch, app.endpoints.values())])


def promote_data(app: App, cluster: str) -> int:
    """POST {endpoint}/promote on the app in `cluster` (the sample app's API) at an epoch above every
    reachable cluster's, so a primary that never stepped down is outranked too; return its new epoch."""
    url = app.endpoints.get(cluster)
    if not url:
        raise FailoverError(f"app {app.name}: no endpoint for cluster {cluster} in the fleet file")
    body = json.dumps({"epoch": newest_epoch(app) + 1}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/promote", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(json.loads(response.read())["epoch"])
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        raise FailoverError(f"promoting {app.name} in {cluster}: {error}") from error


def app_serves(app: App, cluster: str) -> bool:
    """The app answers its health path in `cluster`."""
    try:
        with urllib.request.urlopen(
            f"{app.endpoints[cluster].rstrip('/')}{app.health_path}", timeout=1
        ) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def fail_back(access: FleetAccess, app: App, cluster: str, timeline: Timeline, deadline_s: float) -> None:
    """Once the original primary serves again, make it primary again (a newer epoch, so never two)."""
    with timeline.phase("failback", cluster=cluster):
        wait_until(lambda: app_serves(app, cluster), deadline_s, f"{app.name} serving again in {cluster}")
        promote(access, app, cluster, timeline)


def promote(access: FleetAccess, app: App, cluster: str, timeline: Timeline) -> None:
    """Fail over to `cluster`: traffic switch through the Gslb, then the data primary; each step timed."""
    with timeline.phase("traffic switch", cluster=cluster):
        updated = move_gslb_primary(access, app, cluster)
    timeline.record("gslb.updated", cluster=cluster, detail={"clusters": updated})
    with timeline.phase("promote", cluster=cluster):
        epoch = promote_data(app, cluster)
    timeline.record("data.promoted", cluster=cluster, detail={"epoch": epoch})
