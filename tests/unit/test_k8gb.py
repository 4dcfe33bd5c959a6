"""k8gb's API group found by discovery: the promote strategy patches the Gslb in the group each cluster
serves gslbs in (k8gb.io where both are), asking once per cluster; a cluster serving neither is one line
naming it and both groups; `doctor` asks for the permission in the served group (both when discovery
cannot say). The API here is a small HTTP server answering discovery and patches as an API server does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from harness import k8gb, rbac
from harness.config import load_fleet
from harness.fleet import FleetAccess
from harness.needs import Need
from harness.permissions import Permission
from harness.timeline import Timeline


class Api(BaseHTTPRequestHandler):
    """/apis lists the groups the server holds; /apis/GROUP/VERSION lists its resources; a PATCH of a Gslb
    in a served group answers 200 (else 404). Every request is logged."""

    def do_GET(self) -> None:
        served: dict[str, list[str]] = self.server.served  # type: ignore[attr-defined]
        path = self.path.rstrip("/")
        self.server.log.append(("GET", path))  # type: ignore[attr-defined]
        if path == "/apis":
            groups = [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}]}
                for gv in served
            ]
            self._answer(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        elif (group_version := path.removeprefix("/apis/")) in served:
            resources = [
                {"name": name, "singularName": "", "namespaced": True, "kind": "K", "verbs": ["patch"]}
                for name in served[group_version]
            ]
            listed = {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}
            self._answer(200, listed)
        else:
            self._answer(404, {"kind": "Status", "code": 404})

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.log.append(("PATCH", self.path))  # type: ignore[attr-defined]
        group_version = "/".join(self.path.split("/")[2:4])
        found = "gslbs" in self.server.served.get(group_version, [])  # type: ignore[attr-defined]
        self._answer(200 if found else 404, {"kind": "Gslb"} if found else {"kind": "Status", "code": 404})

    def _answer(self, status: int, document: object) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.served, server.log = {}, []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def access_to(tmp_path: Path, server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> FleetAccess:
    """A FleetAccess whose clusters east and west are both the fake API server."""
    document = {
        "name": "unit",
        "clusters": [
            {"name": "east", "region": "us-east", "role": "active"},
            {"name": "west", "region": "eu"},
        ],
        "apps": [{"name": "shop", "namespace": "shop-ns", "workload": "deployment/shop"}],
    }
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(document))
    access = FleetAccess(load_fleet(tmp_path / "fleet.yaml"))
    settings = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    api_client = client.ApiClient(settings)
    monkeypatch.setattr(access, "api_client", lambda cluster: api_client)
    return access


GSLB = ["gslbs", "gslbs/status"]


@pytest.mark.parametrize(
    ("served", "group"),
    [
        ({"k8gb.io/v1beta1": GSLB}, "k8gb.io"),
        ({"k8gb.absa.oss/v1beta1": GSLB}, "k8gb.absa.oss"),
        ({"k8gb.absa.oss/v1beta1": GSLB, "k8gb.io/v1beta1": GSLB}, "k8gb.io"),
        ({"k8gb.io/v1beta1": ["dnsendpoints"], "k8gb.absa.oss/v1beta1": GSLB}, "k8gb.absa.oss"),
    ],
    ids=["only-k8gb.io", "only-legacy", "both-prefers-k8gb.io", "k8gb.io-without-gslbs"],
)
def test_the_gslb_is_patched_in_the_group_the_cluster_serves(
    tmp_path: Path, api: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch, served: dict, group: str
) -> None:
    api.served = served  # type: ignore[attr-defined]
    access = access_to(tmp_path, api, monkeypatch)
    app = access.fleet.app("shop")
    assert k8gb.patch_gslb(access, "east", app, {"spec": {}}) == group
    assert k8gb.patch_gslb(access, "east", app, {"spec": {}}) == group
    log = api.log  # type: ignore[attr-defined]
    assert [path for verb, path in log if verb == "PATCH"] == [
        f"/apis/{group}/v1beta1/namespaces/shop-ns/gslbs/shop"
    ] * 2
    assert log.count(("GET", "/apis")) == 1, "discovery is asked once per cluster"


def test_a_cluster_serving_neither_group_is_one_line_naming_it_and_both(
    tmp_path: Path, api: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.served = {"apps/v1": ["deployments"]}  # type: ignore[attr-defined]
    access = access_to(tmp_path, api, monkeypatch)
    with pytest.raises(k8gb.GslbError) as raised:
        k8gb.patch_gslb(access, "west", access.fleet.app("shop"), {"spec": {}})
    assert str(raised.value) == (
        "cluster west: serves no Gslb API (gslbs in neither k8gb.io/v1beta1 nor k8gb.absa.oss/v1beta1):"
        " is k8gb installed there?"
    )
    assert not [entry for entry in api.log if entry[0] == "PATCH"]  # type: ignore[attr-defined]
    with pytest.raises(
        k8gb.GslbError, match=r"^no cluster took the Gslb change: cluster east: serves no Gslb"
    ):
        k8gb.move_primary(access, access.fleet.app("shop"), "west")


def test_a_missing_gslb_in_the_served_group_is_not_looked_for_in_the_other(
    tmp_path: Path, api: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.served = {"k8gb.io/v1beta1": GSLB, "k8gb.absa.oss/v1beta1": GSLB}  # type: ignore[attr-defined]
    access = access_to(tmp_path, api, monkeypatch)
    monkeypatch.setattr(access, "served", lambda *_args: ("k8gb.io/v1beta1",))
    api.served = {"k8gb.absa.oss/v1beta1": GSLB}  # type: ignore[attr-defined]  # the object is not there
    with pytest.raises(k8gb.GslbError, match=r"^cluster east: no Gslb shop-ns/shop in k8gb.io/v1beta1$"):
        k8gb.patch_gslb(access, "east", access.fleet.app("shop"), {"spec": {}})


def test_the_promote_strategy_moves_the_gslb_where_each_cluster_serves_it(
    tmp_path: Path, api: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.failover import fail_over

    api.served = {"k8gb.absa.oss/v1beta1": GSLB}  # type: ignore[attr-defined]
    access, timeline = access_to(tmp_path, api, monkeypatch), Timeline()
    fail_over(access, access.fleet.app("shop"), "west", timeline)
    (updated,) = timeline.events("gslb.updated")
    assert updated.cluster == "west" and sorted(updated.detail["clusters"]) == ["east", "west"]


NEED = Need("east", k8gb.PATCH.resolved("shop-ns", "velero"), (("failover", "test_x"),))


class Discovered:
    """What FleetAccess.served answers, or raises."""

    def __init__(self, answer: tuple[str, ...] | Exception) -> None:
        self.answer = answer

    def served(self, cluster: str, resource: str, group_versions: tuple[str, ...]) -> tuple[str, ...]:
        assert (cluster, resource, group_versions) == ("east", "gslbs", k8gb.GROUP_VERSIONS)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "asked"),
    [
        (("k8gb.io/v1beta1",), ["patch gslbs.k8gb.io in namespace shop-ns"]),
        (("k8gb.absa.oss/v1beta1",), ["patch gslbs.k8gb.absa.oss in namespace shop-ns"]),
        (k8gb.GROUP_VERSIONS, ["patch gslbs.k8gb.io in namespace shop-ns"]),
        (
            client.ApiException(status=403),
            ["patch gslbs.k8gb.io in namespace shop-ns", "patch gslbs.k8gb.absa.oss in namespace shop-ns"],
        ),
    ],
    ids=["only-k8gb.io", "only-legacy", "both", "discovery-refused"],
)
def test_doctor_asks_for_the_gslb_in_the_group_served_or_both_when_it_cannot_tell(
    answer: tuple[str, ...] | Exception, asked: list[str]
) -> None:
    found = rbac.as_asked(Discovered(answer), NEED)  # type: ignore[arg-type]
    assert [need.permission.text() for need in found] == asked  # type: ignore[union-attr]


def test_doctor_names_a_cluster_that_serves_no_gslb() -> None:
    (finding,) = rbac.as_asked(Discovered(()), NEED)  # type: ignore[arg-type]
    assert isinstance(finding, rbac.Finding)
    assert finding.line() == (
        "FAIL east: cannot patch gslbs: served in neither k8gb.io/v1beta1 nor k8gb.absa.oss/v1beta1"
        " (needed by: failover in test_x)"
    )


def test_a_permission_in_a_fixed_group_is_asked_as_it_is() -> None:
    need = Need("east", Permission("get", "nodes"), (("node-drain", "test_x"),))
    assert rbac.as_asked(Discovered(()), need) == (need,)  # type: ignore[arg-type]


def test_a_prepared_failover_asks_discovery_before_any_fault_and_not_during_the_failover(
    tmp_path: Path, api: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster lost after the drill began would hold the failover up for its discovery's timeouts (twice
    5 s): the failover fixture asks every cluster first, and the failover itself only patches."""
    from harness.failover import Failover

    api.served = {"k8gb.io/v1beta1": GSLB}  # type: ignore[attr-defined]
    access = access_to(tmp_path, api, monkeypatch)
    prepared = Failover.prepared(access, Timeline(), lambda cluster: None, None)  # type: ignore[arg-type]
    log = api.log  # type: ignore[attr-defined]
    asked = len(log)
    assert ("GET", "/apis") in log, "discovery is asked when the failover is prepared"
    k8gb.move_primary(prepared.access, access.fleet.app("shop"), "west")
    assert {verb for verb, _ in log[asked:]} == {"PATCH"}
