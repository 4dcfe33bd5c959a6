"""k8gb's API group found by discovery against real API servers: the local fleet serves Gslb only in the
legacy group k8gb.absa.oss; a cluster given k8gb.io's CRD too serves both, and the promote strategy then
patches k8gb.io there (k8gb-io/k8gb#2203), while the other clusters keep the legacy group."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness import k8gb
from harness.config import load_fleet
from harness.fleet import FleetAccess
from tests.conftest import wait_for

CLUSTER, OTHER = "ap-south", "us-east"
ANY_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gslbs.k8gb.io"},
    "spec": {
        "group": "k8gb.io",
        "scope": "Namespaced",
        "names": {"plural": "gslbs", "singular": "gslb", "kind": "Gslb", "listKind": "GslbList"},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def discovered(fleet_dir: Path, cluster: str) -> str:
    """The group a fresh FleetAccess (its discovery not yet cached) finds gslbs in."""
    access = FleetAccess(load_fleet(fleet_dir / "fleet.yaml"))
    try:
        return k8gb.gslb_group(access, cluster)
    finally:
        access.close()


def serves_k8gb_io(api: client.ApiClient) -> bool:
    groups = client.ApisApi(api).get_api_versions(_request_timeout=5).groups
    return any(group.name == "k8gb.io" for group in groups)


@pytest.fixture
def both_groups(fleet_dir: Path, api: Callable[[str], client.ApiClient]) -> Iterator[None]:
    """CLUSTER serves gslbs in k8gb.io as well as in the legacy group, for the test."""
    extensions = client.ApiextensionsV1Api(api(CLUSTER))
    extensions.create_custom_resource_definition(CRD, _request_timeout=10)
    try:
        wait_for(lambda: serves_k8gb_io(api(CLUSTER)), 30, "k8gb.io in the API's discovery")
        yield
    finally:
        extensions.delete_custom_resource_definition("gslbs.k8gb.io", _request_timeout=10)
        wait_for(lambda: not serves_k8gb_io(api(CLUSTER)), 60, "k8gb.io gone from the API's discovery")


def test_the_legacy_group_where_only_it_serves_gslbs(fleet_dir: Path) -> None:
    assert discovered(fleet_dir, CLUSTER) == "k8gb.absa.oss"


@pytest.mark.usefixtures("both_groups")
def test_k8gb_io_where_a_cluster_serves_both_groups(fleet_dir: Path) -> None:
    assert discovered(fleet_dir, CLUSTER) == "k8gb.io"
    assert discovered(fleet_dir, OTHER) == "k8gb.absa.oss"
