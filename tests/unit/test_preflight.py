"""The DR readiness checks, against fake velero answers, small generated certificates and fake API servers."""

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client import V1Container, V1PodSpec, V1ResourceRequirements

from harness import preflight
from harness.capacity import Resources, pod_requests
from harness.config import App, Cluster, Fleet, Objectives, load_fleet
from harness.credentials import Expiry, jwt_expiry, kubeconfig_entry, serving_certificate
from harness.errors import ConfigError
from harness.permissions import CUSTOM, EVERY, Permission
from harness.velero import Backup, BackupStorageLocation, VeleroError
from tests.kubefake import FakeAccess, FakeKube, Recording

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EAST = Cluster(name="east", region="us-east", role="active")
SHOP = App(name="shop", namespace="shop", workload="deployment/shop", objectives=Objectives(rpo=3600))


def backup(name: str, phase: str, completed: datetime, namespaces: list[str] | None = None) -> Backup:
    return Backup.from_json(
        {
            "metadata": {"name": name},
            "spec": {"includedNamespaces": namespaces or ["shop"]},
            "status": {"phase": phase, "completionTimestamp": completed.isoformat()},
        }
    )


def location(region: str | None, phase: str = "Available") -> BackupStorageLocation:
    config = {"region": region} if region else {}
    return BackupStorageLocation.from_json(
        {"metadata": {"name": "default"}, "spec": {"config": config}, "status": {"phase": phase}}
    )


def test_a_backup_older_than_the_rpo_fails() -> None:
    backups = [backup("old", "Completed", NOW - timedelta(hours=2)), backup("new", "Failed", NOW)]
    check = preflight.check_backups("east", backups, "shop", rpo_s=3600, now=NOW)
    assert not check.ok
    assert check.line() == (
        "FAIL east: latest backup: expected a Completed backup of namespace shop younger than the RPO 1h, "
        "found old, 2h old"
    )


def test_a_fresh_completed_backup_of_the_namespace_passes() -> None:
    backups = [
        backup("other-ns", "Completed", NOW - timedelta(minutes=1), ["billing"]),
        backup("fresh", "Completed", NOW - timedelta(minutes=5), ["*"]),
    ]
    check = preflight.check_backups("east", backups, "shop", rpo_s=3600, now=NOW)
    assert check.ok and check.found == "fresh, 5m old"


def test_no_completed_backup_and_no_rpo_objective_both_fail() -> None:
    failed = preflight.check_backups("east", [backup("b", "PartiallyFailed", NOW)], "shop", 60, NOW)
    assert not failed.ok and failed.found == "none Completed (PartiallyFailed)"
    unbounded = preflight.check_backups("east", [backup("b", "Completed", NOW)], "shop", None, NOW)
    assert not unbounded.ok and "no RPO objective set" in unbounded.expected


def test_a_storage_location_in_the_clusters_own_region_fails() -> None:
    checks = preflight.check_location(EAST, [location("us-east")], "default", other_region=True)
    assert [c.ok for c in checks] == [True, False]
    assert checks[1].line() == (
        "FAIL east: storage location default region: expected a region other than the cluster's (us-east), "
        "found spec.config.region 'us-east'"
    )


def test_an_unavailable_or_missing_storage_location_fails() -> None:
    unavailable = preflight.check_location(EAST, [location("eu-west", "Unavailable")], "default", True)
    assert [c.ok for c in unavailable] == [False, True]
    missing = preflight.check_location(EAST, [], "default", True)
    assert [c.line() for c in missing] == [
        "FAIL east: storage location default: expected present, found missing"
    ]


class FakeVelero:
    """Answers like harness.velero.Velero, or fails like a velero whose server does not answer."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error

    def get_backups(self) -> list[Backup]:
        return [backup("nightly", "Completed", NOW - timedelta(days=2))]

    def get_backup_locations(self, *names: str) -> list[BackupStorageLocation]:
        if self.error:
            raise VeleroError(self.error)
        return [location("eu-west")]


def test_the_velero_checks_report_a_velero_error_as_a_finding() -> None:
    velero = FakeVelero("`velero backup-location get` exited 1:\n connection refused")
    checks, found = preflight.velero_checks(EAST, velero, "default", SHOP, NOW, other_region=True)
    assert found is None
    assert [c.line() for c in checks] == [
        "FAIL east: velero CLI: expected answers, "
        "found `velero backup-location get` exited 1: connection refused"
    ]


def test_the_velero_checks_find_a_stale_backup_with_a_good_location() -> None:
    checks, found = preflight.velero_checks(EAST, FakeVelero(), "default", SHOP, NOW, other_region=True)
    assert found is not None and found.name == "default"
    assert [(c.what, c.ok) for c in checks] == [
        ("storage location default", True),
        ("storage location default region", True),
        ("latest backup", False),
    ]
    assert checks[-1].found == "nightly, 2d old"


def test_max_backup_age_replaces_the_rpo_as_the_limit() -> None:
    checks, _ = preflight.velero_checks(
        EAST, FakeVelero(), "default", SHOP, NOW, other_region=True, max_backup_age=3 * 86400
    )
    assert checks[-1].ok and checks[-1].expected.endswith("younger than velero.max_backup_age 3d")


def test_a_backup_without_the_apps_data_namespace_fails_naming_it() -> None:
    """A database in a namespace of its own (data_namespaces) must be in the backups too: a schedule of the
    app's namespace alone would restore an app without its data."""
    with_database = SHOP.model_copy(update={"data_namespaces": ("db",)})
    checks, _ = preflight.velero_checks(
        EAST, FakeVelero(), "default", with_database, NOW, other_region=True, max_backup_age=3 * 86400
    )
    assert [(c.what, c.ok) for c in checks[-2:]] == [("latest backup", True), ("latest backup", False)]
    assert checks[-1].line() == (
        "FAIL east: latest backup: expected a Completed backup of namespace db younger than"
        " velero.max_backup_age 3d, found none Completed (no backups)"
    )


def certificate(not_after: datetime, name: str = "unit") -> tuple[bytes, bytes]:
    """A small self-signed certificate (PEM) valid until not_after, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=30))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def kubeconfig(tmp_path: Path, user: dict) -> Path:
    ca, _ = certificate(NOW + timedelta(days=3650), "ca")
    config = {
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:1",
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "east", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_expiring_client_certificate_is_caught(tmp_path: Path) -> None:
    cert, key = certificate(datetime.now(UTC) + timedelta(days=2))
    (tmp_path / "client.crt").write_bytes(cert)  # a file next to the kubeconfig, as kubeadm writes them
    path = kubeconfig(
        tmp_path, {"client-certificate": "client.crt", "client-key-data": base64.b64encode(key).decode()}
    )
    entry = kubeconfig_entry(path, "east")
    checks = {
        e.what: preflight.check_expiry("east", e, datetime.now(UTC), timedelta(days=7))
        for e in entry.credentials
    }
    assert entry.server == "https://127.0.0.1:1"
    assert checks["trusted CA certificate"].ok
    client = checks["client certificate"]
    assert not client.ok
    assert client.line().startswith(
        "FAIL east: client certificate: expected present and valid for more than 7d, "
    )
    assert client.found.endswith(("(1d23h left)", "(2d left)"))


def test_an_expired_token_and_a_missing_credential_are_caught(tmp_path: Path) -> None:
    claims = base64.urlsafe_b64encode(
        json.dumps({"exp": int((NOW - timedelta(hours=1)).timestamp())}).encode()
    )
    token = f"eyJhbGciOiJSUzI1NiJ9.{claims.decode().rstrip('=')}.sig"
    assert jwt_expiry(token) == NOW - timedelta(hours=1)
    assert jwt_expiry("an-opaque-token") is None
    entry = kubeconfig_entry(kubeconfig(tmp_path, {"token": token}), "east")
    token_check = next(
        preflight.check_expiry("east", e, NOW, timedelta(minutes=5))
        for e in entry.credentials
        if "token" in e.what
    )
    assert (
        token_check.line()
        == "FAIL east: bearer token: expected present and valid for more than 5m, found expired 1h ago"
    )
    assert token not in token_check.line()
    bare = kubeconfig_entry(kubeconfig(tmp_path, {}), "east")
    assert (
        Expiry("client credential", None, "none (no certificate, token or exec plugin)") in bare.credentials
    )
    with pytest.raises(ValueError, match="has no context 'west'"):
        kubeconfig_entry(tmp_path / "kubeconfig", "west")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, datetime]]:
    """A loopback TLS server on an ephemeral port whose certificate ends in 3 days."""
    not_after = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    cert, key = certificate(not_after, "localhost")
    (tmp_path / "s.crt").write_bytes(cert)
    (tmp_path / "s.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True):
                pass
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", not_after
    listener.close()
    thread.join(10)


def test_the_api_servers_serving_certificate_is_read_from_a_handshake(
    tls_server: tuple[str, datetime],
) -> None:
    url, not_after = tls_server
    expiry = serving_certificate(url)
    assert expiry.not_after == not_after
    check = preflight.check_expiry("east", expiry, datetime.now(UTC), timedelta(days=7))
    assert not check.ok and check.what == f"serving certificate of {url}"


def test_an_unreachable_server_is_a_finding_not_a_crash() -> None:
    expiry = serving_certificate("https://127.0.0.1:1", timeout_s=2)
    assert expiry.not_after is None and expiry.problem.startswith(
        "TLS handshake failed (ConnectionRefusedError"
    )


def test_capacity_short_of_the_failed_over_requests_fails() -> None:
    checks = preflight.check_capacity(
        "west", Resources.of({"cpu": "500m", "memory": "1Gi"}), Resources.of({"cpu": "2", "memory": "512Mi"})
    )
    assert [c.line() for c in checks] == [
        "FAIL west: spare cpu: expected at least 2 (failed-over requests), found 0.500 free",
        "ok   west: spare memory bytes: expected at least 536870912 (failed-over requests), "
        "found 1073741824 free",
    ]


def test_the_readiness_verdict_lists_every_problem() -> None:
    ok = preflight.presence("west", "namespace shop", True)
    bad = preflight.presence("west", "secret shop/db", False)
    readiness = preflight.Readiness("shop", (ok, bad))
    verdict = readiness.verdict()
    assert not readiness.ok and verdict.status == "fail"
    assert verdict.message == "west: secret shop/db: expected present, found missing"
    assert preflight.Readiness("shop", (ok,)).verdict().status == "pass"


def test_pod_requests_count_the_init_peak_and_the_overhead_as_the_scheduler_does() -> None:
    def container(cpu: str, memory: str) -> V1Container:
        return V1Container(
            name="c", resources=V1ResourceRequirements(requests={"cpu": cpu, "memory": memory})
        )

    spec = V1PodSpec(
        containers=[container("250m", "64Mi"), container("250m", "64Mi")],
        init_containers=[container("1", "16Mi")],
        overhead={"cpu": "100m"},
    )
    assert pod_requests(spec) == Resources(Decimal("1.1"), Decimal(128 * 2**20))


FLEET = Fleet.model_validate(
    {
        "name": "unit",
        "kubeconfig": "/nonexistent/kubeconfig",
        "clusters": [
            {"name": "east", "region": "us-east", "role": "active"},
            {"name": "west", "region": "eu-west", "role": "passive"},
            {"name": "south", "region": "ap-south", "role": "standby"},
        ],
    }
)
DEPLOYMENT = "/apis/apps/v1/namespaces/shop/deployments/shop"


def deployment(replicas: int, available: int | None) -> dict:
    container = {
        "name": "shop",
        "image": "shop:1",
        "env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
        "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}},
    }
    status = {"replicas": replicas} | ({} if available is None else {"availableReplicas": available})
    return {
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": [container]}},
        },
        "status": status,
    }


def cluster_with(workload: dict | None) -> FakeKube:
    """A cluster with the app's namespace, its secret, one Ready node with room, and `workload`."""
    node = {
        "metadata": {"name": "n1"},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    objects = {
        "/api/v1/namespaces/shop": {"metadata": {"name": "shop"}},
        "/api/v1/namespaces/shop/secrets/db": {"metadata": {"name": "db"}, "data": {"password": "cHc="}},
        "/api/v1/nodes/n1": node,
    }
    return FakeKube(objects | ({DEPLOYMENT: workload} if workload else {}))


def takeover_lines(passive: dict | None) -> list[str]:
    clusters = {"east": cluster_with(deployment(2, 2)), "west": cluster_with(passive)}
    check = preflight.Preflight(FLEET, FakeAccess(FLEET, clusters), SHOP)
    return [c.line() for c in check.takeover(FLEET.cluster("east"), FLEET.cluster("west"))]


def test_a_passive_cluster_without_the_workload_is_not_ready() -> None:
    lines = takeover_lines(None)
    assert (
        "FAIL west: workload deployment/shop: expected running with every replica available (desired > 0), "
        "found missing"
    ) in lines
    assert [line[:4] for line in lines].count("FAIL") == 1, lines


@pytest.mark.parametrize(
    ("replicas", "available", "found"),
    [
        (2, 0, "0 of 2 replicas available"),
        (2, None, "0 of 2 replicas available"),
        (0, 0, "0 of 0 replicas available"),
    ],
)
def test_a_passive_cluster_whose_workload_is_not_available_is_not_ready(
    replicas: int, available: int | None, found: str
) -> None:
    expected = "west: workload deployment/shop: expected running with every replica available (desired > 0)"
    assert f"FAIL {expected}, found {found}" in takeover_lines(deployment(replicas, available))


def test_a_passive_cluster_serving_the_workload_is_ready() -> None:
    lines = takeover_lines(deployment(2, 2))
    assert all(line.startswith("ok   west: ") for line in lines), lines
    assert (
        "ok   west: workload deployment/shop: expected running with every replica available (desired > 0), "
        "found 2 of 2 replicas available"
    ) in lines


def test_a_standby_needs_what_a_restore_needs_not_a_running_workload() -> None:
    clusters = {"east": cluster_with(deployment(2, 2)), "south": cluster_with(None)}
    check = preflight.Preflight(FLEET, FakeAccess(FLEET, clusters), SHOP)
    checks = check.takeover(FLEET.cluster("east"), FLEET.cluster("south"))
    assert [c.what for c in checks] == [
        "namespace shop",
        "secret shop/db",
        "spare cpu",
        "spare memory bytes",
    ]
    assert all(c.ok for c in checks)


CRD = {
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget", "plural": "widgets"},
        "scope": "Namespaced",
        "versions": [{"name": "v1", "served": True, "storage": True}],
    },
}


def test_the_takeover_declares_every_permission_it_takes_in_each_role() -> None:
    """What doctor asks for DR readiness (preflight.readiness_permissions) covers every read the takeover
    check makes, in the active cluster and in the one taking over: a read added without its permission
    fails here."""
    crds = {"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com": CRD}
    widget = {"/apis/example.com/v1/namespaces/shop/widgets/main": {"metadata": {"name": "main"}}}
    east = Recording(cluster_with(deployment(2, 2)).objects | crds | widget)
    for name, role in (("west", "passive"), ("south", "standby")):
        other = Recording(cluster_with(deployment(2, 2)).objects | crds)
        check = preflight.Preflight(FLEET, FakeAccess(FLEET, {"east": east, name: other}), SHOP)
        assert all(c.ok for c in check.takeover(FLEET.cluster("east"), FLEET.cluster(name)))
        widgets = Permission("list", "widgets", "example.com", "shop")
        for api, read in ((east, "active"), (other, role)):
            declared = {p.resolved("shop", "velero") for p in preflight.readiness_permissions(SHOP, read)}
            spelled = {
                widgets if p.resource == CUSTOM else replace(p, namespace="") if p.namespace == EVERY else p
                for p in declared
            }
            assert api.taken <= spelled, (read, sorted(api.taken - spelled, key=Permission.text))
        assert {Permission("get", "customresourcedefinitions", "apiextensions.k8s.io")} < other.taken
    assert widgets in east.taken


def only_active(absent_roles: list[str]) -> Fleet:
    return Fleet.model_validate(
        {
            "name": "unit",
            "kubeconfig": "/nonexistent/kubeconfig",
            "clusters": [{"name": "east", "region": "us-east", "role": "active"}],
            "absent_roles": absent_roles,
        }
    )


def test_no_cluster_to_take_over_is_an_error_not_a_pass() -> None:
    fleet = only_active([])
    readiness = preflight.Preflight(
        fleet, FakeAccess(fleet, {"east": cluster_with(deployment(2, 2))}), SHOP
    ).run()
    verdict = readiness.verdict()
    assert verdict.status == "error" and not readiness.ok
    assert readiness.lines()[:2] == [
        f"ERR  fleet unit: {role} cluster: expected a {role} cluster, or {role} in absent_roles, "
        "found none: nothing to check"
        for role in ("passive", "standby")
    ]
    assert verdict.message.startswith(
        "fleet unit: passive cluster: expected a passive cluster, or passive in absent_roles, found none"
    )


def test_a_role_absent_by_design_is_said_not_failed() -> None:
    check = preflight.role_check(only_active(["standby"]), "standby")
    assert check is not None and check.ok
    assert check.verdict("configuration parity").message == (
        "fleet unit: standby cluster: expected a standby cluster, or standby in absent_roles, "
        "found none, absent by design (absent_roles): nothing to check"
    )
    assert preflight.role_check(only_active([]), "passive").verdict("parity").status == "error"  # type: ignore[union-attr]
    assert preflight.role_check(FLEET, "standby") is None


def test_a_role_listed_absent_must_have_no_cluster(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "name: unit\nclusters:\n  - {name: east, region: us-east, role: active}\n"
        "  - {name: west, region: eu-west, role: passive}\nabsent_roles: [standby, passive]\n"
    )
    with pytest.raises(
        ConfigError, match=r"absent_roles\[1\]: expected a role no cluster has \(west is passive\)"
    ):
        load_fleet(path)


def test_a_readiness_with_no_check_is_an_error() -> None:
    verdict = preflight.Readiness("shop", ()).verdict()
    assert verdict.status == "error" and verdict.message == "no readiness check ran for app shop"
