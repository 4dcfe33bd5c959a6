"""A permission the harness needs from a cluster's API server, as RBAC grants it: a verb on a resource (of an
API group) in a namespace scope.

Each part that calls the Kubernetes API declares what it calls next to its code: a fault kind's
`permissions` (harness.faults), each failover strategy's (harness.strategies), failover.BACKUP_PERMISSIONS
and RESTORE_PERMISSIONS, lease.LEASE_PERMISSIONS, fleet.SERVICE_PROXY_PERMISSIONS,
steadystate.AS_FOUND_PERMISSIONS, and the gate drills' reads (preflight.readiness_permissions and
hygiene_permissions, parity.permissions). harness.needs gathers those the selected drills use; harness.rbac
asks each cluster for them (a resource that moved between API groups in the group the cluster serves it in;
LISTED and CUSTOM as the cluster's API discovery and CRDs spell them out).
"""

from dataclasses import dataclass, replace

APP = "{app}"
"""The namespace scope of the drill's app (apps[].namespace)."""
VELERO = "{velero}"
"""The namespace Velero runs in (velero.namespace)."""
EVERY = "*"
"""Every namespace: one the drill makes, or any; only a ClusterRole (bound cluster-wide) grants it."""
CLUSTER = ""
"""No namespace: a cluster-scoped resource (nodes, namespaces)."""
LISTED = "<every namespaced resource>"
"""A resource (of no group) standing for every namespaced resource the cluster lists, of every API group
(integrity.listed_resources, by API discovery): asked one by one."""
CUSTOM = "<every namespaced custom resource>"
"""A resource (of no group) standing for the resource of every namespaced CRD the active cluster has
(namespace_objects.custom_kinds: parity lists those in each cluster it compares): asked one by one."""


@dataclass(frozen=True)
class Permission:
    """`verb` on `resource` ("pods", or "pods/eviction" for a subresource) of API `group` ("" the core
    group) in `namespace`: APP, VELERO, EVERY, CLUSTER, or a namespace's name. A resource that moved between
    API groups lists in `served_in` the group versions that may serve it ("k8gb.io/v1beta1",
    "k8gb.absa.oss/v1beta1"): it is asked in the group each cluster serves it in (`in_groups`)."""

    verb: str
    resource: str
    group: str = ""
    namespace: str = CLUSTER
    served_in: tuple[str, ...] = ()

    def in_groups(self, group_versions: tuple[str, ...]) -> tuple["Permission", ...]:
        """The permission in each of `group_versions`' groups (those a cluster serves it in), as asked."""
        groups = dict.fromkeys(group_version.split("/")[0] for group_version in group_versions)
        return tuple(replace(self, group=group, served_in=()) for group in groups)

    def resolved(self, app_namespace: str, velero_namespace: str) -> "Permission":
        """The permission with APP and VELERO replaced by the namespaces they stand for."""
        named = {APP: app_namespace, VELERO: velero_namespace}
        return replace(self, namespace=named.get(self.namespace, self.namespace))

    def text(self) -> str:
        """In words: "delete pods in namespace orders", "patch nodes", "get services/proxy in every
        namespace", "patch gslbs.k8gb.io in namespace orders", "list every namespaced resource in namespace
        orders"."""
        resource, _, sub = self.resource.strip("<>").partition("/")
        what = f"{resource}.{self.group}" if self.group else resource
        what += f"/{sub}" if sub else ""
        where = {CLUSTER: "", EVERY: " in every namespace"}.get(self.namespace)
        return f"{self.verb} {what}{f' in namespace {self.namespace}' if where is None else where}"


def verbs(verbs: str, resource: str, group: str = "", namespace: str = CLUSTER) -> tuple[Permission, ...]:
    """One permission per verb of `verbs` (space-separated) on the same resource and scope."""
    return tuple(Permission(verb, resource, group, namespace) for verb in verbs.split())
