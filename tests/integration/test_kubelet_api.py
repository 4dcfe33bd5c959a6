"""The node agent's kubelet API through the real API server and kubectl: logs (follow, previous), exec,
attach (kubectl attach, kubectl run -i/-it --rm, a container's terminal) and port forwarding, over each
way a client reaches it (kubectl's WebSocket, which the API server turns into SPDY; SPDY itself; a v4
WebSocket, which the API server passes through: the Python client's port forwarding), and the Summary
API through the node proxy (/api/v1/nodes/NODE/proxy/stats/summary)."""

import fcntl
import http.client
import json
import os
import queue
import re
import shlex
import socket
import ssl
import struct
import subprocess
import termios
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import websocket
from kubernetes import client
from kubernetes.stream import portforward

from harness.localfleet.nodeagent import streams
from tests.conftest import wait_for

CONTEXT = "us-east"
FIRST_LINE = "hello from the talker"
TALKER = f"""
import itertools, os, sys, time
print({FIRST_LINE!r}, flush=True)
for n in itertools.count():
    if os.path.exists("/srv/talker/stop"):
        os.remove("/srv/talker/stop")
        print("stopping", flush=True)
        sys.exit(1)
    print(f"tick {{n}} {{time.time():.3f}}", flush=True)
    time.sleep(0.2)
"""
TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}}
FORWARD_TRANSPORTS = {"websocket": {}, "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}}
WEB_PORT, SILENT_PORT = 8000, 8001  # the web pod serves on the first; nobody listens on the second
WEB = (
    'echo "served by $HOSTNAME" > /srv/web/index.html && '
    f"exec python3 -m http.server {WEB_PORT} --bind 127.0.0.1 --directory /srv/web"
)
GREETER = "import sys; print('hello', sys.stdin.readline().strip(), flush=True)"
FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> ")
BURN_CORES, HOLD_MIB = 0.5, 64  # the burner's CPU limit (its CFS quota) and the memory it holds
NS_PER_S, MIB = 1_000_000_000, 1 << 20
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")
PROMPT = "fleetdrill$ "  # the shells' PS1
ANSWER_S = 3.0  # how long a typed command's answer is awaited before it is typed again

Kubectl = Callable[..., list[str]]


def _deployment() -> dict:
    """One pod printing FIRST_LINE, then a tick a 0.2 s; it exits once /srv/talker/stop appears."""
    container = {
        "name": "talker",
        "image": "python:3.11",
        "command": ["python3", "-c", TALKER],
        "volumeMounts": [{"name": "scratch", "mountPath": "/srv/talker"}],
    }
    spec = {"terminationGracePeriodSeconds": 1, "containers": [container]}
    spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "talker"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "talker"}},
            "template": {"metadata": {"labels": {"app": "talker"}}, "spec": spec},
        },
    }


@pytest.fixture(scope="module")
def talker(api) -> Iterator[client.V1Pod]:
    """The running talker pod, in a namespace of this module's own (deleted at the end)."""
    core, apps = client.CoreV1Api(api(CONTEXT)), client.AppsV1Api(api(CONTEXT))
    namespace = f"kubelet-api-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        apps.create_namespaced_deployment(namespace, _deployment())

        def running() -> client.V1Pod | None:
            for pod in core.list_namespaced_pod(namespace, label_selector="app=talker").items:
                statuses = pod.status.container_statuses or []
                if statuses and statuses[0].state.running:
                    return pod
            return None

        yield wait_for(running, 60, "the talker pod to run")
    finally:
        core.delete_namespace(namespace)


@pytest.fixture
def kubectl_argv(fleet_dir: Path, kubectl_bin: Path, talker: client.V1Pod) -> Kubectl:
    """The argv of a kubectl command in the talker's namespace."""
    base = [str(kubectl_bin), "--kubeconfig", str(fleet_dir / "kubeconfig"), "--context", CONTEXT]
    return lambda *args: [*base, "-n", talker.metadata.namespace, *args]


@pytest.fixture(scope="module")
def web(api, talker: client.V1Pod) -> client.V1Pod:
    """A Ready pod in the talker's namespace serving HTTP on 127.0.0.1:WEB_PORT only: reachable from
    inside its network namespace, not at its pod IP."""
    core, namespace = client.CoreV1Api(api(CONTEXT)), talker.metadata.namespace
    listening = f"import socket; socket.create_connection(('127.0.0.1', {WEB_PORT}), 1)"
    container = {
        "name": "web",
        "image": "python:3.11",
        "command": ["sh", "-c", WEB],
        "readinessProbe": {"exec": {"command": ["python3", "-c", listening]}, "periodSeconds": 1},
        "volumeMounts": [{"name": "site", "mountPath": "/srv/web"}],
    }
    spec = {"terminationGracePeriodSeconds": 1, "containers": [container]}
    spec["volumes"] = [{"name": "site", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, {"metadata": {"name": "web"}, "spec": spec})

    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("web", namespace)
        conditions = pod.status.conditions or []
        return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None

    return wait_for(ready, 60, "the web pod to be ready")


def _lines(process: subprocess.Popen) -> queue.Queue[str]:
    """The lines a process writes to stdout and stderr, as they come."""
    lines: queue.Queue[str] = queue.Queue()
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=lambda s=stream: [lines.put(line) for line in s], daemon=True).start()
    return lines


def _line_with(lines: queue.Queue[str], text: str, deadline_s: float) -> str:
    """The next line holding `text`, within the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        if text in line:
            return line


class _Screen:
    """What a program writes to a terminal, read as it comes (by a thread of its own)."""

    def __init__(self, terminal: int) -> None:
        self.text, self.changed = "", threading.Condition()
        threading.Thread(target=self._read, args=(terminal,), daemon=True).start()

    def _read(self, terminal: int) -> None:
        while True:
            try:
                data = os.read(terminal, 4096)
            except OSError:  # the program has gone, or the terminal was closed
                return
            if not data:
                return
            with self.changed:
                self.text += data.decode(errors="replace")
                self.changed.notify_all()

    def wait_for(self, text: str, deadline_s: float, since: int = 0) -> None:
        """Wait until `text` shows (after the first `since` characters)."""
        with self.changed:
            if not self.changed.wait_for(lambda: text in self.text[since:], deadline_s):
                raise AssertionError(f"{text!r} did not show within {deadline_s} s: {self.text!r}")

    def answer(self, terminal: int, keys: bytes, text: str, deadline_s: float) -> None:
        """Type `keys` until `text` shows after them (what they run may need a moment to apply)."""
        deadline = time.monotonic() + deadline_s
        while True:
            since = len(self.text)
            os.write(terminal, keys)
            try:
                return self.wait_for(text, min(ANSWER_S, max(deadline - time.monotonic(), 0.01)), since)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise


def _client_terminal(rows: int = 24, columns: int = 80) -> tuple[int, int]:
    """A terminal for kubectl (master, kubectl's end) of this size that echoes nothing itself, so what
    echoes came from the container's terminal."""
    master, side = os.openpty()
    attributes = termios.tcgetattr(side)
    attributes[3] &= ~termios.ECHO
    termios.tcsetattr(side, termios.TCSANOW, attributes)
    _size(master, rows, columns)
    return master, side


def _size(terminal: int, rows: int, columns: int) -> None:
    """Set a terminal's window size (the kernel signals SIGWINCH to its foreground process group)."""
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


@contextmanager
def _port_forward(argv: list[str], env: dict) -> Iterator[tuple[subprocess.Popen, int, queue.Queue[str]]]:
    """`kubectl port-forward ... :PORT` running: (the process, the local port it chose, its output)."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | env
    )
    lines = _lines(process)
    try:
        yield process, int(FORWARDING.match(_line_with(lines, "Forwarding from 127.0.0.1:", 30))[1]), lines
    finally:
        process.terminate()
        process.wait(timeout=10)


def _get(port: int) -> tuple[int, str]:
    """GET / from a local port: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def _gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except client.ApiException as error:
        return error.status == 404
    return False


def _run(argv: list[str], stdin: str | None = None, env: dict | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command run to completion."""
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, env=os.environ | (env or {})
    )
    return done.returncode, done.stdout, done.stderr


def test_spdy_header_dictionary_is_the_spdy3_one() -> None:
    """Its Adler-32 is what the zlib header names; Go's reader refuses any other dictionary."""
    assert (zlib.adler32(streams.SPDY_DICTIONARY), len(streams.SPDY_DICTIONARY)) == (0xE3C6A7C2, 1423)


def test_logs_show_the_output(kubectl_argv: Kubectl, talker: client.V1Pod) -> None:
    name = talker.metadata.name

    def three_ticks() -> str:
        code, out, _ = _run(kubectl_argv("logs", name))
        return out if code == 0 and "tick 2 " in out else ""

    assert wait_for(three_ticks, 30, "three ticks in kubectl logs").splitlines()[0] == FIRST_LINE
    code, out, err = _run(kubectl_argv("logs", name, "--tail=1", "--timestamps"))
    assert code == 0 and len(out.splitlines()) == 1, err
    assert STAMP.match(out) and " tick " in out, out
    assert _run(kubectl_argv("logs", name, "--limit-bytes=5"))[1] == FIRST_LINE[:5]
    code, _, err = _run(kubectl_argv("logs", name, "--previous"))
    assert code == 1 and f'previous terminated container "talker" in pod "{name}" not found' in err


def test_logs_follow_streams_new_lines(kubectl_argv: Kubectl, talker: client.V1Pod) -> None:
    follow = subprocess.Popen(
        kubectl_argv("logs", "-f", "--tail=1", talker.metadata.name), stdout=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout], daemon=True).start()
    try:
        first, latencies = lines.get(timeout=30), []
        for _ in range(5):
            line = lines.get(timeout=10)
            latencies.append(time.time() - float(line.split()[2]))
        assert int(line.split()[1]) == int(first.split()[1]) + 5, (first, line)
        print(f"kubectl logs -f: each new line reached kubectl within {max(latencies):.3f} s")
        assert max(latencies) < 2.0
    finally:
        follow.terminate()
        follow.wait(timeout=10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_exec_runs_the_command_in_the_container(
    kubectl_argv: Kubectl, talker: client.V1Pod, transport: str
) -> None:
    env, name = TRANSPORTS[transport], talker.metadata.name
    started = time.monotonic()
    code, out, err = _run(kubectl_argv("exec", name, "--", "sh", "-c", "echo $HOSTNAME"), env=env)
    print(f"kubectl exec over {transport}: {time.monotonic() - started:.3f} s")
    assert (code, out) == (0, f"{name}\n"), err
    code, out, err = _run(kubectl_argv("exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0"), env=env)
    assert code == 0 and f" {talker.status.pod_ip}/" in out, (out, err)  # the pod's network namespace
    code, out, err = _run(kubectl_argv("exec", name, "--", "ls", "/srv/talker"), env=env)
    assert code == 0, err  # its mount namespace, where the emptyDir is mounted
    code, out, err = _run(kubectl_argv("exec", "-i", name, "--", "cat"), stdin="one\ntwo\n", env=env)
    assert (code, out) == (0, "one\ntwo\n"), err
    script = "echo out; echo err >&2; exit 3"
    code, out, err = _run(kubectl_argv("exec", name, "--", "sh", "-c", script), env=env)
    assert (code, out, err) == (3, "out\n", "err\ncommand terminated with exit code 3\n")


def test_exec_with_a_terminal(kubectl_argv: Kubectl, talker: client.V1Pod) -> None:
    """`kubectl exec -it`, kubectl given a terminal by `script`: the command runs on a terminal."""
    command = shlex.join(kubectl_argv("exec", "-it", talker.metadata.name, "--", "tty"))
    code, out, err = _run(["script", "-qec", command, "/dev/null"], stdin="")
    assert code == 0 and "/dev/pts/" in out, (out, err)


def test_exec_over_a_v4_websocket_passed_through(api, talker: client.V1Pod) -> None:
    """A client that offers only v4.channel.k8s.io reaches the kubelet API's own WebSocket end."""
    config = api(CONTEXT).configuration
    query = urllib.parse.urlencode(
        [("command", "sh"), ("command", "-c"), ("command", "echo $HOSTNAME; exit 4"), ("stdout", "true")]
    )
    path = f"/api/v1/namespaces/{talker.metadata.namespace}/pods/{talker.metadata.name}/exec?{query}"
    ssl_options = {"ca_certs": config.ssl_ca_cert, "certfile": config.cert_file, "keyfile": config.key_file}
    socket = websocket.create_connection(
        config.host.replace("https://", "wss://") + path,
        subprotocols=["v4.channel.k8s.io"],
        sslopt=ssl_options,
        timeout=30,
    )
    received: dict[int, bytes] = {}
    try:
        while (frame := socket.recv_data(control_frame=True))[0] != websocket.ABNF.OPCODE_CLOSE:
            if frame[1]:
                received[frame[1][0]] = received.get(frame[1][0], b"") + frame[1][1:]
    finally:
        socket.close()
    assert received[streams.STDOUT] == f"{talker.metadata.name}\n".encode()
    status = json.loads(received[streams.ERROR])
    assert (status["reason"], status["details"]["causes"][0]["message"]) == ("NonZeroExitCode", "4")


def test_kubelet_port_refuses_who_is_not_the_api_server(fleet_dir: Path, talker: client.V1Pod) -> None:
    """No client certificate: 401. A fleet identity outside system:masters (the viewer): 403, naming
    the subresource the kubelet would have asked about (nodes/stats for /stats/*, else nodes/proxy)."""
    pki = fleet_dir / "clusters" / CONTEXT / "pki"
    logs = f"/containerLogs/{talker.metadata.namespace}/{talker.metadata.name}/talker"
    anonymous = ssl.create_default_context(cafile=str(fleet_dir / "pki" / "ca.crt"))
    viewer = ssl.create_default_context(cafile=str(fleet_dir / "pki" / "ca.crt"))
    viewer.load_cert_chain(str(pki / "viewer.crt"), str(pki / "viewer.key"))
    for path, subresource in ((logs, "proxy"), ("/stats/summary", "stats")):
        url = f"https://{talker.status.host_ip}:10250{path}"
        for context, code in ((anonymous, 401), (viewer, 403)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url, context=context, timeout=10)
            assert refused.value.code == code
        assert f"verb=get, resource=nodes, subresource(s)=[{subresource}])" in refused.value.read().decode()


@pytest.fixture
def burner_and_idler(api) -> Iterator[tuple[str, str]]:
    """Two pods Running on one node, in a namespace of their own (deleted at the end): "burner", a stress
    pod that spins at its CPU limit and holds HOLD_MIB, and "idler", which sleeps. (namespace, node)"""
    core = client.CoreV1Api(api(CONTEXT))
    namespace = f"kubelet-stats-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        node = min(
            n.metadata.name
            for n in core.list_node().items
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
        )
        amounts = {"cpu": f"{int(BURN_CORES * 1000)}m", "memory": f"{HOLD_MIB * 3}Mi"}
        burner = {
            "name": "burner",
            "image": "polinux/stress",
            "command": ["stress"],
            "args": ["--cpu", "1", "--vm", "1", "--vm-bytes", f"{HOLD_MIB}M", "--vm-hang", "0"],
            "resources": {"requests": amounts, "limits": amounts},
        }
        idler = {"name": "idler", "image": "busybox", "command": ["sleep", "3600"]}
        for name, container in (("burner", burner), ("idler", idler)):
            spec = {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [container]}
            core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": spec})

        def running() -> bool:
            pods = core.list_namespaced_pod(namespace).items
            return len(pods) == 2 and all(p.status.phase == "Running" for p in pods)

        wait_for(running, 60, "the burner and the idler to run")
        yield namespace, node
    finally:
        core.delete_namespace(namespace)


def _summary(core: client.CoreV1Api, node: str) -> dict:
    """GET /api/v1/nodes/NODE/proxy/stats/summary, as JSON."""
    return json.loads(
        core.connect_get_node_proxy_with_path(node, "stats/summary", _preload_content=False).data
    )


def _pod_stats(summary: dict, namespace: str, name: str) -> dict:
    """The pod's entry in a summary; {} when it has none."""
    return next(
        (p for p in summary["pods"] if (p["podRef"]["namespace"], p["podRef"]["name"]) == (namespace, name)),
        {},
    )


def test_stats_summary_shows_what_a_pod_burns(api, burner_and_idler: tuple[str, str]) -> None:
    """Through the API server's node proxy: the burner's CPU time grows at no more than its limit, the
    idler's far less; the burner holds its memory; the node's cgroup counts both pods."""
    namespace, node = burner_and_idler
    core = client.CoreV1Api(api(CONTEXT))

    def both_seen() -> dict | None:
        summary = _summary(core, node)
        pods = [_pod_stats(summary, namespace, name) for name in ("burner", "idler")]
        return summary if all("cpu" in pod for pod in pods) else None

    started = time.monotonic()
    first = wait_for(both_seen, 30, "the burner and the idler in /stats/summary", interval_s=0.5)
    burner, idler = (_pod_stats(first, namespace, name) for name in ("burner", "idler"))

    def burned_a_second() -> dict | None:
        summary = _summary(core, node)
        grown = _pod_stats(summary, namespace, "burner")["cpu"]["usageCoreNanoSeconds"]
        return summary if grown - burner["cpu"]["usageCoreNanoSeconds"] >= NS_PER_S else None

    last = wait_for(burned_a_second, 60, "the burner to burn 1 s of CPU", interval_s=1.0)
    elapsed = time.monotonic() - started
    burner_now, idler_now = (_pod_stats(last, namespace, name) for name in ("burner", "idler"))
    burned = burner_now["cpu"]["usageCoreNanoSeconds"] - burner["cpu"]["usageCoreNanoSeconds"]
    idled = idler_now["cpu"]["usageCoreNanoSeconds"] - idler["cpu"]["usageCoreNanoSeconds"]
    print(
        f"in {elapsed:.1f} s the burner used {burned / NS_PER_S:.2f} s of CPU, the idler {idled / 1e6:.1f} ms"
    )
    assert burned <= (elapsed * BURN_CORES * 1.05 + 0.1) * NS_PER_S, "more than its CFS quota allows"
    assert idled < burned / 20
    assert 0 < burner_now["cpu"]["usageNanoCores"] <= BURN_CORES * 1.25 * NS_PER_S, burner_now["cpu"]
    [container] = burner_now["containers"]
    assert container["name"] == "burner"
    assert 0 < container["cpu"]["usageCoreNanoSeconds"] <= burner_now["cpu"]["usageCoreNanoSeconds"]
    assert burner_now["memory"]["workingSetBytes"] >= HOLD_MIB * MIB > idler_now["memory"]["workingSetBytes"]
    assert last["node"]["nodeName"] == node
    assert last["node"]["cpu"]["usageCoreNanoSeconds"] >= burner_now["cpu"]["usageCoreNanoSeconds"]
    assert last["node"]["memory"]["workingSetBytes"] >= burner_now["memory"]["workingSetBytes"]


@pytest.mark.parametrize("transport", FORWARD_TRANSPORTS)
def test_port_forward_reaches_a_server_on_the_pods_localhost(
    kubectl_argv: Kubectl, web: client.V1Pod, transport: str
) -> None:
    """kubectl port-forward on a port it chooses; two connections, each a pair of streams of one session.
    The server listens on the pod's 127.0.0.1 only, so the node agent dialled inside its namespace."""
    argv = kubectl_argv("port-forward", f"pod/{web.metadata.name}", f":{WEB_PORT}")
    with _port_forward(argv, FORWARD_TRANSPORTS[transport]) as (_, port, lines):
        for _ in range(2):
            assert _get(port) == (200, f"served by {web.metadata.name}\n")
        assert f"Handling connection for {port}" in _line_with(lines, "Handling connection", 10)


def test_port_forward_to_a_port_nobody_listens_on(kubectl_argv: Kubectl, web: client.V1Pod) -> None:
    """The kubelet's error reaches kubectl on the error stream, naming the port; kubectl then gives up."""
    name = web.metadata.name
    with _port_forward(kubectl_argv("port-forward", f"pod/{name}", f":{SILENT_PORT}"), {}) as forward:
        process, port, lines = forward
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.recv(1)  # kubectl closes it
        error = _line_with(lines, "an error occurred forwarding", 30)
        assert (
            f"an error occurred forwarding {port} -> {SILENT_PORT}: error forwarding port {SILENT_PORT}"
            in error
        )
        assert f" to pod {name}, uid {web.metadata.uid}: " in error and "connection refused" in error
        process.wait(timeout=30)
        assert "lost connection to pod" in _line_with(lines, "error: ", 10)


def test_python_client_port_forward_over_a_websocket(api, web: client.V1Pod) -> None:
    """kubernetes.stream.portforward (v4 WebSocket, passed through by the API server): one port answers,
    the other's error channel names it."""
    core, name = client.CoreV1Api(api(CONTEXT)), web.metadata.name
    forward = portforward(
        core.connect_get_namespaced_pod_portforward,
        name,
        web.metadata.namespace,
        ports=f"{WEB_PORT},{SILENT_PORT}",
    )
    try:
        connection = forward.socket(WEB_PORT)
        connection.settimeout(30)
        connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := connection.recv(1 << 16):
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(f"served by {name}\n".encode())
        error = wait_for(lambda: forward.error(SILENT_PORT), 30, "the error of the port nobody listens on")
        assert f"error forwarding port {SILENT_PORT} to pod {name}" in error and "connection refused" in error
        assert forward.error(WEB_PORT) is None
    finally:
        forward.close()


def test_attach_shows_live_output(kubectl_argv: Kubectl, talker: client.V1Pod) -> None:
    """kubectl attach prints what the container writes from the moment of attach on, as it comes."""
    name = talker.metadata.name
    code, out, err = _run(kubectl_argv("logs", name, "--tail=1"))
    assert code == 0 and out.startswith("tick "), (out, err)
    before = int(out.split()[1])
    attached = subprocess.Popen(
        kubectl_argv("attach", name, "-c", "talker"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = _lines(attached)
    try:
        ticks = [_line_with(lines, "tick ", 30) for _ in range(3)]
        numbers = [int(line.split()[1]) for line in ticks]
        assert numbers[0] > before and numbers == list(range(numbers[0], numbers[0] + 3)), (before, ticks)
        assert time.time() - float(ticks[-1].split()[2]) < 2.0  # live, not read back later
    finally:
        attached.terminate()
        attached.wait(timeout=10)


def test_run_interactive_attaches_then_removes_its_pod(
    api, kubectl_argv: Kubectl, talker: client.V1Pod
) -> None:
    """kubectl run -i --rm: the container waits on its stdin (a pipe the node keeps open) until kubectl
    attaches and writes; the answer comes back over the attach; the pod is deleted when it ends."""
    name, namespace = f"greeter-{uuid.uuid4().hex[:6]}", talker.metadata.namespace
    argv = kubectl_argv("run", "-i", "--rm", name, "--image=python:3.11", "--restart=Never", "--")
    code, out, err = _run([*argv, "python3", "-c", GREETER], stdin="there\n")
    assert code == 0 and "hello there\n" in out, (out, err)
    assert "falling back" not in err, err
    wait_for(lambda: _gone(client.CoreV1Api(api(CONTEXT)), namespace, name), 30, f"pod {name} to be gone")


def test_run_with_a_terminal_prints_the_output_then_removes_its_pod(
    api, kubectl_argv: Kubectl, talker: client.V1Pod
) -> None:
    """kubectl run -it --rm of a command that ends at once (kubectl given a terminal by `script`): the
    output shows (read from the log if the container has ended before kubectl attaches), the pod goes."""
    name, namespace = f"hi-{uuid.uuid4().hex[:6]}", talker.metadata.namespace
    argv = kubectl_argv("run", "-it", "--rm", name, "--image=busybox", "--restart=Never", "--")
    command = shlex.join([*argv, "sh", "-c", "echo hi from $HOSTNAME"])
    code, out, err = _run(["script", "-qec", command, "/dev/null"], stdin="")
    assert code == 0 and f"hi from {name}" in out, (out, err)
    wait_for(lambda: _gone(client.CoreV1Api(api(CONTEXT)), namespace, name), 30, f"pod {name} to be gone")


def test_run_an_interactive_shell_on_a_terminal(api, kubectl_argv: Kubectl, talker: client.V1Pod) -> None:
    """kubectl run -it --rm NAME -- sh, typed at on a terminal that does not echo: the shell has a terminal
    of its own, so Enter shows its prompt and what is typed echoes; a line runs, `exit 3` ends the
    session with kubectl's exit code 3, and the pod is deleted."""
    name, namespace = f"shell-{uuid.uuid4().hex[:6]}", talker.metadata.namespace
    argv = kubectl_argv(
        "run", "-it", "--rm", name, "--image=busybox", "--restart=Never", f"--env=PS1={PROMPT}", "--", "sh"
    )
    terminal, side = _client_terminal()
    kubectl = subprocess.Popen(argv, stdin=side, stdout=side, stderr=side)
    os.close(side)
    screen = _Screen(terminal)
    try:
        screen.wait_for("If you don't see a command prompt", 60)  # kubectl is about to attach
        screen.answer(terminal, b"\r", PROMPT, 30)  # the shell may have prompted before kubectl attached
        since = len(screen.text)
        os.write(terminal, b"echo hel''lo $HOSTNAME\r")
        screen.wait_for("echo hel''lo $HOSTNAME\r\n", 30, since)  # echoed by the container's terminal
        screen.wait_for(f"hello {name}\r\n{PROMPT}", 30, since)
        os.write(terminal, b"exit 3\r")
        assert kubectl.wait(timeout=60) == 3, screen.text
        assert "falling back" not in screen.text, screen.text
    finally:
        if kubectl.poll() is None:
            kubectl.kill()
            kubectl.wait(timeout=10)
        os.close(terminal)
    wait_for(lambda: _gone(client.CoreV1Api(api(CONTEXT)), namespace, name), 30, f"pod {name} to be gone")


@pytest.fixture
def console(api, talker: client.V1Pod) -> Iterator[str]:
    """The name of a running pod, in the talker's namespace, whose shell has a terminal and stdin."""
    core, namespace = client.CoreV1Api(api(CONTEXT)), talker.metadata.namespace
    name = f"console-{uuid.uuid4().hex[:6]}"
    container = {
        "name": "console",
        "image": "busybox",
        "command": ["sh"],
        "stdin": True,
        "tty": True,
        "env": [{"name": "PS1", "value": PROMPT}],
    }
    spec = {"terminationGracePeriodSeconds": 0, "containers": [container]}
    core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": spec})
    try:
        wait_for(
            lambda: core.read_namespaced_pod(name, namespace).status.phase == "Running", 60, "the console"
        )
        yield name
    finally:
        core.delete_namespaced_pod(name, namespace)


def test_attach_to_a_container_with_a_terminal(kubectl_argv: Kubectl, console: str) -> None:
    """kubectl attach -it, kubectl on a 37x101 terminal of its own that echoes nothing: what is typed
    echoes, a command's output comes back, `stty size` shows the size kubectl sent and then the size its
    terminal is changed to; kubectl logs then shows the session with newline line ends."""
    terminal, side = _client_terminal(37, 101)
    argv = ["setsid", "--ctty", *kubectl_argv("attach", "-it", console, "-c", "console")]
    kubectl = subprocess.Popen(argv, stdin=side, stdout=side, stderr=side)  # its controlling terminal
    os.close(side)
    screen = _Screen(terminal)
    try:
        screen.wait_for("If you don't see a command prompt", 60)
        started = time.monotonic()
        screen.answer(terminal, b"echo marker-$((6*7))\r", "marker-42", 30)
        print(f"kubectl attach -it: a typed command answered in {time.monotonic() - started:.3f} s")
        screen.wait_for("echo marker-$((6*7))\r\nmarker-42", 1)  # echoed by the container's terminal
        screen.answer(terminal, b"stty size\r", "37 101", 30)
        _size(terminal, 24, 132)  # kubectl hears SIGWINCH and sends the new size
        screen.answer(terminal, b"stty size\r", "24 132", 30)
    finally:
        kubectl.terminate()
        kubectl.wait(timeout=10)
        os.close(terminal)
    logs: list[str] = []

    def session_logged() -> bool:  # the runtime writes the log beside the attach stream: it may lag
        code, out, err = _run(kubectl_argv("logs", console))
        assert code == 0, err
        logs[:] = [out]
        return "24 132\n" in out

    wait_for(session_logged, 30, "kubectl logs to show the whole session", 0.2)
    (out,) = logs
    assert f"{PROMPT}echo marker-$((6*7))\nmarker-42\n" in out, out
    assert "\r" not in out, repr(out)


def test_logs_previous_after_a_restart(kubectl_argv: Kubectl, talker: client.V1Pod) -> None:
    """The container exits once (a flag file in its emptyDir); --previous shows the run that ended."""
    name = talker.metadata.name
    code, _, err = _run(kubectl_argv("exec", name, "--", "touch", "/srv/talker/stop"))
    assert code == 0, err

    def previous() -> str:
        code, out, _ = _run(kubectl_argv("logs", name, "--previous"))
        return out if code == 0 else ""

    lines = wait_for(previous, 30, "kubectl logs --previous to show the run that ended").splitlines()
    assert (lines[0], lines[-1]) == (FIRST_LINE, "stopping")
