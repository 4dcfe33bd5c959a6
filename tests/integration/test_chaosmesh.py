"""Chaos Mesh in the local fleet: its CRDs and our controller honour NetworkChaos, StressChaos and PodChaos
with real packet drops, real kills and real load, end them at their duration or at once on delete, keep
them across a controller restart, and take chaostoolkit-kubernetes' actions unmodified."""

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from harness.faults.base import KubeContext
from harness.faults.chaosmesh import NetworkChaosFault, PodChaosFault, StressChaosFault
from harness.localfleet import groundtruth
from harness.localfleet.chaos import containers, install, records, regions
from harness.localfleet.state import FleetState
from tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("require_root")

PRIMARY, NAMESPACE, VICTIM = "us-east", "chaos-drill", "victim"
GROUP, VERSION = "chaos-mesh.org", "v1alpha1"
APP = {"labelSelectors": {"app": "orders"}, "namespaces": ["orders"]}


@pytest.fixture(scope="module")
def core(api: Callable[[str], client.ApiClient]) -> client.CoreV1Api:
    return client.CoreV1Api(api(PRIMARY))


@pytest.fixture(scope="module")
def custom(api: Callable[[str], client.ApiClient]) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api(PRIMARY))


@pytest.fixture(scope="module")
def ctx(api: Callable[[str], client.ApiClient]) -> KubeContext:
    return KubeContext({PRIMARY: api(PRIMARY)})


@pytest.fixture(scope="module")
def victim(api: Callable[[str], client.ApiClient], core: client.CoreV1Api) -> Iterator[None]:
    """A Deployment of one idle pod in a namespace of its own, for faults that kill or load it."""
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    template = {
        "metadata": {"labels": {"app": VICTIM}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": "nginx:1.27", "resources": {"requests": {"cpu": "500m"}}}
            ],
        },
    }
    client.AppsV1Api(api(PRIMARY)).create_namespaced_deployment(
        NAMESPACE,
        {
            "metadata": {"name": VICTIM},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": VICTIM}}, "template": template},
        },
    )
    wait_for(lambda: running_pod(core, NAMESPACE, f"app={VICTIM}"), 120, "the victim pod to run")
    yield
    core.delete_namespace(NAMESPACE)


def running_pod(core: client.CoreV1Api, namespace: str, selector: str) -> client.V1Pod | None:
    """The one ready pod of the selector (None while there is none, or more than one)."""
    pods = [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if not p.metadata.deletion_timestamp
        and p.status.phase == "Running"
        and all(s.ready for s in p.status.container_statuses or [])
    ]
    return pods[0] if len(pods) == 1 else None


def chaos(custom: client.CustomObjectsApi, plural: str, namespace: str, name: str) -> dict | None:
    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def condition(obj: dict | None, kind: str) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def tables(pod: client.V1Pod) -> list[str]:
    """The nftables tables in the pod's network namespace."""
    pid = containers.main_pid(pod.metadata.uid, [c.name for c in pod.spec.containers])
    listed = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "nft", "list", "tables"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [line.split()[-1] for line in listed.stdout.splitlines() if line.strip()]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    """Status and JSON body (empty when it is not JSON); status 0 when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            code, text = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, text = error.code, error.read()
    except OSError:
        return 0, {}
    try:
        return code, json.loads(text or b"{}")
    except ValueError:
        return code, {}


def since(folder: Path, start: float, event: str) -> list[dict]:
    return [
        e for e in groundtruth.read(folder / groundtruth.FILE) if e["mono"] >= start and e["event"] == event
    ]


def health(folder: Path, start: float, cluster: str, healthy: bool) -> dict | None:
    return next(
        (e for e in since(folder, start, "health") if e["backend"] == cluster and e["healthy"] == healthy),
        None,
    )


def position(url: str) -> int | None:
    status, body = http("GET", f"{url}/status")
    return body.get("position") if status == 200 else None


def test_chaos_mesh_is_installed_in_every_cluster(
    api: Callable[[str], client.ApiClient], fleet_dir: Path
) -> None:
    for cluster in FleetState.load(fleet_dir).clusters:
        extensions = client.ApiextensionsV1Api(api(cluster.name))
        names = {c.metadata.name for c in extensions.list_custom_resource_definition().items}
        assert {
            "networkchaos.chaos-mesh.org",
            "stresschaos.chaos-mesh.org",
            "podchaos.chaos-mesh.org",
        } <= names
        core = client.CoreV1Api(api(cluster.name))
        assert wait_for(
            lambda c=core: running_pod(
                c, install.NAMESPACE, "app.kubernetes.io/component=controller-manager"
            ),
            60,
            f"the chaos controller to run in {cluster.name}",
        )


def test_partition_stops_replication_and_health_checks_until_its_duration(
    fleet_dir: Path, ctx: KubeContext, core: client.CoreV1Api
) -> None:
    state = FleetState.load(fleet_dir)
    primary = running_pod(core, "orders", "app=orders")
    pod_url = f"http://{primary.status.pod_ip}:8080"
    replica = next(c for c in state.clusters if c.name != PRIMARY)
    replica_url = f"http://{state.plan.cluster(replica.index).ingress}"
    fault = NetworkChaosFault(
        targets=(PRIMARY,),
        namespace="orders",
        spec={
            "action": "partition",
            "mode": "all",
            "direction": "both",
            "selector": APP,
            "externalTargets": regions.partition_targets(state, PRIMARY),
            "duration": "12s",
        },
    )
    start = time.monotonic()
    fault.inject(ctx)
    try:
        seq = int(time.time() * 1000)
        code, _ = http("POST", f"{pod_url}/orders", {"seq": seq, "payload": "cut off", "stream": "chaos"})
        assert code == 201, "the primary, reached from inside its region, takes a write during the partition"
        written = position(pod_url)
        wait_for(
            lambda: health(fleet_dir, start, PRIMARY, healthy=False), 10, "the GSLB to find us-east unhealthy"
        )
        wait_for(
            lambda: health(fleet_dir, start, PRIMARY, healthy=True), 30, "us-east healthy after the duration"
        )
        ended = health(fleet_dir, start, PRIMARY, healthy=True)["mono"] - start
        assert 12 <= ended < 20, f"the partition ended {ended:.1f} s after it began, not at its 12 s duration"
        wait_for(
            lambda: (position(replica_url) or 0) >= written, 30, "replication to resume after the partition"
        )
        wait_for(
            lambda: [
                e
                for e in since(fleet_dir, start, "replication")
                if e["clusters"].get(replica.name, {}).get("position", 0) >= written
            ],
            30,
            "the ground truth to show the replica catching up",
        )
        obj = client.CustomObjectsApi(ctx.api_client(PRIMARY)).get_namespaced_custom_object(
            GROUP, VERSION, "orders", "networkchaos", fault.name
        )
        recover = obj["status"]["experiment"]["containerRecords"][0]["events"][-1]
        assert recover["operation"] == "Recover"
        healed = records.parse_time(recover["timestamp"]).timestamp()
        during = [
            e["clusters"][replica.name]["position"]
            for e in since(fleet_dir, start, "replication")
            if e["wall"] < healed and replica.name in e["clusters"]
        ]
        # replication lag is 0.5 s: behind for the whole partition means replication was really cut
        assert during and all(p < written for p in during), (
            "the ground truth shows replication across the partition"
        )
    finally:
        fault.revert(ctx)


def test_deleting_a_partition_restores_traffic_at_once(
    fleet_dir: Path, ctx: KubeContext, core: client.CoreV1Api
) -> None:
    state = FleetState.load(fleet_dir)
    ingress = f"http://{state.plan.cluster(0).ingress}"
    wait_for(lambda: http("GET", f"{ingress}/readyz")[0] == 200, 60, "us-east to serve before the partition")
    fault = NetworkChaosFault(
        targets=(PRIMARY,),
        namespace="orders",
        spec={
            "action": "partition",
            "mode": "all",
            "direction": "both",
            "selector": APP,
            "externalTargets": regions.partition_targets(state, PRIMARY),
            "duration": "10m",
        },
    )
    fault.inject(ctx)
    try:
        wait_for(lambda: http("GET", f"{ingress}/readyz")[0] != 200, 10, "the ingress to lose its pods")
    finally:
        fault.revert(ctx)
    reverted = time.monotonic()
    wait_for(lambda: http("GET", f"{ingress}/readyz")[0] == 200, 5, "traffic through the ingress again")
    assert time.monotonic() - reverted < 2.5, "traffic came back later than at once"
    primary = running_pod(core, "orders", "app=orders")
    assert not [t for t in tables(primary) if t.startswith("chaos_")], (
        "rules left in the pod after the delete"
    )


@pytest.mark.usefixtures("victim")
def test_pod_kill_deletes_the_pod_and_its_deployment_replaces_it(
    ctx: KubeContext, core: client.CoreV1Api
) -> None:
    before = running_pod(core, NAMESPACE, f"app={VICTIM}")
    fault = PodChaosFault(
        targets=(PRIMARY,),
        namespace=NAMESPACE,
        spec={"action": "pod-kill", "mode": "one", "selector": {"labelSelectors": {"app": VICTIM}}},
    )
    fault.inject(ctx)
    try:
        after = wait_for(
            lambda: (
                (p := running_pod(core, NAMESPACE, f"app={VICTIM}"))
                and p.metadata.uid != before.metadata.uid
                and p
            ),
            60,
            "a replacement pod",
        )
        assert after.metadata.name != before.metadata.name
    finally:
        fault.revert(ctx)


@pytest.mark.usefixtures("victim")
def test_container_kill_kills_the_process_and_the_node_restarts_it(
    ctx: KubeContext, core: client.CoreV1Api
) -> None:
    before = running_pod(core, NAMESPACE, f"app={VICTIM}")
    old = containers.pids(before.metadata.uid, "main")
    fault = PodChaosFault(
        targets=(PRIMARY,),
        namespace=NAMESPACE,
        spec={
            "action": "container-kill",
            "mode": "one",
            "containerNames": ("main",),
            "selector": {"labelSelectors": {"app": VICTIM}},
        },
    )
    fault.inject(ctx)
    try:
        pod = wait_for(
            lambda: (
                (p := core.read_namespaced_pod(before.metadata.name, NAMESPACE))
                and p.status.container_statuses[0].restart_count
                > before.status.container_statuses[0].restart_count
                and p
            ),
            60,
            "the container to restart",
        )
        assert pod.metadata.uid == before.metadata.uid, "the pod stayed; only its container died"
        assert pod.status.container_statuses[0].last_state.terminated.exit_code == 137
        assert not set(old) & set(containers.pids(before.metadata.uid, "main"))
    finally:
        fault.revert(ctx)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / 100


@pytest.mark.usefixtures("victim")
def test_stress_chaos_loads_the_node_and_ends_at_its_duration(
    ctx: KubeContext, core: client.CoreV1Api
) -> None:
    pod = running_pod(core, NAMESPACE, f"app={VICTIM}")
    memory = next(p for p in containers.container_cgroups(pod.metadata.uid, "main") if "/memory/" in str(p))
    baseline = int((memory / "memory.usage_in_bytes").read_text())
    fault = StressChaosFault(
        targets=(PRIMARY,),
        namespace=NAMESPACE,
        deadline_s=90,
        spec={
            "mode": "one",
            "selector": {"labelSelectors": {"app": VICTIM}},
            "duration": "45s",
            "stressors": {"cpu": {"workers": 1, "load": 100}, "memory": {"workers": 2, "size": "200MB"}},
        },
    )
    start = time.monotonic()
    fault.inject(ctx)
    try:
        wait_for(
            lambda: int((memory / "memory.usage_in_bytes").read_text()) - baseline > 190 << 20,
            25,
            "200 MB charged to the victim's memory cgroup (the size of both memory workers together)",
        )
        workers = containers.marked(pod.metadata.uid, "main", f"FLEETDRILL_CHAOS={fault_uid(ctx, fault)}")
        first = cpu_seconds(workers)
        # an idle container burns nothing; on a loaded 2-core machine a spinner still gets its share
        wait_for(lambda: cpu_seconds(workers) - first > 0.2, 25, "the stress workers to burn CPU")
        wait_for(
            lambda: (
                not containers.marked(pod.metadata.uid, "main", "FLEETDRILL_CHAOS=" + fault_uid(ctx, fault))
            ),
            60,
            "the stress workers to stop at the duration",
        )
        assert time.monotonic() - start >= 43, "the stress ended before its 45 s duration"
        wait_for(
            lambda: int((memory / "memory.usage_in_bytes").read_text()) - baseline < 50 << 20,
            20,
            "the memory to be given back",
        )
    finally:
        fault.revert(ctx)


def fault_uid(ctx: KubeContext, fault: StressChaosFault) -> str:
    obj = client.CustomObjectsApi(ctx.api_client(PRIMARY)).get_namespaced_custom_object(
        GROUP, VERSION, fault.namespace, fault.plural, fault.name
    )
    return obj["metadata"]["uid"]


@pytest.mark.usefixtures("victim")
def test_a_controller_restart_keeps_the_fault_and_reverts_it_at_its_duration(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NetworkChaos",
        "metadata": {"name": "restart"},
        "spec": {
            "action": "loss",
            "mode": "all",
            "selector": {"labelSelectors": {"app": VICTIM}},
            "loss": {"loss": "50"},
            "duration": "40s",
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "networkchaos", body)
    try:
        wait_for(
            lambda: condition(chaos(custom, "networkchaos", NAMESPACE, "restart"), "AllInjected"),
            30,
            "the loss to be injected",
        )
        pod = running_pod(core, NAMESPACE, f"app={VICTIM}")
        table = [t for t in tables(pod) if t.startswith("chaos_")]
        assert table, "no nftables table for the loss in the victim's namespace"
        selector = "app.kubernetes.io/component=controller-manager"
        old = running_pod(core, install.NAMESPACE, selector)
        core.delete_namespaced_pod(old.metadata.name, install.NAMESPACE, grace_period_seconds=0)
        wait_for(
            lambda: (
                not [
                    p
                    for p in core.list_namespaced_pod(install.NAMESPACE).items
                    if p.metadata.uid == old.metadata.uid
                ]
            ),
            60,
            "the old controller to be gone",
        )
        assert table[0] in tables(pod), "the fault went with its controller"
        wait_for(
            lambda: (
                (p := running_pod(core, install.NAMESPACE, selector)) and p.metadata.uid != old.metadata.uid
            ),
            120,
            "a new controller pod",
        )
        obj = wait_for(
            lambda: (
                (o := chaos(custom, "networkchaos", NAMESPACE, "restart"))
                and condition(o, "AllRecovered")
                and o
            ),
            120,
            "the new controller to recover the fault at its duration",
        )
        assert table[0] not in tables(pod)
        events = obj["status"]["experiment"]["containerRecords"][0]["events"]
        assert [e["operation"] for e in events] == ["Apply", "Recover"], events
        created = records.parse_time(obj["metadata"]["creationTimestamp"])
        recovered = records.parse_time(events[1]["timestamp"])
        assert (recovered - created).total_seconds() >= 40, "recovered before the duration"
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "networkchaos", "restart")
        wait_for(lambda: chaos(custom, "networkchaos", NAMESPACE, "restart") is None, 30, "the chaos to go")


@pytest.mark.usefixtures("victim")
def test_chaostoolkit_kubernetes_drives_chaos_mesh_objects(
    fleet_dir: Path, core: client.CoreV1Api, custom: client.CustomObjectsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaosk8s.chaosmesh.network.actions import add_latency, delete_network_fault, set_loss
    from chaosk8s.chaosmesh.stress.actions import delete_stressor, stress_cpu
    from chaosk8s.crd.actions import create_custom_object, delete_custom_object
    from kubernetes.config import kube_config

    monkeypatch.setenv("KUBECONFIG", str(fleet_dir / "kubeconfig"))  # read once at import by the client:
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(fleet_dir / "kubeconfig"))
    secrets = {"KUBERNETES_CONTEXT": PRIMARY}
    pod = running_pod(core, NAMESPACE, f"app={VICTIM}")
    selector = f"app={VICTIM}"

    def settles(plural: str, name: str, kind: str) -> dict:
        try:
            return wait_for(
                lambda: (
                    (o := chaos(custom, plural, NAMESPACE, name))
                    and condition(o, "Selected")
                    and condition(o, kind)
                    and o
                ),
                60,
                f"{plural} {name}: {kind}",
            )
        except AssertionError as error:
            status = (chaos(custom, plural, NAMESPACE, name) or {}).get("status")
            raise AssertionError(f"{error}; its status: {json.dumps(status)}") from None

    resource = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NetworkChaos",
        "metadata": {"name": "ctk-crd"},
        "spec": {
            "action": "partition",
            "mode": "all",
            "direction": "to",
            "selector": {"labelSelectors": {"app": VICTIM}},
            "externalTargets": ["192.0.2.1"],
        },
    }
    create_custom_object(GROUP, VERSION, "networkchaos", NAMESPACE, resource=resource, secrets=secrets)
    settles("networkchaos", "ctk-crd", "AllInjected")
    delete_custom_object(GROUP, VERSION, "networkchaos", "ctk-crd", NAMESPACE, secrets=secrets)
    wait_for(lambda: chaos(custom, "networkchaos", NAMESPACE, "ctk-crd") is None, 30, "ctk-crd to go")

    set_loss(
        "ctk-loss",
        NAMESPACE,
        label_selectors=selector,
        mode="all",
        loss="30",
        direction="to",
        target_label_selectors=selector,
        secrets=secrets,
    )
    settles("networkchaos", "ctk-loss", "AllInjected")
    assert any(t.startswith("chaos_") for t in tables(pod))
    delete_network_fault("ctk-loss", NAMESPACE, secrets=secrets)
    wait_for(lambda: chaos(custom, "networkchaos", NAMESPACE, "ctk-loss") is None, 30, "ctk-loss to go")
    assert not any(t.startswith("chaos_") for t in tables(pod))

    add_latency(
        "ctk-delay",
        NAMESPACE,
        label_selectors=selector,
        mode="all",
        latency="50ms",
        target_label_selectors=selector,
        secrets=secrets,
    )
    delay = wait_for(
        lambda: (
            (o := chaos(custom, "networkchaos", NAMESPACE, "ctk-delay"))
            and o.get("status", {}).get("experiment", {}).get("containerRecords", [{}])[0].get("events")
        ),
        30,
        "an event on the delay's record",
    )
    assert "netem" in delay[0]["message"] and delay[0]["type"] in ("Failed", "Succeeded")
    delete_network_fault("ctk-delay", NAMESPACE, secrets=secrets)
    wait_for(lambda: chaos(custom, "networkchaos", NAMESPACE, "ctk-delay") is None, 30, "ctk-delay to go")

    stress_cpu(
        "ctk-cpu",
        workers=1,
        load=20,
        ns=NAMESPACE,
        label_selectors=selector,
        mode="all",
        duration="60s",
        secrets=secrets,
    )
    settles("stresschaos", "ctk-cpu", "AllInjected")
    delete_stressor("ctk-cpu", NAMESPACE, secrets=secrets)
    wait_for(lambda: chaos(custom, "stresschaos", NAMESPACE, "ctk-cpu") is None, 30, "ctk-cpu to go")
    assert not containers.marked(pod.metadata.uid, "main", "FLEETDRILL_CHAOS="), "stress left running"
