"""The official postgres image on the local fleet: an unmodified StatefulSet of the kind users write runs
the real server (Debian's PostgreSQL) behind the image's entrypoint, keeps its data on the claim across a
pod's deletion, and stops promptly on the kubelet's SIGTERM."""

import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from kubernetes import client

from tests.conftest import wait_for

CONTEXT, NAME, PASSWORD = "us-east", "db", "correct-horse"
GRACE_S = 30  # the default terminationGracePeriodSeconds: a server deaf to SIGTERM would take this long
PROMPT_S = 5.0
SCHEMA = "create table seeded (note text); insert into seeded values ('from initdb.d');\n"
SHELL = 'psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "create table sh_ran ()"\n'


def _manifests() -> list[tuple[str, dict]]:
    """A Secret, the init scripts' ConfigMap, a headless Service and the StatefulSet, as users write them."""
    labels = {"app": NAME}
    container = {
        "name": "postgres",
        "image": "postgres:15",
        "args": ["-c", "max_connections=50"],
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "env": [
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": NAME, "key": "password"}}},
            {"name": "POSTGRES_DB", "value": "app"},
        ],
        "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres"]}, "periodSeconds": 1},
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "init", "mountPath": "/docker-entrypoint-initdb.d"},
        ],
    }
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": NAME},
        "spec": {
            "serviceName": NAME,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "init", "configMap": {"name": f"{NAME}-init"}}],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }
    return [
        ("secret", {"metadata": {"name": NAME}, "stringData": {"password": PASSWORD}}),
        (
            "config_map",
            {"metadata": {"name": f"{NAME}-init"}, "data": {"01-schema.sql": SCHEMA, "02-sh.sh": SHELL}},
        ),
        (
            "service",
            {
                "metadata": {"name": NAME},
                "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 5432}]},
            },
        ),
        ("stateful_set", statefulset),
    ]


def _ready_pod(
    core: client.CoreV1Api, namespace: str, not_uid: str = ""
) -> Callable[[], client.V1Pod | None]:
    def ready() -> client.V1Pod | None:
        try:
            pod = core.read_namespaced_pod(f"{NAME}-0", namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        fresh = pod.metadata.uid != not_uid and pod.metadata.deletion_timestamp is None
        return pod if fresh and conditions.get("Ready") == "True" else None

    return ready


def _connect(pod: client.V1Pod) -> psycopg.Connection:
    return psycopg.connect(
        host=pod.status.pod_ip, port=5432, user="postgres", password=PASSWORD, dbname="app", connect_timeout=5
    )


@pytest.fixture(scope="module")
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api(CONTEXT))


@pytest.fixture(scope="module")
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A namespace of the module's own, deleted on every exit path (its claims and volumes go with it)."""
    name = f"pgimage-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="module")
def database(api, core: client.CoreV1Api, namespace: str) -> client.V1Pod:
    """The StatefulSet's pod, Ready (its exec probe, pg_isready, passes)."""
    apps = client.AppsV1Api(api(CONTEXT))
    for kind, body in _manifests():
        target = apps if kind == "stateful_set" else core
        getattr(target, f"create_namespaced_{kind}")(namespace, body)
    pod = wait_for(_ready_pod(core, namespace), 120, "the postgres pod to be Ready")
    wait_for(lambda: _listening(pod), 30, "the server to listen on its pod's address")
    return pod


def _listening(pod: client.V1Pod) -> bool:
    """Whether the final server answers over TCP. As with the real image, the exec probe pg_isready goes
    through the socket and can pass on the entrypoint's init-time server, which listens on no address
    (docker-library/postgres#880): a client of a fresh database waits for the real one."""
    try:
        _connect(pod).close()
    except psycopg.OperationalError:
        return False
    return True


def test_the_image_initialises_the_database_and_serves_remote_clients(
    database: client.V1Pod, kubectl
) -> None:
    with _connect(database) as connection:
        assert connection.execute("select note from seeded").fetchall() == [("from initdb.d",)]
        assert connection.execute("select count(*) from sh_ran").fetchone() == (0,), "the .sh script ran"
        assert connection.execute("show max_connections").fetchone() == ("50",), (
            "the pod's args reach postgres"
        )
        assert connection.execute("select current_setting('data_directory')").fetchone() == (
            "/var/lib/postgresql/data",
        )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=database.status.pod_ip, user="postgres", password="wrong", dbname="app").close()
    done = kubectl(CONTEXT, "-n", database.metadata.namespace, "exec", database.metadata.name, "--",
                   "psql", "-U", "postgres", "-Atc", "select 1")  # fmt: skip
    assert done.stdout.strip() == "1"


def test_a_deleted_pod_stops_promptly_and_its_successor_keeps_the_data(
    core: client.CoreV1Api, namespace: str, database: client.V1Pod
) -> None:
    with _connect(database) as connection:
        connection.execute("create table if not exists orders (id int primary key)")
        connection.execute("insert into orders select generate_series(1, 100)")
    old = core.read_namespaced_pod(database.metadata.name, namespace)
    holder = _connect(old)  # a client still connected: the server must not wait for it
    try:
        deleted = time.monotonic()
        core.delete_namespaced_pod(old.metadata.name, namespace)
        exited = wait_for(
            lambda: _exit_of(core, namespace, old.metadata.uid), GRACE_S + 10, "the old server's exit"
        )
        stopped_s = time.monotonic() - deleted
    finally:
        holder.close()
    print(f"postgres stopped {stopped_s:.2f} s after its pod's deletion (grace period {GRACE_S} s)")
    assert stopped_s < PROMPT_S, f"the server took {stopped_s:.1f} s to stop on SIGTERM"
    assert exited.get("exitCode", 0) == 0, exited
    successor = wait_for(_ready_pod(core, namespace, old.metadata.uid), 120, "the recreated pod to be Ready")
    with _connect(successor) as connection:
        assert connection.execute("select count(*) from orders").fetchone() == (100,)
        assert connection.execute("select count(*) from seeded").fetchone() == (1,), "initdb.d ran once"


def _exit_of(core: client.CoreV1Api, namespace: str, uid: str) -> dict | None:
    """The old pod's container exit once the node reports it ({"gone": True} when the pod went first)."""
    try:
        pod = core.read_namespaced_pod(f"{NAME}-0", namespace)
    except client.ApiException as error:
        if error.status == 404:
            return {"gone": True}
        raise
    if pod.metadata.uid != uid:
        return {"gone": True}
    states = [s.state for s in pod.status.container_statuses or []]
    terminated = states[0].terminated if states else None
    return {"exitCode": terminated.exit_code} if terminated else None
