"""PostgreSQL streaming replication across the fleet's clusters (`fleet up --postgres`): the app of
fixtures/apps/postgres.yaml in the active and passive clusters, the primary in the active one, a replica in
each passive one, which copies the primary with `pg_basebackup -R` through the active cluster's ingress. A
standby cluster is cold for the database: it is restored into from Velero backups (the backup-restore
drill restores the namespace postgres there, whose server its ingress then serves).

Each cluster's ingress namespace gets a TCP pass-through on port 5432 to the Service postgres/postgres
(tcpingress.py): the replicas reach the primary there across the fleet network, and the host reaches every
cluster's server there. The passwords are fresh per fleet, in the Secret postgres of every cluster (the
replication password must be the same everywhere); nothing of them is written to the fleet folder.
"""

import base64
import secrets
import sys
import time
from pathlib import Path

import psycopg
import yaml
from kubernetes import client, config, utils

from harness import pgreplication
from harness.errors import FleetDrillError
from harness.localfleet import apps, each, kwatch, processes
from harness.localfleet.state import ClusterRecord, FleetState, start_process

MANIFEST = Path(__file__).resolve().parents[2] / "fixtures" / "apps" / "postgres.yaml"
NAMESPACE = SERVICE = SECRET = STATEFULSET = "postgres"
APP_DATABASE = "orders-database"
"""The sample app's ConfigMap (ORDERS_DATABASE_URL) and Secret (password) in its namespace."""
ROLE_SETTINGS = "postgres-role"
PORT = 5432
SUPERUSER, DATABASE, REPLICATION_USER = "postgres", "postgres", "replicator"
CONNECT_TIMEOUT_S = 3


def role_settings(
    cluster: str, primary: bool, primary_host: str, peers: list[str], witnesses: list[str]
) -> dict:
    """The per-cluster ConfigMap postgres-role: the primary's cluster, the primary's ingress address, the
    other servers' (the peers a returning server asks whether one was promoted while it was away, and a
    running primary whether it is still the primary), and host:port of the clusters without a server (the
    witnesses whose answer also confirms a running primary: the fencer of fixtures/apps/postgres.yaml)."""
    return {
        "metadata": {"name": ROLE_SETTINGS, "namespace": NAMESPACE},
        "data": {
            "ROLE": "primary" if primary else "replica",
            "CLUSTER": cluster,
            "PRIMARY_HOST": primary_host,
            "PRIMARY_PORT": str(PORT),
            "PEERS": " ".join(peers),
            "WITNESSES": " ".join(witnesses),
            "FENCING": "on",
        },
    }


DATABASE_ROLES = ("active", "passive")
"""The clusters that run a server from the start (standby clusters are restored into)."""


def database_clusters(state: FleetState) -> list[ClusterRecord]:
    return [c for c in state.clusters if c.role in DATABASE_ROLES]


def peers(state: FleetState, cluster: str) -> list[str]:
    """The ingress addresses of every other cluster that runs a server."""
    return [endpoint(state, c.name)[0] for c in database_clusters(state) if c.name != cluster]


def witnesses(state: FleetState) -> list[str]:
    """host:port of the HTTP ingress of every cluster that runs no server."""
    servers = database_clusters(state)
    return [f"{endpoint(state, c.name)[0]}:{apps.HTTP_PORT}" for c in state.clusters if c not in servers]


def secret(password: str, replication_password: str) -> dict:
    return {
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "stringData": {
            "password": password,
            "replication-user": REPLICATION_USER,
            "replication-password": replication_password,
        },
    }


def new_secret() -> dict:
    """The Secret postgres with fresh passwords, the same in every cluster."""
    return secret(secrets.token_urlsafe(18), secrets.token_urlsafe(18))


def app_database(host: str, passwords: dict) -> tuple[dict, dict]:
    """The sample app's ConfigMap and Secret orders-database (optional in fixtures/apps/orders.yaml): its
    cluster's server at `host` (the cluster's ingress), as the superuser (its promote runs pg_promote())."""
    url = f"host={host} port={PORT} dbname={DATABASE} user={SUPERUSER}"
    meta = {"name": APP_DATABASE, "namespace": apps.APP}
    settings = {"metadata": meta, "data": {"ORDERS_DATABASE_URL": url}}
    return settings, {"metadata": meta, "stringData": {"password": passwords["stringData"]["password"]}}


def app_databases(state: FleetState, passwords: dict) -> dict[str, tuple[dict, dict]]:
    """The sample app's database objects of each cluster (services.start deploys the app with them): its
    own cluster's server. A standby's is cold, restored into: until then its app answers its health checks
    and 503 for orders, and configuration parity finds the objects a failed-over app needs there too."""
    return {c.name: app_database(endpoint(state, c.name)[0], passwords) for c in state.clusters}


def deploy(kubeconfig: Path, cluster: ClusterRecord, settings: dict, passwords: dict) -> None:
    """The namespace, the Secret and the role's ConfigMap, then the rest of the manifest, in one cluster."""
    api, timeout = (
        config.new_client_from_config(str(kubeconfig), context=cluster.name),
        kwatch.REQUEST_TIMEOUT,
    )
    try:
        documents = list(yaml.safe_load_all(MANIFEST.read_text()))
        utils.create_from_dict(api, documents[0], _request_timeout=timeout)  # the namespace
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(NAMESPACE, passwords, _request_timeout=timeout)
        core.create_namespaced_config_map(NAMESPACE, settings, _request_timeout=timeout)
        for document in documents[1:]:
            utils.create_from_dict(api, document, _request_timeout=timeout)
    finally:
        api.close()


def endpoint(state: FleetState, cluster: str) -> tuple[str, int]:
    """Where a cluster's server answers: its ingress address, port 5432."""
    return str(state.plan.cluster(state.cluster(cluster).index).ingress), PORT


def relay_argv(kubeconfig: Path, cluster: str, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.localfleet.tcpingress",
        f"--kubeconfig={kubeconfig}",
        f"--context={cluster}",
        f"--listen={address}:{PORT}",
        f"--namespace={NAMESPACE}",
        f"--service={SERVICE}",
        "--port-name=postgres",
    ]


def start(state: FleetState, passwords: dict) -> None:
    """Deploy the app in the active and passive clusters at once with the Secret `passwords` (new_secret:
    the sample app was given its copy), and open every cluster's ingress TCP port 5432 (after
    services.start, which made the ingress namespaces)."""
    kubeconfig = state.folder / "kubeconfig"
    active = next(c for c in state.clusters if c.role == "active")
    primary_host = endpoint(state, active.name)[0]
    servers = database_clusters(state)
    settings = {
        c.name: role_settings(
            c.name, c.role == "active", primary_host, peers(state, c.name), witnesses(state)
        )
        for c in servers
    }
    each.at_once(lambda c: deploy(kubeconfig, c, settings[c.name], passwords), servers)
    for cluster in state.clusters:
        address = endpoint(state, cluster.name)[0]
        start_process(
            state,
            processes.ProcessSpec(
                f"{cluster.name}/ingress-postgres",
                f"{cluster.netns_prefix(state.plan)}ing",
                relay_argv(kubeconfig, cluster.name, address),
                {"PYTHONUNBUFFERED": "1"},
                str(state.folder / "logs" / cluster.name / "ingress-postgres.log"),
                address,
            ),
        )


def password(kubeconfig: Path, cluster: str) -> str:
    """The superuser's password, read from the cluster's Secret postgres (as a user reads it)."""
    api = config.new_client_from_config(str(kubeconfig), context=cluster)
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            SECRET, NAMESPACE, _request_timeout=kwatch.REQUEST_TIMEOUT
        )
        data = secret.data or {}
    finally:
        api.close()
    return base64.b64decode(data["password"]).decode()


def connect(state: FleetState, cluster: str, secret_password: str) -> psycopg.Connection:
    """An autocommit connection to a cluster's server through its ingress, as the superuser."""
    host, port = endpoint(state, cluster)
    return psycopg.connect(
        host=host,
        port=port,
        user=SUPERUSER,
        password=secret_password,
        dbname=DATABASE,
        connect_timeout=CONNECT_TIMEOUT_S,
        autocommit=True,
    )


def _answers(state: FleetState, secret_password: str, cluster: str) -> bool:
    try:
        connect(state, cluster, secret_password).close()
    except psycopg.Error:
        return False
    return True


def _streaming(state: FleetState, secret_password: str, active: str) -> set[str]:
    try:
        with connect(state, active, secret_password) as connection:
            return {s.application_name for s in pgreplication.standbys(connection) if s.state == "streaming"}
    except psycopg.Error:
        return set()


def _takes_writes(state: FleetState, secret_password: str, active: str) -> bool:
    """The primary is not read-only: its fencer confirmed it (a replica answered)."""
    try:
        with connect(state, active, secret_password) as connection:
            return connection.execute("show default_transaction_read_only").fetchone() == ("off",)
    except psycopg.Error:
        return False


def wait_streaming(state: FleetState, deadline_s: float) -> None:
    """Poll until every server answers through its cluster's ingress, the primary's pg_stat_replication
    shows every passive cluster's replica streaming, and the primary takes writes."""
    active = next(c.name for c in state.clusters if c.role == "active")
    secret_password = password(state.folder / "kubeconfig", active)
    silent = {c.name for c in database_clusters(state)}
    waiting = {c.name for c in database_clusters(state) if c.role != "active"}
    deadline = time.monotonic() + deadline_s
    while True:
        silent = {c for c in silent if not _answers(state, secret_password, c)}
        waiting -= _streaming(state, secret_password, active) if not silent else set()
        fenced = not (silent or waiting) and not _takes_writes(state, secret_password, active)
        if not (silent or waiting or fenced):
            return
        if time.monotonic() > deadline:
            raise FleetDrillError(
                f"PostgreSQL after {deadline_s:.0f} s: not answering through the ingress in"
                f" {', '.join(sorted(silent)) or 'none'}; not streaming from {active}:"
                f" {', '.join(sorted(waiting)) or 'none'}{f'; {active} read-only (fenced)' * fenced};"
                f" logs in {state.folder / 'logs'}"
            )
        time.sleep(0.5)


FLEET_FILE = "fleet-postgresql.yaml"
PASSWORD_ENV = "FLEETDRILL_PG_PASSWORD"


def write_fleet_file(state: FleetState) -> Path:
    """fleet-postgresql.yaml beside the fleet file: the same fleet, its sample app's data path judged in
    PostgreSQL (postgresql sentinels in the primary's database, read back from each cluster's) and its
    failover the runbook of harness.localfleet.pgfailover (the Gslb and the app, then pg_promote()). The
    superuser's password is the variable PASSWORD_ENV names (from the Secret postgres/postgres). The
    namespace postgres is the app's data namespace (backed up and restored with it); a restored copy is read
    at the first standby cluster's ingress, where a restore into that cold cluster serves it."""
    document = yaml.safe_load((state.folder / "fleet.yaml").read_text())
    hosts = {c.name: endpoint(state, c.name)[0] for c in database_clusters(state)}
    standbys = [endpoint(state, c.name)[0] for c in state.clusters if c.role not in DATABASE_ROLES]
    database = f"port={PORT} dbname={DATABASE} user={SUPERUSER}"
    sentinels = {
        "adapter": "postgresql",
        "primary": f"host={','.join(hosts.values())} {database} target_session_attrs=read-write",
        "clusters": {name: f"host={host} {database}" for name, host in hosts.items()},
        **({"restored": f"host={standbys[0]} {database}"} if standbys else {}),
        "password_env": PASSWORD_ENV,
        "connect_timeout": "2s",
        "statement_timeout": "2s",
    }
    document["apps"][0] |= {
        "data_namespaces": [NAMESPACE],
        "sentinels": sentinels,
        "failover": {
            "strategy": "command",
            "command": [
                sys.executable,
                "-m",
                "harness.localfleet.pgfailover",
                f"--dir={state.folder}",
                "--app={app}",
                "--to={cluster}",
            ],
            "timeout": "180s",
        },
    }
    path = state.folder / FLEET_FILE
    header = "# Written by `fleetdrill fleet up --postgres`: the fleet with its app's data in PostgreSQL.\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False))
    return path
