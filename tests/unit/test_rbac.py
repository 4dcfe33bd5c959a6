"""The permission check of `fleetdrill doctor`: SelfSubjectAccessReviews against a fake API server, one line
per permission denied (with who needs it and whom to grant it to), one per cluster that cannot be asked, one
summary when every permission is allowed."""

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client

from harness import cli, preflight, rbac
from harness.config import Fleet, dump_fleet
from harness.fleet import FleetAccess, UnreachableError
from harness.needs import Need
from harness.permissions import APP, CUSTOM, EVERY, LISTED, Permission
from harness.preflight import Readiness
from tests.kubefake import FakeAccess, Response

FLEET = Fleet.model_validate(
    {
        "name": "unit",
        "clusters": [
            {"name": "east", "context": "east-admin", "region": "us-east", "role": "active"},
            {"name": "west", "region": "eu-west", "role": "passive"},
        ],
        "apps": [{"name": "shop", "namespace": "shop", "workload": "deployment/shop"}],
    }
)
DELETE_PODS = Permission("delete", "pods", namespace=APP).resolved("shop", "velero")
EVICT = Permission("create", "pods/eviction", namespace=EVERY)
PATCH_NODES = Permission("patch", "nodes")
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
WHO_AM_I = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


class FakeAuthz(client.ApiClient):
    """An API server answering SelfSubjectAccessReviews: allowed unless `refused` holds the attributes (verb,
    resource[/subresource], namespace or "") as (explicitly denied, reason); its SelfSubjectReview names
    `user` (None: 404, as before Kubernetes 1.28). `failing`: every review fails with this HTTP status, or
    with an OSError when 0. `asked`: the attributes of every review, in order."""

    def __init__(
        self,
        refused: dict[tuple[str, str, str], tuple[bool, str]] | None = None,
        user: str | None = "alice",
        failing: int | None = None,
    ) -> None:
        super().__init__(client.Configuration(host="http://fake"))
        self.refused, self.user, self.failing = refused or {}, user, failing
        self.asked: list[dict[str, Any]] = []

    def request(self, method: str, url: str, *args: Any, body: Any = None, **kwargs: Any) -> Response:
        path = urlsplit(url).path
        if path == WHO_AM_I and self.user is not None:
            return Response(201, {"status": {"userInfo": {"username": self.user}}})
        if path != SSAR:
            raise client.ApiException(http_resp=Response(404, {"kind": "Status"}))
        if self.failing == 0:
            raise ConnectionRefusedError(111, "Connection refused")
        if self.failing is not None:
            raise client.ApiException(http_resp=Response(self.failing, {"kind": "Status"}))
        attributes = body["spec"]["resourceAttributes"]
        self.asked.append(attributes)
        sub = attributes.get("subresource")
        key = (
            attributes["verb"],
            attributes["resource"] + (f"/{sub}" if sub else ""),
            attributes.get("namespace", ""),
        )
        denied, reason = self.refused.get(key, (False, ""))
        status = {"allowed": key not in self.refused, "denied": denied, "reason": reason}
        return Response(201, {"spec": body["spec"], "status": status})


def need(cluster: str, permission: Permission, *by: tuple[str, str]) -> Need:
    return Need(cluster, permission, by or (("pod-kill", "test_kill"),))


def lines(review: rbac.Review) -> list[str]:
    return review.lines(2)


def test_every_permission_allowed_is_one_summary_line() -> None:
    east, west = FakeAuthz(), FakeAuthz()
    needs = [need("east", DELETE_PODS), need("east", EVICT), need("west", PATCH_NODES)]
    review = rbac.review(FLEET, FakeAccess(FLEET, {"east": east, "west": west}), needs)
    assert lines(review) == [
        "ok   every permission the 2 selected drill(s) need is allowed (3 asked in 2 cluster(s))"
    ]
    assert east.asked == [
        {"verb": "delete", "group": "", "resource": "pods", "namespace": "shop"},
        {"verb": "create", "group": "", "resource": "pods", "subresource": "eviction"},
    ], "a namespaced permission names its namespace; one in every namespace names none"


def test_a_denied_permission_is_one_line_naming_who_needs_it_whom_to_grant_it_and_the_reason() -> None:
    refused = {("delete", "pods", "shop"): (False, "no RBAC rule matched")}
    needs = [
        need("east", DELETE_PODS, ("pod-kill", "test_kill"), ("as-found check", "test_kill")),
        need("east", PATCH_NODES),
    ]
    review = rbac.review(FLEET, FakeAccess(FLEET, {"east": FakeAuthz(refused)}), needs)
    assert lines(review) == [
        "FAIL east: cannot delete pods in namespace shop (needed by: pod-kill in test_kill; as-found check "
        "in test_kill): grant it to user alice (a Role in shop, or a ClusterRole, and a binding); the API "
        "server said: no RBAC rule matched"
    ]


def test_a_cluster_wide_permission_wants_a_cluster_role_and_an_unnamed_user_is_the_contexts() -> None:
    refused = {("patch", "nodes", ""): (False, ""), ("create", "pods/eviction", ""): (False, "")}
    api = FakeAuthz(refused, user=None)
    review = rbac.review(
        FLEET, FakeAccess(FLEET, {"east": api}), [need("east", PATCH_NODES), need("east", EVICT)]
    )
    assert lines(review) == [
        "FAIL east: cannot patch nodes (needed by: pod-kill in test_kill): grant it to the identity of "
        "context east-admin (a ClusterRole and a ClusterRoleBinding)",
        "FAIL east: cannot create pods/eviction in every namespace (needed by: pod-kill in test_kill): grant "
        "it to the identity of context east-admin (a ClusterRole and a ClusterRoleBinding)",
    ]


def test_an_explicit_denial_says_rbac_cannot_lift_it() -> None:
    refused = {("delete", "pods", "shop"): (True, "denied by the no-deletes policy")}
    review = rbac.review(FLEET, FakeAccess(FLEET, {"east": FakeAuthz(refused)}), [need("east", DELETE_PODS)])
    assert lines(review) == [
        "FAIL east: cannot delete pods in namespace shop (needed by: pod-kill in test_kill): an authorizer "
        "denies it explicitly (denied by the no-deletes policy): change that policy (RBAC cannot allow it)"
    ]


@pytest.mark.parametrize(
    ("failing", "said"),
    [
        (403, "HTTP 403 Forbidden; check the context's credentials"),
        (500, "HTTP 500 Error; check the API server's health"),
        (0, "ConnectionRefusedError; check that the API server runs"),
    ],
)
def test_a_cluster_that_cannot_be_asked_is_one_line_and_never_a_pass(failing: int, said: str) -> None:
    access = FakeAccess(FLEET, {"east": FakeAuthz(failing=failing), "west": FakeAuthz()})
    review = rbac.review(FLEET, access, [need("east", DELETE_PODS), need("east", EVICT), need("west", EVICT)])
    [line] = lines(review)
    assert line.startswith(f"FAIL east: permissions not asked: SelfSubjectAccessReview: {said}"), line


class Blank(FakeAuthz):
    """An API server whose SelfSubjectAccessReviews answer only the request's `keep` parts (no status)."""

    def __init__(self, keep: tuple[str, ...]) -> None:
        super().__init__()
        self.keep = keep

    def request(self, method: str, url: str, *args: Any, body: Any = None, **kwargs: Any) -> Response:
        if urlsplit(url).path != SSAR:
            return super().request(method, url, body=body)
        return Response(201, {key: body[key] for key in self.keep})


def test_an_answer_without_a_status_or_unreadable_or_a_broken_client_is_never_a_pass() -> None:
    patch_nodes = [need("east", PATCH_NODES)]
    [line] = lines(rbac.review(FLEET, FakeAccess(FLEET, {"east": Blank(("spec",))}), patch_nodes))
    assert line.endswith("; the API server said: the answer had no status"), line
    assert lines(rbac.review(FLEET, FakeAccess(FLEET, {"east": Blank(())}), patch_nodes)) == [
        "FAIL east: permissions not asked: SelfSubjectAccessReview answered what the client cannot read "
        "(Invalid value for `spec`, must not be `None`)"
    ]
    broken = rbac.review(FLEET, FakeAccess(FLEET, {}), [need("west", PATCH_NODES)])
    assert lines(broken) == ["FAIL west: permissions not asked: cluster west: 'west'"]


def test_a_cluster_already_reported_unreachable_is_not_asked_again() -> None:
    west = FakeAuthz(failing=503)
    access = FakeAccess(FLEET, {"east": FakeAuthz(), "west": west})
    review = rbac.review(FLEET, access, [need("east", DELETE_PODS), need("west", EVICT)], skip={"west"})
    assert lines(review) == [
        "ok   every permission the 2 selected drill(s) need is allowed (1 asked in 1 cluster(s); not asked: "
        "west (unreachable, above))"
    ]
    nothing = rbac.review(FLEET, access, [need("west", EVICT)], skip={"west"})
    assert lines(nothing) == ["SKIP no permission asked: west (unreachable, above)"], (
        "nothing asked is no pass"
    )


def test_drills_that_need_no_permission_ask_none_and_say_so() -> None:
    review = rbac.review(FLEET, FakeAccess(FLEET, {"east": FakeAuthz(failing=500)}), [])
    assert lines(review) == [
        "SKIP no permission asked: the selected drills declare no part that needs one (their drill "
        "marker's uses)"
    ]


def crd(group: str, plural: str, scope: str = "Namespaced") -> dict[str, Any]:
    names = {"plural": plural, "kind": plural.title().rstrip("s")}
    versions = [{"name": "v1", "served": True, "storage": True}]
    spec = {"group": group, "names": names, "scope": scope, "versions": versions}
    return {"metadata": {"name": f"{plural}.{group}"}, "spec": spec}


DISCOVERY = {
    "/api/v1": {
        "resources": [
            {"name": "configmaps", "namespaced": True, "kind": "ConfigMap", "verbs": ["get", "list"]},
            {"name": "pods/log", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
            {"name": "nodes", "namespaced": False, "kind": "Node", "verbs": ["get", "list"]},
            {"name": "events", "namespaced": True, "kind": "Event", "verbs": ["get", "list"]},
            {"name": "bindings", "namespaced": True, "kind": "Binding", "verbs": ["create"]},
        ]
    },
    "/apis": {"groups": [{"preferredVersion": {"groupVersion": "example.com/v1"}}]},
    "/apis/example.com/v1": {
        "resources": [{"name": "widgets", "namespaced": True, "kind": "Widget", "verbs": ["list"]}]
    },
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions": {
        "items": [crd("example.com", "widgets"), crd("example.com", "globes", scope="Cluster")]
    },
}


class Discovering(FakeAuthz):
    """FakeAuthz that also answers API discovery and lists CRDs (`discovery`; `forbidden`: paths answered
    403)."""

    def __init__(
        self, refused: dict[tuple[str, str, str], tuple[bool, str]], forbidden: tuple[str, ...] = ()
    ):
        super().__init__(refused)
        self.forbidden = forbidden

    def request(self, method: str, url: str, *args: Any, body: Any = None, **kwargs: Any) -> Response:
        path = urlsplit(url).path
        if path in self.forbidden:
            raise client.ApiException(http_resp=Response(403, {"kind": "Status"}))
        if method == "GET" and path in DISCOVERY:
            return Response(200, DISCOVERY[path])
        return super().request(method, url, body=body)


def test_a_resource_standing_for_many_is_asked_as_each_the_cluster_has_each_permission_once() -> None:
    """The restore dry run lists every namespaced resource discovery offers to list (Events and
    subresources left out), parity every namespaced CRD's; a resource in both is asked once, naming both."""
    listed, custom = (
        Permission("list", r, namespace=APP).resolved("shop", "velero") for r in (LISTED, CUSTOM)
    )
    api = Discovering({("list", "widgets", "shop"): (False, ""), ("list", "configmaps", "shop"): (False, "")})
    wanted = [
        need("east", listed, ("dr readiness", "test_ready")),
        need("east", custom, ("configuration parity", "test_parity")),
    ]
    review = rbac.review(FLEET, FakeAccess(FLEET, {"east": api}), wanted)
    assert [(a["resource"], a["group"], a["namespace"]) for a in api.asked] == [
        ("configmaps", "", "shop"),
        ("widgets", "example.com", "shop"),
    ]
    assert lines(review) == [
        "FAIL east: cannot list configmaps in namespace shop (needed by: dr readiness in test_ready): grant "
        "it to user alice (a Role in shop, or a ClusterRole, and a binding)",
        "FAIL east: cannot list widgets.example.com in namespace shop (needed by: dr readiness in "
        "test_ready; configuration parity in test_parity): grant it to user alice (a Role in shop, or a "
        "ClusterRole, and a binding)",
    ]


def test_custom_resources_are_the_active_clusters_and_never_a_pass_when_they_cannot_be_told() -> None:
    """Parity lists the active cluster's custom kinds in every cluster it compares: a passive cluster is
    asked for those, whatever it lists itself; when the active cluster's CRDs cannot be listed, one line."""
    custom = Permission("list", CUSTOM, namespace=APP).resolved("shop", "velero")
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    west = Discovering({}, forbidden=(crds,))
    wanted = [need("west", custom, ("parity", "test_p"))]
    assert lines(rbac.review(FLEET, FakeAccess(FLEET, {"east": Discovering({}), "west": west}), wanted)) == [
        "ok   every permission the 2 selected drill(s) need is allowed (1 asked in 1 cluster(s))"
    ]
    assert [(a["resource"], a["group"], a["namespace"]) for a in west.asked] == [
        ("widgets", "example.com", "shop")
    ]
    east = Discovering({}, forbidden=(crds,))
    review = rbac.review(FLEET, FakeAccess(FLEET, {"east": east, "west": west}), wanted)
    assert lines(review) == [
        "FAIL west: cannot ask for list every namespaced custom resource in namespace shop: listing the "
        "active cluster's customresourcedefinitions.apiextensions.k8s.io failed: HTTP 403 Forbidden (needed "
        "by: parity in test_p)"
    ]


DOCTOR_DRILL = """
import pytest


@pytest.mark.destructive
@pytest.mark.drill(app="shop", uses={"pod-kill": "active", "cluster-loss": "active"})
def test_kills():
    pass
"""


def test_doctor_checks_the_selected_drills_permissions_and_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fleetdrill doctor`, its API servers fakes: a denied permission is a problem, the runner's place a
    warning; the readiness lines are preflight's (tested on their own)."""
    (tmp_path / "fleet.yaml").write_text(dump_fleet(FLEET) + "runner: {cluster: east}\n")
    (tmp_path / "drills").mkdir()
    (tmp_path / "drills" / "test_doctor_cli_drills.py").write_text(DOCTOR_DRILL)
    apis = {"east": FakeAuthz({("delete", "pods", "shop"): (False, "")}), "west": FakeAuthz(failing=503)}
    monkeypatch.setattr(FleetAccess, "api_client", lambda self, cluster: apis[cluster])
    west_down = {"west": UnreachableError("cluster west: API server unreachable")}  # said by preflight
    monkeypatch.setattr(FleetAccess, "unreachable", lambda self, clusters=None: west_down)
    monkeypatch.setattr(preflight, "preflight", lambda fleet, access, app, margin: Readiness(app, ()))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    drills = tmp_path / "drills"
    assert cli.main(["doctor", "--fleet", str(tmp_path / "fleet.yaml"), "--drills", str(drills)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "app shop:",
        "",
        f"permissions of 1 selected drill(s) ({drills}):",
        "  FAIL east: cannot delete pods in namespace shop (needed by: pod-kill in test_kills): grant it to "
        "user alice (a Role in shop, or a ClusterRole, and a binding)",
        "WARN runner: test_kills loses cluster east, where the harness runs (the fleet file's runner): it "
        "would cut itself off from the fleet mid-drill; run the harness from outside east, e.g. from cluster "
        "west (region eu-west), which no selected drill cuts off",
        "1 problem(s) on the DR path",
    ]
    assert (
        cli.main(
            ["doctor", "--fleet", str(tmp_path / "fleet.yaml"), "--drills", str(drills), "--suite", "gate"]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[2:] == [
        f"permissions: no drill of {drills}, suite gate names app shop; none asked",
        "ready: every check passed",
    ]
