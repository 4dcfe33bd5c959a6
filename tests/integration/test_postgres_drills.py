"""The active-passive drill on the PostgreSQL fleet (`fleet up --postgres`, its fleet-postgresql.yaml): the
app's data path judged in real PostgreSQL, the failover promoting the survivor's replica (pg_promote()
through the fleet file's failover command), the RPO measured from postgresql sentinels beside the
replication lag the servers reported just before the fault.

On a healthy fleet the replica streams and the drill passes, its RPO measured from postgresql sentinels
and, in a second run, from the app's own orders (its http sentinels); on a broken one, whose replication
link was cut about 10 s before the primary is lost, the drill fails on RPO and names the lag. The old
primary's return: fenced (its initContainer finds a newer primary and copies it), it never takes a write;
with its fencing off it returns writable and the split-brain check fails the drill. The fleet is the
module's own: the drills lose its primary cluster for real (and fail back, a switchover without loss).
"""

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from kubernetes import client, config

from harness import pgreplication
from harness.faults.base import KubeContext
from harness.faults.chaosmesh import NetworkChaosFault
from harness.localfleet import postgres
from harness.localfleet.state import FleetState
from tests.conftest import started_fleet, wait_for
from tests.integration.test_drills import ROOT, drill_argv, run_drill

PRIMARY, REPLICA = "us-east", "eu-west"
DRILL = "test_active_passive.py"
RETURN_DRILL = "test_returning_primary.py"
CUT_BEFORE_LOSS_S = 10.0
"""The active-passive drill holds its steady state this long (twice the RPO objective of 5 s) after its
sentinels start: the link is cut as they start."""


@pytest.fixture(scope="module")
def pg_fleet(tmp_path_factory: pytest.TempPathFactory, require_root: None) -> Iterator[Path]:
    with started_fleet(tmp_path_factory, "pgdrill", clusters=2, postgres=True) as folder:
        yield folder


@pytest.fixture(scope="module")
def secret_password(pg_fleet: Path) -> str:
    return postgres.password(pg_fleet / "kubeconfig", PRIMARY)


@pytest.fixture(autouse=True)
def password_env(monkeypatch: pytest.MonkeyPatch, secret_password: str) -> None:
    """The drill's sentinels read the superuser's password from the variable the fleet file names."""
    monkeypatch.setenv(postgres.PASSWORD_ENV, secret_password)


def answers(state: FleetState, password: str, cluster: str) -> bool:
    try:
        postgres.connect(state, cluster, password).close()
    except psycopg.Error:
        return False
    return True


def streams_from(state: FleetState, password: str, primary: str) -> set[str]:
    try:
        with postgres.connect(state, primary, password) as connection:
            if pgreplication.in_recovery(connection):
                return set()
            return {s.application_name for s in pgreplication.standbys(connection) if s.state == "streaming"}
    except psycopg.Error:
        return set()


def test_a_replica_in_step_passes_active_passive_with_its_lag_beside_the_loss(
    pg_fleet: Path, secret_password: str, tmp_path: Path
) -> None:
    done, record = run_drill(pg_fleet, tmp_path, DRILL, fleet_file=postgres.FLEET_FILE)
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    figures = record["figures"]["orders"]
    (lag,) = figures["replication_at_t0"]
    assert (lag["cluster"], lag["primary"], lag["state"]) == (REPLICA, PRIMARY, "streaming")
    assert lag["behind_s"] < 1.0, lag
    assert figures["rpo_s"] < 5.0 and figures["writes"] > 100, figures
    (rpo,) = [v for v in record["verdicts"] if v["objective"] == "RPO"]
    assert f"replication lag at t0: {REPLICA} " in rpo["message"]
    print(f"\nhealthy: lag at t0 {lag}; RPO {figures['rpo_s']} s, {figures['lost_writes']} writes lost")
    state = FleetState.load(pg_fleet)
    assert streams_from(state, secret_password, PRIMARY) == {REPLICA}, "failed back: us-east primary again"


def test_the_apps_own_orders_measure_the_rpo_of_the_loss_too(
    pg_fleet: Path, secret_password: str, tmp_path: Path
) -> None:
    """The same drill judging RPO from the sample app's own orders (fleet.yaml's http sentinels: orders
    written through the app, rows of the primary's table orders, read back through the survivor's app)
    instead of postgresql sentinels, with the same runbook."""
    document = yaml.safe_load((pg_fleet / postgres.FLEET_FILE).read_text())
    through_the_app = yaml.safe_load((pg_fleet / "fleet.yaml").read_text())["apps"][0]["sentinels"]
    document["apps"][0]["sentinels"] = through_the_app
    (pg_fleet / "fleet-orders.yaml").write_text(yaml.safe_dump(document))
    done, record = run_drill(pg_fleet, tmp_path, DRILL, fleet_file="fleet-orders.yaml")
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    figures = record["figures"]["orders"]
    assert figures["rpo_s"] < 5.0 and figures["writes"] > 100, figures
    state = FleetState.load(pg_fleet)
    with postgres.connect(state, PRIMARY, secret_password) as connection:
        query = "select count(*) from orders where stream like 'fleetdrill-%'"
        (rows,) = connection.execute(query).fetchone() or (0,)
    assert rows > 100, f"the drill's orders are rows of the primary's table: {rows}"
    print(
        f"\nthrough the app: RPO {figures['rpo_s']} s, {figures['lost_writes']} of {figures['writes']} lost"
    )


def test_a_replication_link_cut_before_the_loss_fails_active_passive_on_rpo_naming_the_lag(
    pg_fleet: Path, secret_password: str, tmp_path: Path
) -> None:
    state = FleetState.load(pg_fleet)
    clients = {c: config.new_client_from_config(str(pg_fleet / "kubeconfig"), context=c) for c in (REPLICA,)}
    ctx = KubeContext(clients)
    cut = NetworkChaosFault(
        targets=(REPLICA,),
        namespace=postgres.NAMESPACE,
        spec={
            "action": "partition",
            "mode": "all",
            "direction": "both",
            "selector": {"labelSelectors": {"app": "postgres"}, "namespaces": [postgres.NAMESPACE]},
            "externalTargets": [f"{postgres.endpoint(state, PRIMARY)[0]}/32"],
            "duration": "10m",
        },
    )
    started = time.time()
    argv = drill_argv(pg_fleet, tmp_path, DRILL, fleet_file=postgres.FLEET_FILE)
    drill = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with (
            postgres.connect(state, PRIMARY, secret_password) as primary,
            postgres.connect(state, REPLICA, secret_password) as replica,
        ):

            def sentinels_since(connection: psycopg.Connection) -> bool:
                try:
                    query = "select count(*) from fleetdrill_sentinels where written_at > to_timestamp(%s)"
                    return bool(connection.execute(query, [started]).fetchone()[0])
                except psycopg.errors.UndefinedTable:
                    return False

            wait_for(lambda: sentinels_since(primary), 60, "the drill's first sentinels on the primary")
            wait_for(lambda: sentinels_since(replica), 10, "the drill's first sentinels on the replica")
        cut.inject(ctx)  # returns once Chaos Mesh's record says the drop rules are in the replica's pod
        cut_at = time.time()
        try:  # healed once the primary is lost (its cluster's loss is t0): the fail-back needs the link
            wait_for(lambda: not answers(state, secret_password, PRIMARY), 120, "the primary's loss")
            lost_at = time.time()
        finally:
            cut.revert(ctx)
        out, _ = drill.communicate(timeout=300)
    finally:
        if drill.poll() is None:
            drill.kill()
            drill.wait()
        for api_client in clients.values():
            api_client.close()
    record = last_record(tmp_path)
    assert drill.returncode != 0 and record["verdict"] == "fail", out[-3000:]
    figures = record["figures"]["orders"]
    (lag,) = figures["replication_at_t0"]
    assert lag["cluster"] == REPLICA and lag["behind_s"] > 5.0, lag
    (rpo,) = [v for v in record["verdicts"] if v["objective"] == "RPO"]
    assert rpo["status"] == "fail", rpo
    assert f"replication lag at t0: {REPLICA} {lag['behind_s']:.3g} s behind {PRIMARY}" in rpo["message"]
    assert figures["rpo_s"] > 5.0, figures
    failed = [v["objective"] for v in record["verdicts"] if v["status"] != "pass"]
    assert failed == ["RPO"], record["verdicts"]
    print(
        f"\nbroken: link cut about {lost_at - cut_at:.1f} s before the primary stopped answering; lag at t0"
        f" {lag}; RPO {figures['rpo_s']} s, {figures['lost_writes']} writes lost"
    )
    wait_for(lambda: streams_from(state, secret_password, PRIMARY) == {REPLICA}, 120, "the replica again")
    assert os.environ[postgres.PASSWORD_ENV] not in out


def test_a_fail_back_that_leaves_the_primary_refusing_writes_fails_the_drill_naming_it(
    pg_fleet: Path, secret_password: str, tmp_path: Path
) -> None:
    """A broken runbook (tests/readonly_failback.py): its fail-back puts the primary back in us-east, but
    read-only. Traffic is back and no acknowledged write is lost, but the data path takes no write: the
    fleet is not as the drill found it, and the drill fails naming that (after its 20 s to come back)."""
    document = yaml.safe_load((pg_fleet / postgres.FLEET_FILE).read_text())
    document["safety"]["as_found_timeout"] = "20s"
    command = document["apps"][0]["failover"]["command"]
    assert command[1:3] == ["-m", "harness.localfleet.pgfailover"], command
    command[2] = "tests.readonly_failback"
    broken = "fleet-readonly-failback.yaml"
    (pg_fleet / broken).write_text(yaml.safe_dump(document))
    state = FleetState.load(pg_fleet)
    try:
        done, record = run_drill(pg_fleet, tmp_path, DRILL, fleet_file=broken)
    finally:
        with postgres.connect(state, PRIMARY, secret_password) as connection:
            connection.execute("alter system reset default_transaction_read_only")
            connection.execute("select pg_reload_conf()")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    assert "the fleet is not as the drill found it" in record["message"], record["message"]
    assert "orders: its data path takes no sentinel write as before" in record["message"], record["message"]
    assert "read-only" in record["message"], record["message"]
    print(f"\nread-only fail-back: {record['message'][:300]}")


def last_record(reports: Path) -> dict:
    """The last drill record written in `reports`."""
    records = sorted(reports.glob("*/*/record.json"))
    assert records, "no drill record written"
    return json.loads(records[-1].read_text())


def fencing(folder: Path, cluster: str, setting: str) -> None:
    """Turn the fencing of fixtures/apps/postgres.yaml on or off in one cluster's ConfigMap postgres-role."""
    api = config.new_client_from_config(str(folder / "kubeconfig"), context=cluster)
    try:
        body = {"data": {"FENCING": setting}}
        client.CoreV1Api(api).patch_namespaced_config_map(postgres.ROLE_SETTINGS, postgres.NAMESPACE, body)
    finally:
        api.close()


def test_the_old_primary_returns_as_a_replica_of_the_promoted_one(
    pg_fleet: Path, secret_password: str, tmp_path: Path
) -> None:
    done, record = run_drill(pg_fleet, tmp_path, RETURN_DRILL, fleet_file=postgres.FLEET_FILE)
    assert done.returncode == 0 and record["verdict"] == "pass", done.stdout[-3000:]
    (split,) = [v for v in record["verdicts"] if v["objective"] == "split brain"]
    assert split["status"] == "pass" and "never interleaved" in split["message"], split
    events = {e["name"]: e for e in record["timeline"]["events"]}
    fenced_s = events["fencing.end"]["t_mono"] - events["fencing.start"]["t_mono"]
    print(f"\nfenced return: fenced {fenced_s:.1f} s after the cluster returned; {split['message']}")
    state = FleetState.load(pg_fleet)
    assert streams_from(state, secret_password, PRIMARY) == {REPLICA}, "failed back: us-east primary again"


def test_an_old_primary_returning_writable_is_seen_as_split_brain(
    pg_fleet: Path, secret_password: str, tmp_path: Path
) -> None:
    fencing(pg_fleet, PRIMARY, "off")
    try:
        done, record = run_drill(pg_fleet, tmp_path, RETURN_DRILL, fleet_file=postgres.FLEET_FILE)
    finally:
        fencing(pg_fleet, PRIMARY, "on")
    assert done.returncode != 0 and record["verdict"] == "fail", done.stdout[-3000:]
    (split,) = [v for v in record["verdicts"] if v["objective"] == "split brain"]
    assert split["status"] == "fail" and "two clusters' acknowledged writes interleave" in split["message"]
    print(f"\nunfenced return: {split['message'][:300]}")
    state = FleetState.load(pg_fleet)
    wait_for(lambda: streams_from(state, secret_password, PRIMARY) == {REPLICA}, 120, "the replica again")
