"""The local fleet's ingress and GSLB as processes on the host, driven through the shared fleet's APIs.

Upstreams are HTTP servers in this process on the fleet's host transit address (an address
EndpointSlices accept); Services and EndpointSlices are written by hand, one slice per upstream
because every upstream has its own port.
"""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from harness.localfleet import kwatch
from harness.localfleet.state import FleetState
from tests.conftest import run_cli, wait_for

CONTEXTS = ("us-east", "eu-west", "ap-south")
INTERVAL, TIMEOUT, FALL, RISE = 1.0, 0.3, 2, 2
MARGIN_S = 1.5  # scheduling slack on a loaded two-core machine
START_S = 30.0


@dataclass
class Upstream:
    """An HTTP server that says who it is (X-Served-By), echoes requests and fails /readyz on demand."""

    name: str
    healthy: bool = True
    server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        upstream: Upstream = self.server.upstream
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/readyz":
            status, payload = (200, b"ok") if upstream.healthy else (503, b"failing")
        else:
            status = int(parse_qs(urlsplit(self.path).query).get("status", ["200"])[0])
            echo = {
                "method": self.command,
                "path": self.path,
                "body": body.decode(),
                "headers": dict(self.headers),
            }
            payload = json.dumps(echo).encode()
        self.send_response(status)
        self.send_header("X-Served-By", upstream.name)
        self.send_header("X-Upstream-Header", "kept")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream(fleet_dir: Path) -> Iterator[Callable[[str], Upstream]]:
    """Start named upstreams on the fleet's host address; all are shut down after the test."""
    host = str(FleetState.load(fleet_dir).plan.host_address)
    started: list[Upstream] = []

    def start(name: str) -> Upstream:
        up = Upstream(name)
        up.server = ThreadingHTTPServer((host, 0), _Handler)
        up.server.daemon_threads = True
        up.server.upstream = up
        threading.Thread(target=up.server.serve_forever, daemon=True).start()
        started.append(up)
        return up

    yield start
    for up in started:
        up.server.shutdown()
        up.server.server_close()


def dead_address(fleet_dir: Path) -> tuple[str, int]:
    """An address on the host where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((str(FleetState.load(fleet_dir).plan.host_address), 0))
        return sock.getsockname()[:2]


@pytest.fixture
def namespace(api) -> Iterator[str]:
    """A namespace of this test's own in every cluster, deleted afterwards."""
    name = f"ig-{uuid.uuid4().hex[:8]}"
    for ctx in CONTEXTS:
        client.CoreV1Api(api(ctx)).create_namespace({"metadata": {"name": name}})
    yield name
    for ctx in CONTEXTS:
        try:
            client.CoreV1Api(api(ctx)).delete_namespace(name, _request_timeout=10)
        except Exception as error:  # a cluster whose API a test took away; its namespace goes with the fleet
            print(f"namespace {name} in {ctx} not deleted: {error}")


def publish(api_client: client.ApiClient, ns: str, endpoints: list[tuple[tuple[str, int], bool]]) -> None:
    """Service `web` (no selector) and one EndpointSlice per endpoint: web-0, web-1, ..."""
    client.CoreV1Api(api_client).create_namespaced_service(
        ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}}
    )
    for i, (address, ready) in enumerate(endpoints):
        client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(
            ns, _slice(f"web-{i}", address, ready)
        )


def _slice(name: str, address: tuple[str, int], ready: bool) -> dict:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address[0]], "conditions": {"ready": ready, "serving": ready}}],
        "ports": [{"name": "http", "port": address[1], "protocol": "TCP"}],
    }


def set_ready(api_client: client.ApiClient, ns: str, index: int, ready: bool) -> None:
    slices = client.DiscoveryV1Api(api_client)
    current = slices.read_namespaced_endpoint_slice(f"web-{index}", ns)
    address = (current.endpoints[0].addresses[0], current.ports[0].port)
    slices.replace_namespaced_endpoint_slice(f"web-{index}", ns, _slice(f"web-{index}", address, ready))


@dataclass
class Spawned:
    """A fleet service started on the host; its log file holds its stderr."""

    name: str
    log: Path
    proc: subprocess.Popen

    def url(self) -> str:
        """Wait for the `listening on ADDR:PORT` line and return http://ADDR:PORT."""

        def listening() -> str | None:
            text = self.log.read_text()
            for line in text.splitlines():
                if " listening on " in line:
                    return "http://" + line.split(" listening on ")[1].split()[0]
            assert self.proc.poll() is None, f"{self.name} exited: {text[-2000:]}"
            return None

        return wait_for(listening, START_S, f"{self.name} to listen")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Spawned]]:
    """Start `python -m harness.localfleet.<module> ARGS --listen 127.0.0.1:0`; killed after the test."""
    procs: list[subprocess.Popen] = []

    def start(module: str, name: str, *args: str) -> Spawned:
        log = tmp_path / f"{name}.log"
        argv = [sys.executable, "-m", f"harness.localfleet.{module}", *args, "--listen", "127.0.0.1:0"]
        with log.open("w") as out:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        return Spawned(name, log, procs[-1])

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


def request(url: str, path: str = "/", method: str = "GET", body: bytes = b"", headers: dict | None = None):
    """One HTTP request; returns (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def served(url: str, count: int) -> Counter:
    """Who served each of `count` requests over one keep-alive connection (status != 200 counts as such)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    seen: Counter = Counter()
    try:
        for _ in range(count):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            seen[response.headers["X-Served-By"] if response.status == 200 else response.status] += 1
    finally:
        conn.close()
    return seen


def ingress(spawn: Callable[..., Spawned], fleet_dir: Path, ctx: str, ns: str) -> Spawned:
    flags = {"kubeconfig": fleet_dir / "kubeconfig", "context": ctx, "namespace": ns, "service": "web"}
    return spawn("ingress", f"ingress-{ctx}", *_argv(flags | {"port-name": "http"}))


def _argv(flags: dict[str, object]) -> list[str]:
    return [arg for flag, value in flags.items() for arg in (f"--{flag}", str(value))]


def test_ingress_balances_over_ready_endpoints_and_follows_the_watch(
    fleet_dir, api, namespace, upstream, spawn
):
    a, b, c = upstream("a"), upstream("b"), upstream("c")
    publish(api("us-east"), namespace, [(a.address, True), (b.address, True), (c.address, False)])
    proxy = ingress(spawn, fleet_dir, "us-east", namespace)
    url = proxy.url()
    wait_for(lambda: request(url)[0] == 200, START_S, "the ingress to serve")
    assert served(url, 30) == {"a": 15, "b": 15}, "round robin over the ready endpoints only"

    set_ready(api("us-east"), namespace, 2, True)
    set_ready(api("us-east"), namespace, 0, False)
    wait_for(lambda: set(served(url, 6)) == {"b", "c"}, 5, "the watch to bring c in and take a out")

    client.DiscoveryV1Api(api("us-east")).delete_namespaced_endpoint_slice("web-1", namespace)
    set_ready(api("us-east"), namespace, 2, False)
    wait_for(lambda: request(url)[0] == 503, 5, "503 once no endpoint is ready")
    status, _, body = request(url)
    assert status == 503 and f"no ready endpoint for service {namespace}/web" in body.decode()
    changes = [line for line in proxy.log.read_text().splitlines() if "endpoints of" in line]
    assert 3 <= len(changes) <= 5, "one log line per change of the ready set, none per request"


def test_ingress_forwards_faithfully_and_retries_a_refused_endpoint_once(
    fleet_dir, api, namespace, upstream, spawn
):
    echo, dead = upstream("echo"), dead_address(fleet_dir)
    publish(api("us-east"), namespace, [(dead, True), (echo.address, True)])
    url = ingress(spawn, fleet_dir, "us-east", namespace).url()
    wait_for(lambda: request(url)[0] == 200, START_S, "the ingress to serve")

    headers = {"X-Test": "yes", "X-Forwarded-For": "10.9.8.7", "Content-Type": "text/plain"}
    for _ in range(4):  # every other request meets the refused endpoint first and moves on
        status, got, body = request(url, "/orders/7?status=201&q=a%20b", "POST", b"payload", headers)
        assert (status, got["X-Served-By"], got["X-Upstream-Header"]) == (201, "echo", "kept")
        seen = json.loads(body)
        assert (seen["method"], seen["path"], seen["body"]) == (
            "POST",
            "/orders/7?status=201&q=a%20b",
            "payload",
        )
        assert seen["headers"]["X-Test"] == "yes"
        assert seen["headers"]["X-Forwarded-For"] == "10.9.8.7, 127.0.0.1"

    set_ready(api("us-east"), namespace, 1, False)
    wait_for(lambda: request(url)[0] == 502, 5, "502 once the only ready endpoint refuses")
    assert b"no upstream answered" in request(url)[2]


def test_changed_at_and_choose_follow_the_documented_rule() -> None:
    def obj(created: str, fields: list[tuple[str, str | None]], stamp: str | None = None) -> dict:
        managed = [{"time": t, **({"subresource": s} if s else {})} for t, s in fields]
        meta = {"name": "app", "creationTimestamp": created, "managedFields": managed}
        if stamp:
            meta["annotations"] = {kwatch.CHANGED_AT: stamp}
        return {"metadata": meta}

    by_fields = obj(
        "2030-01-01T00:00:00Z", [("2030-01-01T00:00:05Z", None), ("2030-01-01T00:09:00Z", "status")]
    )
    by_stamp = obj("2030-01-01T00:00:00Z", [("2030-01-01T00:00:09Z", None)], "2030-01-01T00:00:03.250Z")
    assert kwatch.changed_at(by_fields) == datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC), "status writes ignored"
    assert kwatch.changed_at(by_stamp) == datetime(2030, 1, 1, 0, 0, 3, 250000, tzinfo=UTC), (
        "annotation first"
    )
    assert kwatch.choose({"us-east": by_stamp, "eu-west": None, "ap-south": by_fields})[0] == "ap-south"
    assert kwatch.choose({"us-east": by_fields, "eu-west": by_fields})[0] == "us-east", "tie: earlier context"
    assert kwatch.choose({"us-east": None}) is None


class _Stop(BaseException):
    """Ends a Reflector's endless loop in a test."""


def test_reflector_lists_again_after_410_and_drops_what_the_new_list_lacks() -> None:
    def obj(name: str, version: str) -> dict:
        return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}

    def events(*items: dict) -> bytes:
        return b"".join(json.dumps(item).encode() + b"\n" for item in items)

    replies = [
        {"metadata": {"resourceVersion": "1"}, "items": [obj("a", "1"), obj("b", "1")]},
        events(
            {"type": "DELETED", "object": obj("a", "2")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3"}}},
        ),
        events({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}),
        {"metadata": {"resourceVersion": "9"}, "items": [obj("c", "9")]},
    ]
    calls: list[dict] = []

    def list_fn(**kwargs: object) -> SimpleNamespace:
        """Just enough of a urllib3 response for the Reflector."""
        calls.append(kwargs)
        if not replies:
            raise _Stop
        reply = replies.pop(0)
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        return SimpleNamespace(
            data=data, stream=lambda **_: iter([data]), close=lambda: None, release_conn=lambda: None
        )

    seen: list[list[str]] = []
    reflector = kwatch.Reflector("test", list_fn, lambda r: seen.append(sorted(r.store)), lambda _: None)
    with pytest.raises(_Stop):
        reflector.run()
    assert seen == [["ns/a", "ns/b"], ["ns/b"], ["ns/c"]]
    watches = [(c.get("watch"), c.get("resource_version"), c.get("allow_watch_bookmarks")) for c in calls]
    assert watches == [
        (None, None, None),
        (True, "1", True),
        (True, "3", True),
        (None, None, None),
        (True, "9", True),
    ]


@dataclass
class Global:
    """Three clusters, each with an upstream behind its ingress, and the GSLB in front."""

    url: str
    upstreams: dict[str, Upstream]
    truth: Path

    def state(self) -> dict:
        return json.loads(request(self.url, "/-/gslb")[2])

    def serving_only(self, name: str, count: int = 4) -> bool:
        return served(self.url, count) == {name: count}


@pytest.fixture(scope="session")
def gslb_crd(api) -> None:
    for ctx in CONTEXTS:
        kwatch.install_crd(api(ctx))


def gslb_object(primary: str, kind: str = "failover", stamp: datetime | None = None) -> dict:
    backend = {"service": {"name": "web", "port": {"name": "http"}}}
    rule = {
        "host": "app.fleet.test",
        "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
    }
    annotations = {kwatch.CHANGED_AT: stamp.isoformat()} if stamp else {}
    return {
        "apiVersion": f"{kwatch.GROUP}/{kwatch.VERSION}",
        "kind": "Gslb",
        "metadata": {"name": "app", "annotations": annotations},
        "spec": {"ingress": {"rules": [rule]}, "strategy": {"type": kind, "primaryGeoTag": primary}},
    }


def set_strategy(api_client: client.ApiClient, ns: str, primary: str, kind: str, stamp: datetime) -> None:
    """What a promoter does: merge-patch the strategy and the changed-at annotation."""
    body = gslb_object(primary, kind, stamp)
    patch = {"metadata": body["metadata"], "spec": {"strategy": body["spec"]["strategy"]}}
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        kwatch.GROUP, kwatch.VERSION, ns, kwatch.PLURAL, "app", patch
    )


@pytest.fixture
def fleet_gslb(fleet_dir, api, namespace, upstream, spawn, gslb_crd, tmp_path) -> Global:
    ups = {ctx: upstream(ctx) for ctx in CONTEXTS}
    handles = {}
    for ctx in CONTEXTS:
        publish(api(ctx), namespace, [(ups[ctx].address, True)])
        client.CustomObjectsApi(api(ctx)).create_namespaced_custom_object(
            kwatch.GROUP, kwatch.VERSION, namespace, kwatch.PLURAL, gslb_object("us-east")
        )
        handles[ctx] = ingress(spawn, fleet_dir, ctx, namespace)
    backends = ",".join(f"{ctx}={handles[ctx].url()}" for ctx in CONTEXTS)
    truth = tmp_path / "ground-truth.jsonl"
    flags = {"kubeconfig": fleet_dir / "kubeconfig", "contexts": ",".join(CONTEXTS), "namespace": namespace}
    flags |= {"name": "app", "backends": backends, "interval": INTERVAL, "timeout": TIMEOUT}
    flags |= {"fall": FALL, "rise": RISE, "ground-truth": truth}
    url = spawn("gslb", "gslb", *_argv(flags)).url()
    glob = Global(url, ups, truth)
    wait_for(
        lambda: (
            glob.state()["target"] == "us-east"
            and all(b["healthy"] for b in glob.state()["backends"].values())
        ),
        START_S,
        "the GSLB to see every cluster healthy and serve the primary",
    )
    return glob


def test_gslb_fails_over_when_the_primary_fails_health_checks_and_comes_back(fleet_gslb: Global) -> None:
    assert fleet_gslb.serving_only("us-east", 10)
    fleet_gslb.upstreams["us-east"].healthy = False
    failed = time.monotonic()
    wait_for(lambda: fleet_gslb.serving_only("eu-west"), FALL * INTERVAL + TIMEOUT + MARGIN_S, "failover")
    print(f"failed over in {time.monotonic() - failed:.3f} s")
    assert time.monotonic() - failed >= (FALL - 1) * INTERVAL - TIMEOUT, "one failed check must not fail over"
    state = fleet_gslb.state()
    assert state["target"] == "eu-west" and state["backends"]["us-east"]["healthy"] is False

    fleet_gslb.upstreams["us-east"].healthy = True
    wait_for(lambda: fleet_gslb.serving_only("us-east"), RISE * INTERVAL + TIMEOUT + MARGIN_S, "failback")
    events = [json.loads(line) for line in fleet_gslb.truth.read_text().splitlines()]
    moves = [e["serving"] for e in events if e["event"] == "serving"]
    assert moves[-3:] == [["us-east"], ["eu-west"], ["us-east"]]
    assert any(e["event"] == "health" and e["backend"] == "us-east" and not e["healthy"] for e in events)


def test_gslb_follows_the_most_recently_changed_gslb_object(fleet_gslb: Global, api, namespace) -> None:
    now = datetime.now(UTC)
    set_strategy(api("eu-west"), namespace, "ap-south", "failover", now)  # the other two still say us-east
    changed = time.monotonic()
    wait_for(lambda: fleet_gslb.serving_only("ap-south", 2), INTERVAL, "traffic to move within one interval")
    print(f"primary change applied in {time.monotonic() - changed:.3f} s")
    assert fleet_gslb.state()["source"]["context"] == "eu-west"

    older = now - timedelta(hours=1)
    set_strategy(api("us-east"), namespace, "us-east", "failover", older)
    wait_for(
        lambda: fleet_gslb.state()["apis"]["us-east"]["changedAt"] == older.isoformat(), 5, "the old write"
    )
    assert fleet_gslb.serving_only("ap-south"), "an older change must not win"

    set_strategy(api("us-east"), namespace, "us-east", "failover", now + timedelta(seconds=1))
    wait_for(lambda: fleet_gslb.serving_only("us-east", 2), INTERVAL, "the newer change to win")


def test_gslb_round_robin_spreads_over_healthy_clusters(fleet_gslb: Global, api, namespace) -> None:
    set_strategy(api("ap-south"), namespace, "us-east", "roundRobin", datetime.now(UTC))
    wait_for(lambda: len(served(fleet_gslb.url, 3)) == 3, 5, "round robin")
    assert served(fleet_gslb.url, 30) == {"us-east": 10, "eu-west": 10, "ap-south": 10}
    fleet_gslb.upstreams["eu-west"].healthy = False
    wait_for(lambda: set(served(fleet_gslb.url, 6)) == {"us-east", "ap-south"}, 10, "eu-west left out")

    def status() -> dict:
        return (
            client.CustomObjectsApi(api("us-east"))
            .get_namespaced_custom_object_status(
                kwatch.GROUP, kwatch.VERSION, namespace, kwatch.PLURAL, "app"
            )
            .get("status", {})
        )

    wait_for(lambda: status().get("servingClusters") == ["us-east", "ap-south"], 5, "the status to follow")
    assert status()["clusterHealth"]["eu-west"] == "Unhealthy"
    assert len(status()["healthyRecords"]["app.fleet.test"]) == 2


def test_gslb_keeps_following_the_surviving_apis_when_one_is_lost(
    fleet_gslb: Global, api, namespace, fleet_dir
):
    try:
        # A lost cluster's API goes silent (its links are down): the GSLB keeps its last view of it.
        run_cli("fleet", "stop", "ap-south", "--dir", fleet_dir)
        assert fleet_gslb.serving_only("us-east")
        set_strategy(api("eu-west"), namespace, "eu-west", "failover", datetime.now(UTC))
        wait_for(lambda: fleet_gslb.serving_only("eu-west", 2), INTERVAL, "eu-west's change to apply")
    finally:
        run_cli("fleet", "start", "ap-south", "--dir", fleet_dir)
    wait_for(lambda: fleet_gslb.state()["apis"]["ap-south"]["synced"], 20, "the GSLB to see ap-south again")
    assert fleet_gslb.serving_only("eu-west"), "ap-south's older object must not take over on its return"
