"""`fleetdrill doctor`'s permission check and runner placement against the local fleet's real RBAC: its admin
identity may do all the drill catalogue needs; its read-only identity (bound to `view`) is refused each
write and each gate read view does not grant, one line each naming the user to grant it to; a runner
declared in the primary's cluster is warned of every drill that cuts it off; a client certificate from
another CA is named as the cause. Read-only: nothing in the fleet changes."""

import base64
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from harness import catalogue, needs, rbac
from harness.cli import DRILLS
from harness.config import Fleet, dump_fleet, load_fleet
from harness.fleet import REJECTED, FleetAccess
from harness.localfleet import pki
from harness.permissions import Permission
from tests.conftest import run_cli

WRITES = ("create", "delete", "deletecollection", "patch", "update")


@pytest.fixture(scope="module")
def fleet(fleet_dir: Path) -> Fleet:
    return load_fleet(fleet_dir / "fleet.yaml")


@pytest.fixture(scope="module")
def drill_needs(fleet_dir: Path, fleet: Fleet) -> list[needs.Need]:
    drills = catalogue.collect(DRILLS, fleet_dir / "fleet.yaml", None, needs.parts())
    return needs.needs(fleet, [d for d in drills if d.app == "orders"])


def reviewed(fleet: Fleet, wanted: list[needs.Need]) -> rbac.Review:
    access = FleetAccess(fleet)
    try:
        return rbac.review(fleet, access, wanted)
    finally:
        access.close()


def as_served(fleet: Fleet, need: needs.Need) -> Permission:
    """The permission as doctor asks it: in the API group the cluster serves the resource in, found by
    discovery (the local fleet serves Gslb only in the legacy k8gb.absa.oss)."""
    permission = need.permission
    if not permission.served_in:
        return permission
    access = FleetAccess(fleet)
    try:
        served = access.served(need.cluster, permission.resource, permission.served_in)
    finally:
        access.close()
    (asked,) = permission.in_groups(served)
    return asked


@pytest.fixture(scope="module")
def as_viewer(fleet: Fleet) -> Fleet:
    """The fleet reached through each cluster's read-only context."""
    clusters = tuple(c.model_copy(update={"context": c.readonly_context}) for c in fleet.clusters)
    return fleet.model_copy(update={"clusters": clusters})


def test_the_admin_may_do_all_the_drill_catalogue_needs(fleet: Fleet, drill_needs: list[needs.Need]) -> None:
    review = reviewed(fleet, drill_needs)
    assert review.findings == () and review.asked == len(drill_needs) > 0, review.lines(9)
    assert review.clusters == tuple(c.name for c in fleet.clusters)


def test_the_read_only_identity_is_refused_each_write_in_one_line(
    as_viewer: Fleet, drill_needs: list[needs.Need]
) -> None:
    lines = reviewed(as_viewer, drill_needs).lines(9)
    print("\n".join(lines))  # the full listing, for whoever reads the test log
    writes = [n for n in drill_needs if n.permission.verb in WRITES]
    for need in writes:
        asked = as_served(as_viewer, need)
        prefix = f"FAIL {need.cluster}: cannot {asked.text()} (needed by: {need.why()}): "
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    assert (
        "FAIL us-east: cannot create resourcequotas in namespace orders (needed by: quota-squeeze in "
        "test_exhaust_the_primary_clusters_nodes): grant it to user fleetdrill-viewer (a Role in orders, or "
        "a ClusterRole, and a binding)"
    ) in lines
    assert not any("not asked" in line for line in lines), lines


def test_the_read_only_identity_is_refused_the_gate_reads_view_does_not_grant(
    as_viewer: Fleet, drill_needs: list[needs.Need]
) -> None:
    """`view` reads neither Velero's objects, nor Secrets, nor CRDs: each gate drill that does is named, the
    restore dry run's lists as API discovery spells them out."""
    lines = reviewed(as_viewer, drill_needs).lines(9)
    primary, velero = as_viewer.primary().name, as_viewer.velero.namespace
    hygiene, readiness = (
        "backup hygiene in test_backups_are_recent_and_kept_in_another_region",
        "dr readiness in test_the_dr_path_is_ready",
    )
    grant = "grant it to user fleetdrill-viewer (a Role in {}, or a ClusterRole, and a binding)"
    expected = [
        f"FAIL {primary}: cannot list backups.velero.io in namespace {velero} (needed by: {hygiene}; "
        f"{readiness}): {grant.format(velero)}",
        f"FAIL {primary}: cannot list secrets in namespace orders (needed by: {hygiene}; {readiness}): "
        f"{grant.format('orders')}",
        f"FAIL {primary}: cannot get secrets in namespace orders (needed by: configuration parity in "
        f"test_standby_runs_what_the_active_cluster_runs; {readiness}): {grant.format('orders')}",
        f"FAIL {primary}: cannot ask for list every namespaced custom resource in namespace orders: listing "
        "the active cluster's customresourcedefinitions.apiextensions.k8s.io failed: HTTP 403 Forbidden "
        f"(needed by: configuration parity in test_standby_runs_what_the_active_cluster_runs; {readiness})",
    ]
    assert [line for line in expected if line not in lines] == [], "\n".join(lines)
    assert not any("cannot list configmaps in namespace orders" in line for line in lines), "view lists them"


def test_doctor_warns_a_runner_in_the_primarys_cluster_of_each_drill_that_cuts_it_off(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(dump_fleet(fleet) + "runner: {cluster: us-east}\n")
    out = run_cli("doctor", "--fleet", fleet_file, "--suite", "quarterly", check=False).stdout
    assert "permissions of 10 selected drill(s) (" in out, out
    assert "  ok   every permission the 10 selected drill(s) need is allowed (" in out, out
    warned = sorted(line.split()[2] for line in out.splitlines() if line.startswith("WARN runner: "))
    assert warned == [
        "test_lose_one_cluster_and_global_traffic_continues",
        "test_lose_the_primary_cluster",
        "test_lose_the_primary_while_the_standby_region_is_cut_off",
        "test_partition_the_primary_region",
        "test_restore_the_backup_into_the_standby",
    ], out


def test_doctor_names_a_client_certificate_from_another_ca_as_cause(fleet_dir: Path, fleet: Fleet) -> None:
    """Each user's certificate reissued, same identity and valid dates, by a CA the API servers do not
    trust: they answer 401 (no TLS error), and doctor's line for each cluster names the certificate."""
    config = yaml.safe_load((fleet_dir / "kubeconfig").read_text())
    other = pki.new_ca("not-the-fleet-s-ca")
    for entry in config["users"]:
        cert = x509.load_pem_x509_certificate(Path(entry["user"]["client-certificate"]).read_bytes())
        user = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        groups = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        issued = pki.issue(other, str(user), organizations=groups, client=True)
        entry["user"] = {
            "client-certificate-data": base64.b64encode(issued.cert).decode(),
            "client-key-data": base64.b64encode(issued.key).decode(),
        }
    kubeconfig = fleet_dir / "kubeconfig-other-ca"
    kubeconfig.write_text(yaml.safe_dump(config))
    kubeconfig.chmod(0o600)
    fleet_file = fleet_dir / "fleet-other-ca.yaml"
    fleet_file.write_text(dump_fleet(fleet.model_copy(update={"kubeconfig": kubeconfig})))
    done = run_cli("doctor", "--fleet", fleet_file, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    for cluster in fleet.clusters:
        said = (
            f"cluster {cluster.name} (context {fleet.context_for(cluster)} of {kubeconfig}, server "
            f"{{}}): the API server rejected the client certificate (HTTP 401 Unauthorized); check {REJECTED}"
        )
        prefix, suffix = said.split("{}")
        assert any(prefix in line and line.endswith(suffix) for line in done.stdout.splitlines()), done.stdout
