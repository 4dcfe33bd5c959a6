"""Readiness and integrity against the local fleet: what the pre-flight check finds on a healthy fleet,
and the integrity inventory of the sample app (objects through the API, data through the app)."""

import json
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from harness import integrity
from harness.config import Fleet, load_fleet
from harness.fleet import FleetAccess
from harness.preflight import preflight
from harness.sentinels import Where, store_for

RECORDS = 25


@pytest.fixture(scope="module")
def fleet(fleet_dir: Path) -> Fleet:
    return load_fleet(fleet_dir / "fleet.yaml")


@pytest.fixture(scope="module")
def access(fleet: Fleet) -> Iterator[FleetAccess]:
    access = FleetAccess(fleet)
    yield access
    access.close()


def test_preflight_on_the_healthy_fleet_lists_what_it_finds(fleet: Fleet, access: FleetAccess) -> None:
    readiness = preflight(fleet, access, "orders")
    lines = readiness.lines()
    print("\n".join(lines))  # the full listing, for whoever reads the test log
    for cluster in fleet.clusters:
        own = [c for c in readiness.checks if c.cluster == cluster.name]
        credentials = [c for c in own if "certificate" in c.what]
        # per context (admin, read-only): the trusted CA and the client certificate; and the API server's
        assert len(credentials) == 5, lines
        assert all(c.ok for c in credentials), lines
    passive = next(c.name for c in fleet.clusters if c.role == "passive")
    assert f"ok   {passive}: namespace orders: expected present, found present" in lines
    assert any(line.startswith(f"ok   {passive}: CRD gslbs.") for line in lines), lines
    assert any(line.startswith(f"ok   {passive}: spare cpu:") for line in lines), lines
    active = fleet.primary().name
    velero = [c for c in readiness.checks if c.cluster == active and "velero" in c.line().lower()]
    if fleet.velero.store is None:  # the local fleet runs without Velero until it is installed
        assert [c.line() for c in velero] == [
            f"FAIL {active}: velero: expected installed (CRD backups.velero.io), found velero not installed"
        ]
    else:
        assert any(c.what == "storage location default" for c in readiness.checks), lines
    assert readiness.ok == all(c.ok for c in readiness.checks)


def test_a_margin_beyond_the_certificates_lifetime_fails_every_certificate(
    fleet: Fleet, access: FleetAccess
) -> None:
    readiness = preflight(fleet, access, "orders", margin=timedelta(days=20 * 365))
    certificates = [c for c in readiness.checks if "certificate" in c.what]
    assert certificates and not any(c.ok for c in certificates)
    assert all(c.expected == "present and valid for more than 7300d" for c in certificates)


def post_order(base: str, stream: str, seq: int) -> None:
    body = json.dumps({"seq": seq, "payload": f"integrity {seq}", "stream": stream}).encode()
    request = urllib.request.Request(
        f"{base.rstrip('/')}/orders", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def test_the_inventory_is_stable_and_sees_a_deleted_config_map(fleet: Fleet, access: FleetAccess) -> None:
    app, active = fleet.app("orders"), fleet.primary().name
    base, stream = app.endpoints[active], f"integrity-{uuid.uuid4().hex[:8]}"
    for seq in range(1, RECORDS + 1):
        post_order(base, stream, seq)
    store = store_for(app, "apps[0].sentinels")

    def records() -> dict[str, dict[int, Any]]:
        return {stream: store.records(Where(active, base), 0, stream)}

    core = client.CoreV1Api(access.api_client(active))
    name = f"integrity-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_config_map(app.namespace, {"metadata": {"name": name}, "data": {"k": "v"}})
    try:
        first = integrity.take_inventory(access.api_client(active), app.namespace, records())
        second = integrity.take_inventory(access.api_client(active), app.namespace, records())
        assert integrity.diff(first, second) == []
        assert first.streams[stream].count == RECORDS
        assert {"ConfigMap/orders-settings", "Deployment.apps/orders", f"ConfigMap/{name}"} <= set(
            first.objects
        )
    finally:
        core.delete_namespaced_config_map(name, app.namespace)
    after = integrity.take_inventory(access.api_client(active), app.namespace, records())
    assert integrity.diff(first, after) == [f"missing object ConfigMap/{name}"]
