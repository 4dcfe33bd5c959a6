"""Whether each cluster lets the kubeconfig's identity do what the selected drills need (harness.needs): one
SelfSubjectAccessReview (authorization.k8s.io/v1) per permission; one line per permission denied, naming
who needs it and whom to grant it to, one per cluster that could not be asked, one summary when all are
allowed. Clusters already reported as unreachable are not asked again. A resource standing for many
(permissions.LISTED, CUSTOM) is asked as each the cluster has, found as the drill's code finds them."""

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from kubernetes import client

from harness import integrity, namespace_objects
from harness.config import Fleet
from harness.errors import ConfigError
from harness.fleet import NETWORK_ERRORS, ClusterError, FleetAccess, cause
from harness.needs import Need
from harness.permissions import CLUSTER, CUSTOM, EVERY, LISTED, Permission

TIMEOUT_S = 10


def _listed(access: FleetAccess, cluster: str) -> list[tuple[str, str]]:
    listed = integrity.listed_resources(access.api_client(cluster))
    return [(version.rpartition("/")[0], found["name"]) for version, found in listed]


def _custom(access: FleetAccess, cluster: str) -> list[tuple[str, str]]:
    primary = access.api_client(access.fleet.primary().name)
    return [(kind.group, kind.plural) for kind in namespace_objects.custom_kinds(primary)]


SPELLED: dict[str, tuple[str, Callable[[FleetAccess, str], list[tuple[str, str]]]]] = {
    LISTED: ("API discovery", _listed),
    CUSTOM: ("listing the active cluster's customresourcedefinitions.apiextensions.k8s.io", _custom),
}
"""How a resource standing for many is spelled out for a cluster, as the drills' code finds them: what
it is found by, and how ((group, resource) pairs)."""


@dataclass(frozen=True)
class Answer:
    """What the API server answered for one permission: allowed, explicitly denied (an authorizer said no,
    whatever RBAC grants), and its reason or evaluation error, if any."""

    allowed: bool
    denied: bool
    reason: str


def ask(api: client.ApiClient, permission: Permission) -> Answer:
    """One SelfSubjectAccessReview: may this client's identity do `permission` (namespace resolved)?"""
    resource, _, subresource = permission.resource.partition("/")
    namespace = None if permission.namespace in (CLUSTER, EVERY) else permission.namespace
    attributes = client.V1ResourceAttributes(
        verb=permission.verb,
        group=permission.group,
        resource=resource,
        subresource=subresource or None,
        namespace=namespace,
    )
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
    )
    status = client.AuthorizationV1Api(api).create_self_subject_access_review(
        review, _request_timeout=TIMEOUT_S
    ).status or client.V1SubjectAccessReviewStatus(allowed=False, reason="the answer had no status")
    reason = " ".join(filter(None, (status.reason, status.evaluation_error)))
    return Answer(bool(status.allowed), bool(status.denied), reason)


def identity(api: client.ApiClient) -> str | None:
    """The user the API server takes this client for (SelfSubjectReview, Kubernetes 1.28+); None when it
    cannot say."""
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview(), _request_timeout=TIMEOUT_S
        )
    except (client.ApiException, *NETWORK_ERRORS):
        return None
    user = review.status.user_info if review.status else None
    return user.username if user and user.username else None


def _who(api: client.ApiClient, context: str) -> str:
    name = identity(api)
    return f"user {name}" if name else f"the identity of context {context}"


def grant(permission: Permission, who: str) -> str:
    """Whom to grant a permission, and with what RBAC object."""
    if permission.namespace in (CLUSTER, EVERY):
        return f"grant it to {who} (a ClusterRole and a ClusterRoleBinding)"
    return f"grant it to {who} (a Role in {permission.namespace}, or a ClusterRole, and a binding)"


@dataclass(frozen=True)
class Finding:
    """One problem in one cluster: a permission denied, or the cluster could not be asked."""

    cluster: str
    text: str

    def line(self) -> str:
        return f"FAIL {self.cluster}: {self.text}"


def denied(need: Need, answer: Answer, who: str) -> Finding:
    """The line of a permission the cluster refuses, and its fix."""
    if answer.denied:
        said = f" ({answer.reason})" if answer.reason else ""
        fix = f"an authorizer denies it explicitly{said}: change that policy (RBAC cannot allow it)"
    else:
        said = f"; the API server said: {answer.reason}" if answer.reason else ""
        fix = grant(need.permission, who) + said
    return Finding(need.cluster, f"cannot {need.permission.text()} (needed by: {need.why()}): {fix}")


def spelled(access: FleetAccess, need: Need) -> tuple[Need, ...] | tuple[Finding]:
    """A need of a resource standing for many (LISTED, CUSTOM) as one need per resource the cluster has; a
    Finding when it cannot be told which they are."""
    permission = need.permission
    how, spell = SPELLED[permission.resource]
    try:
        found = spell(access, need.cluster)
    except (client.ApiException, *NETWORK_ERRORS) as error:
        problem = cause(error)[0]
    except (integrity.IntegrityError, ConfigError) as error:
        problem = str(error)
    else:
        each = dict.fromkeys(replace(permission, group=group, resource=name) for group, name in found)
        return tuple(replace(need, permission=p) for p in each)
    text = f"cannot ask for {permission.text()}: {how} failed: {problem} (needed by: {need.why()})"
    return (Finding(need.cluster, text),)


def as_asked(access: FleetAccess, need: Need) -> tuple[Need, ...] | tuple[Finding]:
    """The need as its cluster is asked: a resource standing for many as each the cluster has (`spelled`);
    a permission whose resource moved between API groups in the group the cluster serves it in (the first
    of `served_in` it serves), in each of them when API discovery cannot say; a Finding when the cluster
    serves it in none."""
    permission = need.permission
    if permission.resource in SPELLED:
        return spelled(access, need)
    if not permission.served_in:
        return (need,)
    resource = permission.resource.partition("/")[0]
    try:
        served = access.served(need.cluster, resource, permission.served_in)[:1]
    except (client.ApiException, *NETWORK_ERRORS, ValueError):
        served = permission.served_in
    if not served:
        where = " nor ".join(permission.served_in)
        text = f"cannot {permission.verb} {resource}: served in neither {where} (needed by: {need.why()})"
        return (Finding(need.cluster, text),)
    return tuple(replace(need, permission=p) for p in permission.in_groups(served))


def merged(asked: Iterable[Need | Finding]) -> list[Need | Finding]:
    """The needs as asked, each permission once (where it first came) with all who need it (a resource
    standing for many may spell out one needed on its own too)."""
    found: list[Need | Finding] = []
    at: dict[Permission, int] = {}
    for item in asked:
        if isinstance(item, Finding):
            found.append(item)
        elif item.permission in at:
            first = found[at[item.permission]]
            assert isinstance(first, Need)
            users = tuple(dict.fromkeys(first.needed_by + item.needed_by))
            found[at[item.permission]] = replace(first, needed_by=users)
        else:
            at[item.permission] = len(found)
            found.append(item)
    return found


@dataclass(frozen=True)
class Review:
    """What the clusters answered for the selected drills' needs."""

    findings: tuple[Finding, ...]
    asked: int
    """Permissions asked (one per need of a cluster that was asked)."""
    clusters: tuple[str, ...]
    """The clusters asked."""
    skipped: tuple[str, ...]
    """The clusters not asked (already reported unreachable)."""

    def lines(self, drills: int) -> list[str]:
        """One line per finding; when there is none, one summary line (nothing asked is no pass)."""
        if self.findings:
            return [finding.line() for finding in self.findings]
        skipped = f"{', '.join(self.skipped)} (unreachable, above)" if self.skipped else ""
        if not self.clusters:
            none = "the selected drills declare no part that needs one (their drill marker's uses)"
            return [f"SKIP no permission asked: {skipped or none}"]
        asked = f"{self.asked} asked in {len(self.clusters)} cluster(s)" + (
            f"; not asked: {skipped}" if skipped else ""
        )
        return [f"ok   every permission the {drills} selected drill(s) need is allowed ({asked})"]


def review(fleet: Fleet, access: FleetAccess, needs: Sequence[Need], skip: Collection[str] = ()) -> Review:
    """Ask every cluster (but those in `skip`) for its needs, the clusters at once."""
    by_cluster: dict[str, list[Need]] = {}
    for need in needs:
        if need.cluster not in skip:
            by_cluster.setdefault(need.cluster, []).append(need)

    def check(cluster: str) -> list[Finding]:
        api, found, who = access.api_client(cluster), [], ""
        for need in merged(asked for wanted in by_cluster[cluster] for asked in as_asked(access, wanted)):
            if isinstance(need, Finding):
                found.append(need)
                continue
            try:
                answer = ask(api, need.permission)
            except (client.ApiException, *NETWORK_ERRORS) as error:
                problem, what = cause(error)
                text = f"permissions not asked: SelfSubjectAccessReview: {problem}; check {what}"
                return [*found, Finding(cluster, text)]
            except ValueError as error:  # the client refused the answer: no SelfSubjectAccessReview
                text = f"SelfSubjectAccessReview answered what the client cannot read ({error})"
                return [*found, Finding(cluster, f"permissions not asked: {text}")]
            if not answer.allowed:
                who = who or _who(api, fleet.context_for(cluster))
                found.append(denied(need, answer, who))
        return found

    findings: list[Finding] = []
    names = list(by_cluster)
    for cluster, result in (access.each(check, names) if names else {}).items():
        if isinstance(result, ClusterError):
            findings.append(Finding(cluster, f"permissions not asked: {result}"))
        else:
            findings += result
    skipped = tuple(name for name in dict.fromkeys(need.cluster for need in needs) if name in skip)
    asked = sum(len(by_cluster[name]) for name in names)
    return Review(tuple(findings), asked, tuple(names), skipped)
