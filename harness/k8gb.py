"""The k8gb Gslb resource the promote strategy moves, and the patch that points it at a cluster.

k8gb's API group is k8gb.io since k8gb-io/k8gb#2203; k8gb.absa.oss, the legacy group, is served during the
migration (a migrated legacy object is read-only), so the canonical group comes first and the legacy one is
the fallback.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from kubernetes import client

from harness.fleet import ClusterError, FleetAccess
from harness.permissions import APP, Permission

if TYPE_CHECKING:
    from harness.config import App

GROUPS, VERSION, PLURAL = ("k8gb.io", "k8gb.absa.oss"), "v1beta1", "gslbs"
"""k8gb's API groups, the canonical one first; the version and resource of its Gslb."""
CHANGED_AT = "fleetdrill.io/changed-at"
"""The annotation that orders Gslb changes (the newest wins)."""
PATCH = Permission("patch", PLURAL, GROUPS[0], APP)
"""Patching the app's Gslb; the canonical group is always tried first (a denial there stops it), the legacy
one is reached only where k8gb.io is not served."""


class GslbError(ClusterError):
    """The Gslb could not be found or changed in a cluster (or in none)."""


def patch_gslb(api: client.CustomObjectsApi, app: App, patch: dict) -> str:
    """Patch the app's Gslb in its namespace under k8gb's canonical API group, else the legacy one (a group
    the cluster does not serve, or without the object, answers 404); returns the group patched."""
    for group in GROUPS:
        try:
            api.patch_namespaced_custom_object(
                group, VERSION, app.namespace, PLURAL, app.name, patch, _request_timeout=(1, 3)
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
            continue
        return group
    raise GslbError(f"no Gslb {app.namespace}/{app.name} in API group {' or '.join(GROUPS)} ({VERSION})")


def move_primary(access: FleetAccess, app: App, cluster: str) -> list[str]:
    """Point the app's Gslb at `cluster` in every reachable cluster; the clusters updated (GslbError when
    none took it)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {
        "metadata": {"annotations": {CHANGED_AT: stamp}},
        "spec": {"strategy": {"primaryGeoTag": cluster}},
    }

    def update(name: str) -> str:
        patch_gslb(client.CustomObjectsApi(access.api_client(name)), app, patch)
        return name

    results = access.each(update)
    updated = [name for name, result in results.items() if not isinstance(result, ClusterError)]
    if not updated:
        raise GslbError(f"no cluster took the Gslb change: {'; '.join(map(str, results.values()))}")
    return updated
