"""Services through the real kube-proxy on every node: a ClusterIP reaches every endpoint, refuses at once
when it has none, and pods get the service variables the kubelet sets."""

import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, watch

from harness.localfleet import build, netns, nodes, supervisor
from harness.localfleet.state import FleetState
from tests.conftest import wait_for

CONTEXT = "us-east"
SLICES = "kubernetes.io/service-name=web"
PROBE = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
while True:
    start, outcome = time.monotonic(), "refused"
    try:
        with socket.create_connection((host, port), timeout=1) as conn:
            conn.sendall(b"GET /name HTTP/1.0\r\n\r\n")
            reply = b"".join(iter(lambda: conn.recv(4096), b""))
        outcome = "ok " + reply.split(b"\r\n\r\n", 1)[-1].decode().strip()
    except ConnectionRefusedError:
        pass
    except OSError as error:
        outcome = f"error {error}"
    print(f"{start:.6f} {time.monotonic() - start:.6f} {outcome}", flush=True)
    time.sleep(0.005)
"""
CLIENT = r"""
import http.server, json, os, ssl, urllib.request
SA = "/var/run/secrets/kubernetes.io/serviceaccount"
def fetch(url, **kwargs):
    try:
        with urllib.request.urlopen(url, timeout=2, **kwargs) as response:
            return response.read().decode()
    except OSError as error:
        return f"error: {error}"
class Report(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        env = os.environ
        api = urllib.request.Request(
            f"https://{env['KUBERNETES_SERVICE_HOST']}:{env['KUBERNETES_SERVICE_PORT']}/version",
            headers={"Authorization": "Bearer " + open(f"{SA}/token").read()},
        )
        web = f"http://{env['WEB_SERVICE_HOST']}:{env['WEB_SERVICE_PORT']}/name"
        body = json.dumps({
            "env": {k: v for k, v in env.items() if k.startswith(("KUBERNETES_", "WEB_"))},
            "api": fetch(api, context=ssl.create_default_context(cafile=f"{SA}/ca.crt")),
            "web": sorted({fetch(web) for _ in range(20)}),
        }).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8080), Report).serve_forever()
"""


def _deployment(name: str, command: list[str], replicas: int, extra: dict | None = None) -> dict:
    """Pods of python:3.11 running `command` (a real program here), Ready once they serve HTTP on 8080."""
    container = {
        "name": name,
        "image": "python:3.11",
        "command": command,
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    spec = {"terminationGracePeriodSeconds": 1, "containers": [container], **(extra or {})}
    if name == "web":  # each pod serves its own name at /name
        container["volumeMounts"] = [{"name": "who", "mountPath": "/srv/who", "readOnly": True}]
        spec["volumes"] = [
            {
                "name": "who",
                "projected": {
                    "sources": [
                        {
                            "downwardAPI": {
                                "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                            }
                        }
                    ]
                },
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


@dataclass(frozen=True)
class Web:
    """The `web` Service of a test namespace and the Ready pods behind it."""

    namespace: str
    cluster_ip: str
    pods: list[client.V1Pod]


@pytest.fixture
def web(api) -> Iterator[Web]:
    """Two pods serving their names over HTTP behind a ClusterIP Service `web` (port 80), in a namespace
    of the test's own."""
    core, namespace = client.CoreV1Api(api(CONTEXT)), f"svc-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        command = ["python3", "-m", "http.server", "8080", "--directory", "/srv/who"]
        client.AppsV1Api(api(CONTEXT)).create_namespaced_deployment(namespace, _deployment("web", command, 2))
        service = {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
        cluster_ip = core.create_namespaced_service(namespace, service).spec.cluster_ip

        def ready() -> list[client.V1Pod]:
            pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
            ready = [
                p
                for p in pods
                if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            return ready if len(ready) == 2 else []

        yield Web(namespace, cluster_ip, wait_for(ready, 60, "two Ready web pods"))
    finally:
        core.delete_namespace(namespace)


@dataclass(frozen=True)
class Sample:
    start: float
    elapsed: float
    outcome: str


@contextmanager
def _prober(fleet_dir: Path, host: str, port: int) -> Iterator[list[Sample]]:
    """Connections to host:port from the network namespace of the cluster's first node, every 5 ms, each a
    timestamped sample (monotonic clock, shared with this process)."""
    state = FleetState.load(fleet_dir)
    cluster = state.cluster(CONTEXT)
    node = nodes.node_specs(cluster.name, cluster.region, cluster.nodes, cluster.netns_prefix(state.plan))[0]
    argv = netns.enter_argv(node.netns, [sys.executable, "-c", PROBE, host, str(port)])
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    samples: list[Sample] = []

    def read() -> None:
        for line in process.stdout:
            start, elapsed, outcome = line.split(" ", 2)
            samples.append(Sample(float(start), float(elapsed), outcome.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield samples
    finally:
        process.kill()
        process.wait(timeout=10)
        reader.join(timeout=10)


def _set_selector(
    api_client: client.ApiClient, namespace: str, app: str, wanted: Callable[[int], bool]
) -> float:
    """Point the Service at pods labelled app; return when (monotonic) a watch saw its EndpointSlice
    with a number of ready endpoints that is `wanted`."""
    discovery = client.DiscoveryV1Api(api_client)
    listed = discovery.list_namespaced_endpoint_slice(namespace, label_selector=SLICES)
    client.CoreV1Api(api_client).patch_namespaced_service(
        "web", namespace, {"spec": {"selector": {"app": app}}}
    )
    slices = watch.Watch()
    for event in slices.stream(
        discovery.list_namespaced_endpoint_slice,
        namespace,
        label_selector=SLICES,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=30,
    ):
        endpoints = event["object"].endpoints or []
        if wanted(sum(1 for e in endpoints if e.conditions.ready)):
            seen = time.monotonic()
            slices.stop()
            return seen
    raise AssertionError("the EndpointSlice of web never changed as expected")


def _since(samples: list[Sample], start: float, count: int) -> list[Sample]:
    """The samples taken from start on, once there are at least count of them."""
    later = [s for s in list(samples) if s.start >= start]
    return later if len(later) >= count else []


def _first(samples: list[Sample], after: float, outcome: str) -> Sample | None:
    return next((s for s in list(samples) if s.start >= after and s.outcome.startswith(outcome)), None)


def test_cluster_ip_reaches_every_endpoint_and_refuses_without_any(
    api, fleet_dir, web, record_property
) -> None:
    names = {p.metadata.name for p in web.pods}
    with _prober(fleet_dir, web.cluster_ip, 80) as samples:
        wait_for(
            lambda: {s.outcome.removeprefix("ok ") for s in list(samples)} >= names,
            30,
            f"the ClusterIP {web.cluster_ip} to reach both pods {sorted(names)}",
        )
        emptied = _set_selector(api(CONTEXT), web.namespace, "nothing", lambda n: n == 0)
        refused = wait_for(lambda: _first(samples, emptied, "refused"), 10, "connections to be refused")
        after = wait_for(lambda: _since(samples, refused.start, 20), 10, "20 samples after the first refusal")
        assert all(s.outcome == "refused" and s.elapsed < 0.5 for s in after), [
            s for s in after if s.outcome != "refused" or s.elapsed >= 0.5
        ][:3]
        filled = _set_selector(api(CONTEXT), web.namespace, "web", lambda n: n > 0)
        served = wait_for(lambda: _first(samples, filled, "ok"), 10, "the ClusterIP to serve again")
    removed_s, added_s = refused.start - emptied, served.start - filled
    record_property("endpoints_removed_to_refused_s", round(removed_s, 3))
    record_property("endpoints_added_to_served_s", round(added_s, 3))
    print(f"EndpointSlice change to rules in effect: removed {removed_s:.3f} s, added {added_s:.3f} s")
    assert removed_s < 3 and added_s < 3, "kube-proxy syncs at most once a second (min-sync-period 1s)"


def test_pods_see_service_variables_and_reach_the_api_through_its_cluster_ip(api, web) -> None:
    core = client.CoreV1Api(api(CONTEXT))
    beside = {"nodeSelector": {"kubernetes.io/hostname": web.pods[0].spec.node_name}}  # one endpoint local
    client.AppsV1Api(api(CONTEXT)).create_namespaced_deployment(
        web.namespace, _deployment("client", ["python3", "-c", CLIENT], 1, beside)
    )
    pod = wait_for(
        lambda: [
            p
            for p in core.list_namespaced_pod(web.namespace, label_selector="app=client").items
            if p.status.pod_ip
        ],
        60,
        "the client pod to run",
    )[0]

    def report() -> dict | None:
        try:
            with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=10) as response:
                found = json.loads(response.read())
        except OSError:
            return None
        served = set(found["web"]) == {p.metadata.name for p in web.pods}
        return found if served and not found["api"].startswith("error") else None

    found = wait_for(report, 60, "the client pod to reach the API and both web pods through their ClusterIPs")
    kubernetes = core.read_namespaced_service("kubernetes", "default").spec
    env = found["env"]
    assert env["KUBERNETES_SERVICE_HOST"] == kubernetes.cluster_ip
    assert env["KUBERNETES_SERVICE_PORT"] == env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == f"tcp://{kubernetes.cluster_ip}:443"
    assert env["WEB_SERVICE_HOST"] == web.cluster_ip
    assert env["WEB_SERVICE_PORT"] == env["WEB_SERVICE_PORT_HTTP"] == env["WEB_PORT_80_TCP_PORT"] == "80"
    assert env["WEB_PORT"] == env["WEB_PORT_80_TCP"] == f"tcp://{web.cluster_ip}:80"
    assert (env["WEB_PORT_80_TCP_PROTO"], env["WEB_PORT_80_TCP_ADDR"]) == ("tcp", web.cluster_ip)
    assert json.loads(found["api"])["gitVersion"] == build.KUBE.pin("k8s.io/kubernetes")


def test_every_node_runs_kube_proxy_inside_its_own_namespace(api, fleet_dir, record_property) -> None:
    rows = {row.component: row for row in supervisor.status(fleet_dir) if row.cluster == CONTEXT}
    node_list = client.CoreV1Api(api(CONTEXT)).list_node().items
    for node in node_list:
        proxy = rows.get(f"{node.metadata.name}-proxy")
        assert proxy and proxy.up, f"{node.metadata.name} has no running kube-proxy"
        address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
        healthz = f"http://{address}:{nodes.PROXY_HEALTHZ_PORT}/healthz"

        def healthy(url: str = healthz) -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return json.loads(response.read())["healthy"]
            except OSError:
                return False

        wait_for(healthy, 30, f"{healthz} to report healthy")
    rss = {name: row.rss_bytes for name, row in rows.items() if name.endswith("-proxy")}
    record_property("kube_proxy_rss_mb", {name: round(b / 2**20) for name, b in rss.items()})
    print("kube-proxy RSS:", ", ".join(f"{name} {b / 2**20:.0f} MB" for name, b in sorted(rss.items())))
    host = subprocess.run(["nft", "list", "table", "ip", "kube-proxy"], capture_output=True, timeout=30)
    assert host.returncode != 0, "kube-proxy's rules must live in the node namespaces, not on the host"
