"""Configuration parity against fake API servers: a healthy pair of clusters shows no drift whatever each
cluster writes on its own; each difference a failover would trip on is named by kind/name and path."""

import copy
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import parity
from harness.config import App, Fleet
from harness.permissions import CUSTOM, Permission
from tests.kubefake import FakeAccess, FakeKube, Recording

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
NS = "/api/v1/namespaces/shop"
NET = "/apis/networking.k8s.io/v1/namespaces/shop"
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces/shop"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
WIDGET = "/apis/example.com/v1/namespaces/shop/widgets/main"
DEPLOYMENT = "/apis/apps/v1/namespaces/shop/deployments/shop"
HPA = "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/shop"
APP = App(name="shop", namespace="shop", workload="deployment/shop")
FLEET = Fleet.model_validate(
    {
        "name": "unit",
        "clusters": [
            {"name": "east", "region": "us-east", "role": "active"},
            {"name": "west", "region": "eu-west", "role": "passive"},
        ],
        "absent_roles": ["standby"],
    }
)


def meta(name: str, cluster: str, **more: Any) -> dict[str, Any]:
    """Metadata as a cluster writes it: its own uid, version, timestamps and managed fields."""
    written = {
        "uid": f"{cluster}-{name}",
        "resourceVersion": str(len(cluster)),
        "creationTimestamp": f"2026-11-2{len(cluster)}T00:00:00Z",
        "managedFields": [{"manager": cluster}],
    }
    return {"name": name, "namespace": "shop", **written, **more}


def shop(cluster: str, ip: str) -> dict[str, dict[str, Any]]:
    """The app's namespace in one cluster, with everything that cluster fills in by itself."""
    container = {
        "name": "shop",
        "image": "shop:1",
        "envFrom": [{"configMapRef": {"name": "shop-settings"}}],
        "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
    }
    template = {"containers": [container], "imagePullSecrets": [{"name": "registry"}]}
    host = f"shop.{cluster}.example.com"  # each cluster answers to a name of its own
    return {
        DEPLOYMENT: {
            "metadata": meta("shop", cluster),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {"metadata": {"labels": {"app": "shop"}}, "spec": template},
            },
            "status": {"replicas": 2, "availableReplicas": 2},
        },
        f"{NS}/configmaps/shop-settings": {
            "metadata": meta("shop-settings", cluster),
            "data": {"ROLE": cluster},
        },
        f"{NS}/secrets/db": {"metadata": meta("db", cluster), "data": {"password": f"{cluster}-pw"}},
        f"{NS}/secrets/registry": {
            "metadata": meta("registry", cluster),
            "data": {".dockerconfigjson": "e30="},
        },
        f"{NS}/services/web": {
            "metadata": meta("web", cluster),
            "spec": {
                "type": "NodePort",
                "clusterIP": ip,
                "clusterIPs": [ip],
                "ipFamilies": ["IPv4"],
                "selector": {"app": "shop"},
                "sessionAffinity": "None",
                "ports": [
                    {
                        "name": "http",
                        "port": 80,
                        "targetPort": "http",
                        "protocol": "TCP",
                        "nodePort": 30000 + len(ip),
                    }
                ],
            },
            "status": {"loadBalancer": {}},
        },
        f"{NS}/services/{cluster}-made": {  # a controller's: its owner is compared, not it
            "metadata": meta(
                f"{cluster}-made", cluster, ownerReferences=[{"kind": "Widget", "name": "main"}]
            ),
            "spec": {"ports": [{"port": 1}]},
        },
        f"{NS}/serviceaccounts/default": {
            "metadata": meta("default", cluster),
            "secrets": [{"name": f"default-token-{cluster}"}],
        },
        f"{NS}/serviceaccounts/shop": {
            "metadata": meta("shop", cluster),
            "imagePullSecrets": [{"name": "registry"}],
            "secrets": [{"name": f"shop-token-{cluster}"}],
        },
        f"{NS}/persistentvolumeclaims/data": {
            "metadata": meta("data", cluster),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeMode": "Filesystem",
                "volumeName": f"pvc-{cluster}",
                "storageClassName": f"{cluster}-ssd",
            },
            "status": {"phase": "Bound"},
        },
        f"{NET}/ingresses/shop": {
            "metadata": meta("shop", cluster),
            "spec": {
                "ingressClassName": f"{cluster}-lb",
                "rules": [
                    {
                        "host": host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                                }
                            ]
                        },
                    }
                ],
                "tls": [{"hosts": [host], "secretName": "shop-tls"}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
        },
        f"{NET}/networkpolicies/allow-web": {
            "metadata": meta("allow-web", cluster),
            "spec": {
                "podSelector": {"matchLabels": {"app": "shop"}},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
            },
        },
        f"{RBAC}/roles/reader": {
            "metadata": meta("reader", cluster),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        f"{RBAC}/rolebindings/shop-reads": {
            "metadata": meta("shop-reads", cluster),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "shop", "namespace": "shop"}],
        },
        HPA: {
            "metadata": meta("shop", cluster),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
                "minReplicas": 2,
                "maxReplicas": 6,
            },
            "status": {"currentReplicas": 2},
        },
        "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/shop": {
            "metadata": meta("shop", cluster),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "shop"}}},
            "status": {"currentHealthy": 2},
        },
        CRD: {
            "metadata": {"name": "widgets.example.com", "uid": cluster},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "storage": True}],
            },
        },
        WIDGET: {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": meta("main", cluster, generation=len(cluster)),
            "spec": {"size": 3, "token": "s3cr3t"},
            "status": {"ready": True},
        },
    }


def lines(
    west: dict[str, dict[str, Any]],
    refuse: dict[str, int] | None = None,
    east: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """The drift lines of west against east."""
    east = shop("east", "10.0.0.1") if east is None else east
    access = FakeAccess(FLEET, {"east": FakeKube(east), "west": FakeKube(west, refuse)})
    return [d.line("east") for d in parity.compare(access, APP, "east", "west")]


def test_a_healthy_fleet_shows_no_drift_whatever_each_cluster_writes() -> None:
    assert lines(shop("west", "10.96.7.7")) == []


def test_parity_declares_every_permission_it_takes_in_each_role() -> None:
    """What doctor asks for the parity drill (parity.permissions) covers every read it makes, in the
    reference (active) and the compared cluster: a read added without its permission fails here."""
    east, west = Recording(shop("east", "10.0.0.1")), Recording(shop("west", "10.96.7.7"))
    parity.compare(FakeAccess(FLEET, {"east": east, "west": west}), APP, "east", "west")
    widgets = Permission("list", "widgets", "example.com", "shop")
    for api, role in ((east, "active"), (west, "passive")):
        declared = {p.resolved("shop", "velero") for p in parity.permissions(APP, role)}
        spelled = {widgets if p.resource == CUSTOM else p for p in declared}
        assert api.taken and api.taken <= spelled, (role, sorted(api.taken - spelled, key=Permission.text))
        assert widgets in api.taken


def patched(path: str, change: Callable[[dict[str, Any]], Any]) -> dict[str, dict[str, Any]]:
    west = copy.deepcopy(shop("west", "10.96.7.7"))
    change(west[path])
    return west


def test_a_changed_service_target_port_is_named() -> None:
    west = patched(f"{NS}/services/web", lambda s: s["spec"]["ports"][0].update(targetPort=8080))
    assert lines(west) == ["west: service/web.ports.http.targetPort: expected 'http' (as in east), got 8080"]


def test_an_extra_network_policy_is_named() -> None:
    west = shop("west", "10.96.7.7")
    west[f"{NET}/networkpolicies/deny-all"] = {
        "metadata": meta("deny-all", "west"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    assert lines(west) == ["west: networkpolicy/deny-all: expected 'absent' (as in east), got 'present'"]


@pytest.mark.parametrize(
    ("path", "change", "expected"),
    [
        (
            f"{NS}/services/web",
            lambda s: s["spec"].update(selector={"app": "shop-v2"}),
            "west: service/web.selector.app: expected 'shop' (as in east), got 'shop-v2'",
        ),
        (
            f"{NS}/services/web",
            lambda s: s["spec"].update(type="ClusterIP"),
            "west: service/web.type: expected 'NodePort' (as in east), got 'ClusterIP'",
        ),
        (
            f"{NET}/ingresses/shop",
            lambda i: i["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(name="old"),
            "west: ingress/shop.paths./: expected 'Prefix to service web:http' (as in east), "
            "got 'Prefix to service old:http'",
        ),
        (
            f"{RBAC}/rolebindings/shop-reads",
            lambda b: b["subjects"][0].update(name="default"),
            "west: rolebinding/shop-reads.subjects: expected [{'kind': 'ServiceAccount', 'name': 'shop', "
            "'namespace': 'shop'}] (as in east), got [{'kind': 'ServiceAccount', 'name': 'default', "
            "'namespace': 'shop'}]",
        ),
        (
            f"{NS}/serviceaccounts/shop",
            lambda a: a.pop("imagePullSecrets"),
            "west: serviceaccount/shop.imagePullSecrets: expected ['registry'] (as in east), got []",
        ),
        (
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/shop",
            lambda b: b["spec"].update(minAvailable=2),
            "west: poddisruptionbudget/shop.minAvailable: expected 1 (as in east), got 2",
        ),
        (
            HPA,
            lambda h: h["spec"].update(maxReplicas=2),
            "west: horizontalpodautoscaler/shop.maxReplicas: expected 6 (as in east), got 2",
        ),
        (
            f"{NS}/persistentvolumeclaims/data",
            lambda c: c["spec"]["resources"]["requests"].update(storage="100Mi"),
            "west: persistentvolumeclaim/data.requests.storage: expected '1Gi' (as in east), got '100Mi'",
        ),
        (
            WIDGET,
            lambda w: w["spec"].update(token="other"),
            "west: widget.example.com/main.spec.token: differs from east (a custom resource's: not shown)",
        ),
    ],
)
def test_each_difference_a_failover_trips_on_is_named(
    path: str, change: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    assert lines(patched(path, change)) == [expected]


def test_replicas_an_autoscaler_sets_are_not_a_difference() -> None:
    west = patched(DEPLOYMENT, lambda d: d["spec"].update(replicas=5))
    assert lines(west) == []
    east = shop("east", "10.0.0.1")
    for cluster in (east, west):
        del cluster[HPA]
    assert lines(west, east=east) == ["west: deployment/shop.replicas: expected 2 (as in east), got 5"]


def test_missing_objects_and_a_missing_crd_are_named() -> None:
    west = shop("west", "10.96.7.7")
    for path in (f"{RBAC}/roles/reader", CRD, WIDGET, f"{NS}/secrets/registry"):
        del west[path]
    assert lines(west) == [
        "west: secret/registry: expected 'present' (as in east), got 'missing'",
        "west: role/reader: expected 'present' (as in east), got 'missing'",
        "west: crd/widgets.example.com: expected 'served (example.com/v1)' (as in east), got 'not served'",
    ]


def test_an_api_that_does_not_answer_is_an_error_not_no_drift() -> None:
    with pytest.raises(
        parity.ParityError, match=r"^west: reading rolebinding objects in namespace shop: HTTP 403 Forbidden$"
    ):
        lines(shop("west", "10.96.7.7"), refuse={f"{RBAC}/rolebindings": 403})


ONLY_ACTIVE = """
name: unit
kubeconfig: kubeconfig
clusters:
  - {name: east, region: us-east, role: active}
apps:
  - {name: orders, namespace: orders, workload: deployment/orders}
"""


def run_parity_drill(pytester: pytest.Pytester, fleet: str) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
    """The configuration parity drill as users run it, on a fleet file; its records."""
    pytester.makefile(".yaml", fleet=textwrap.dedent(fleet))
    pytester.makepyfile(test_config_parity=(ROOT / "drills/test_config_parity.py").read_text())
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess(
        "--fleet",
        str(pytester.path / "fleet.yaml"),
        "--ledger",
        str(pytester.path / "ledger.json"),
        "--report-dir",
        str(reports),
        "-p",
        "no:cacheprovider",
    )
    return result, [json.loads(p.read_text()) for p in sorted(reports.glob("*/*/record.json"))]


def test_no_cluster_to_compare_is_an_error(pytester: pytest.Pytester) -> None:
    result, records = run_parity_drill(pytester, ONLY_ACTIVE)
    result.assert_outcomes(failed=2)
    assert [r["verdict"] for r in records] == ["error", "error"]
    messages = [v["message"] for r in records for v in r["verdicts"]]
    assert messages == [
        "fleet unit: passive cluster: expected a passive cluster, or passive in absent_roles, "
        "found none: nothing to check",
        "fleet unit: standby cluster: expected a standby cluster, or standby in absent_roles, "
        "found none: nothing to check",
    ]


def test_a_role_absent_by_design_passes_saying_there_is_nothing_to_compare(pytester: pytest.Pytester) -> None:
    result, records = run_parity_drill(pytester, ONLY_ACTIVE + "absent_roles: [passive, standby]\n")
    result.assert_outcomes(passed=2)
    assert [r["verdict"] for r in records] == ["pass", "pass"]
    assert [v["message"] for r in records for v in r["verdicts"]] == [
        f"fleet unit: {role} cluster: expected a {role} cluster, or {role} in absent_roles, "
        "found none, absent by design (absent_roles): nothing to check"
        for role in ("passive", "standby")
    ]


def test_an_optional_reference_is_needed_only_where_the_app_has_it() -> None:
    """`optional: true` (a pod starts without the object): referenced lists it, required_only leaves it out,
    unless the same name is also referenced without it."""
    template = {
        "containers": [
            {
                "name": "app",
                "envFrom": [
                    {"configMapRef": {"name": "db", "optional": True}},
                    {"configMapRef": {"name": "s"}},
                ],
                "env": [
                    {
                        "name": "P",
                        "valueFrom": {"secretKeyRef": {"name": "db", "key": "p", "optional": True}},
                    },
                    {"name": "T", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k", "optional": True}}},
                ],
                "volumeMounts": [{"name": "t", "mountPath": "/t"}],
            }
        ],
        "volumes": [{"name": "t", "secret": {"secretName": "t"}}],
    }
    deployment = SimpleNamespace(spec=SimpleNamespace(template=SimpleNamespace(spec=template)))
    assert parity.referenced(deployment) == ({"db", "s"}, {"db", "t"})
    assert parity.referenced(deployment, required_only=True) == ({"s"}, {"t"})
