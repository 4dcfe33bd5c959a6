"""The k8gb Gslb resource the promote strategy moves: which API group a cluster serves it in, found by API
discovery, and the patch that points it at a cluster.

k8gb moved its API group from k8gb.absa.oss to k8gb.io (k8gb-io/k8gb#2203); a cluster may serve either or
both during the migration (a migrated legacy object is read-only), so the group is asked of each cluster's
API (/apis, then the group version's resources) once per FleetAccess, k8gb.io preferred where both serve
gslbs. Patching a group found this way, a 403 or 404 is what it says, never a reason to try the other.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from kubernetes import client

from harness.fleet import MID_DRILL_TIMEOUT, ClusterError, FleetAccess
from harness.permissions import APP, Permission

if TYPE_CHECKING:
    from harness.config import App

GROUPS, VERSION, PLURAL = ("k8gb.io", "k8gb.absa.oss"), "v1beta1", "gslbs"
"""k8gb's API groups, the canonical one first; the version and resource of its Gslb."""
GROUP_VERSIONS = tuple(f"{group}/{VERSION}" for group in GROUPS)
CHANGED_AT = "fleetdrill.io/changed-at"
"""The annotation that orders Gslb changes (the newest wins)."""
PATCH = Permission("patch", PLURAL, GROUPS[0], APP, served_in=GROUP_VERSIONS)
"""Patching the app's Gslb, in the group the cluster serves gslbs in (both when it cannot be found out)."""


class GslbError(ClusterError):
    """The Gslb could not be found or changed in a cluster (or in none)."""


def gslb_group(access: FleetAccess, cluster: str) -> str:
    """The API group `cluster` serves gslbs in (k8gb.io where both do); GslbError naming the cluster and both
    groups where neither does."""
    served = access.served(cluster, PLURAL, GROUP_VERSIONS)
    if not served:
        raise GslbError(
            f"cluster {cluster}: serves no Gslb API ({PLURAL} in neither {' nor '.join(GROUP_VERSIONS)}):"
            " is k8gb installed there?"
        )
    return served[0].split("/")[0]


def patch_gslb(access: FleetAccess, cluster: str, app: App, patch: dict) -> str:
    """Patch the app's Gslb in its namespace in `cluster`, under the group the cluster serves; the group."""
    group = gslb_group(access, cluster)
    api = client.CustomObjectsApi(access.api_client(cluster))
    try:
        api.patch_namespaced_custom_object(
            group, VERSION, app.namespace, PLURAL, app.name, patch, _request_timeout=MID_DRILL_TIMEOUT
        )
    except client.ApiException as error:
        if error.status == 404:
            raise GslbError(
                f"cluster {cluster}: no Gslb {app.namespace}/{app.name} in {group}/{VERSION}"
            ) from None
        raise
    return group


def move_primary(access: FleetAccess, app: App, cluster: str) -> list[str]:
    """Point the app's Gslb at `cluster` in every reachable cluster; the clusters updated (GslbError when
    none took it)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {
        "metadata": {"annotations": {CHANGED_AT: stamp}},
        "spec": {"strategy": {"primaryGeoTag": cluster}},
    }

    def update(name: str) -> str:
        patch_gslb(access, name, app, patch)
        return name

    results = access.each(update)
    updated = [name for name, result in results.items() if not isinstance(result, ClusterError)]
    if not updated:
        raise GslbError(f"no cluster took the Gslb change: {'; '.join(map(str, results.values()))}")
    return updated
