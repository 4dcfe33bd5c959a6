"""Clients built from a kubeconfig renew an exec plugin's credential before it expires, and after the API
server answers 401 Unauthorized to it: a token reaches the next request, a new client certificate the next
connection (the urllib3 pool is rebuilt), and a plugin that hands out an expired credential is one line
naming the cluster."""

import base64
import json
import ssl
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from harness import auth as auth_module
from harness.auth import ClusterAuth
from harness.kubeconfig import ContextRef, KubeconfigError
from harness.localfleet import pki
from tests.conftest import wait_for

PLUGIN = Path(__file__).resolve().parents[1] / "exec_plugin.py"
VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0",
    "gitCommit": "0",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def exec_user(log: Path, lifetime_s: float, ca: Path | None = None, *more: str) -> dict:
    """A kubeconfig user whose exec plugin (tests/exec_plugin.py) hands out a token, or a client
    certificate from the CA in `ca`, valid for lifetime_s, each run logged to `log`; `more`: its other
    arguments (--user, --group, --name)."""
    args = [str(PLUGIN), "--log", str(log), "--lifetime", str(lifetime_s), *more]
    args += ["--ca", str(ca)] if ca is not None else []
    exec_section = {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": args}
    return {"exec": exec_section | {"interactiveMode": "Never"}}


def write_kubeconfig(folder: Path, server: str, user: dict, ca_cert: bytes | None = None) -> ContextRef:
    """A kubeconfig with one context `east` on `server` as `user`; its ref, owned by cluster east."""
    cluster: dict = {"server": server}
    if ca_cert is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_cert).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "east", "context": {"cluster": "c", "user": "u"}}],
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return ContextRef(path, "east", "cluster east")


def runs(log: Path) -> int:
    """How many times the plugin ran."""
    return len(log.read_text().splitlines()) if log.exists() else 0


UNAUTHORIZED = {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}


class Recorder(BaseHTTPRequestHandler):
    """Answers GET /version (and any path) with a version, or, as the API server does, 401 Unauthorized to an
    Authorization header in `revoked`; records each request's Authorization header and client certificate
    serial."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the API server: a pooled connection is reused
    seen: list[tuple[str | None, int | None]]
    revoked: set[str]

    def do_GET(self) -> None:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        serial = int(peer["serialNumber"], 16) if peer else None
        token = self.headers.get("Authorization")
        self.seen.append((token, serial))
        refused = token in self.revoked
        page = UNAUTHORIZED if refused else VERSION | {"items": []}  # a version, an empty page of sentinels
        body = json.dumps(page).encode()
        self.send_response(401 if refused else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def serve(
    tls: ssl.SSLContext | None = None, revoked: frozenset[str] | set[str] = frozenset()
) -> Iterator[tuple[str, list[tuple[str | None, int | None]]]]:
    """A recording server on an ephemeral port of 127.0.0.1 refusing the `revoked` Authorization headers
    (the caller may add to the set): its URL and what it saw."""
    seen: list[tuple[str | None, int | None]] = []
    handler = type("Handler", (Recorder,), {"seen": seen, "revoked": revoked})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[tuple[str, list[tuple[str | None, int | None]]]]:
    yield from serve()


@pytest.fixture
def revoking() -> Iterator[tuple[str, list[tuple[str | None, int | None]], set[str]]]:
    """A recording server, and the Authorization headers it answers 401 Unauthorized (empty at first)."""
    revoked: set[str] = set()
    server = serve(revoked=revoked)
    yield (*next(server), revoked)
    server.close()


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    """A CA as a local fleet's pki folder (ca.crt, ca.key)."""
    folder = tmp_path / "pki"
    pki.new_ca("unit").write(folder, "ca")
    return folder


@pytest.fixture
def mutual(ca: Path) -> Iterator[tuple[str, list[tuple[str | None, int | None]]]]:
    """A recording HTTPS server that asks for a client certificate from the CA, as an API server does."""
    authority = pki.KeyPair((ca / "ca.crt").read_bytes(), (ca / "ca.key").read_bytes())
    cert, key = pki.issue(authority, "127.0.0.1", ips=(IPv4Address("127.0.0.1"),), server=True).write(
        ca, "server"
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.load_verify_locations(ca / "ca.crt")
    tls.verify_mode = ssl.CERT_REQUIRED
    yield from serve(tls)


def test_a_token_is_renewed_before_it_expires_and_the_next_call_carries_it(
    tmp_path: Path, plain: tuple[str, list]
) -> None:
    url, seen = plain
    log = tmp_path / "plugin.log"
    auth = ClusterAuth(write_kubeconfig(tmp_path, url, exec_user(log, 3)))
    api = auth.api_client()
    version = client.VersionApi(api)
    for _ in range(5):
        assert version.get_code(_request_timeout=5).git_version == "v1.36.0"
    assert runs(log) == 1, "a credential still well within its lifetime is not asked for again"
    assert seen[-1][0] == "Bearer token-1"
    wait_for(lambda: auth.due(), 5, "the token to come within its margin of expiry")
    version.get_code(_request_timeout=5)
    assert runs(log) == 2 and seen[-1][0] == "Bearer token-2"
    assert auth.headers() == {"Authorization": "Bearer token-2"}, "what the service proxy reads"


def test_a_token_the_api_server_revokes_before_it_expires_is_renewed_for_the_next_call(
    tmp_path: Path, revoking: tuple[str, list, set[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen, revoked = revoking
    log = tmp_path / "plugin.log"
    auth = ClusterAuth(write_kubeconfig(tmp_path, url, exec_user(log, 600)))
    version = client.VersionApi(auth.api_client())
    version.get_code(_request_timeout=5)
    revoked.add("Bearer token-1")
    with pytest.raises(client.ApiException) as refused:
        version.get_code(_request_timeout=5)
    assert refused.value.status == 401 and runs(log) == 1, "the refused call is answered, not retried"
    assert version.get_code(_request_timeout=5).git_version == "v1.36.0"
    assert runs(log) == 2 and seen[-1][0] == "Bearer token-2", "the next call renewed it"
    auth.rejected(1)
    assert not auth.due(), "a 401 to a credential renewed since renews nothing"
    revoked.add("Bearer token-2")
    for _ in range(2):
        with pytest.raises(client.ApiException):
            version.get_code(_request_timeout=5)
    assert runs(log) == 2, "a server that keeps refusing runs the plugin once per REJECTED_GAP_S"
    monkeypatch.setattr(auth_module, "REJECTED_GAP_S", 0.0)
    with pytest.raises(client.ApiException):
        version.get_code(_request_timeout=5)
    assert version.get_code(_request_timeout=5).git_version == "v1.36.0" and seen[-1][0] == "Bearer token-3"


def test_a_client_certificate_is_renewed_and_the_next_call_connects_with_it(
    tmp_path: Path, ca: Path, mutual: tuple[str, list]
) -> None:
    url, seen = mutual
    log = tmp_path / "plugin.log"
    auth = ClusterAuth(write_kubeconfig(tmp_path, url, exec_user(log, 3, ca), (ca / "ca.crt").read_bytes()))
    version = client.VersionApi(auth.api_client())
    version.get_code(_request_timeout=5)
    version.get_code(_request_timeout=5)
    first = seen[-1][1]
    assert first is not None and seen[0][1] == first and runs(log) == 1
    wait_for(lambda: auth.due(), 5, "the certificate to come within its margin of expiry")
    version.get_code(_request_timeout=5)
    assert runs(log) == 2 and seen[-1][1] not in (None, first), "the pooled connection kept the old one"
    proxy_tls = auth.ssl_context()
    assert proxy_tls is not None and proxy_tls is auth.ssl_context(), "one context per certificate"
    folder = Path(auth.configuration.cert_file).parent
    auth.close()
    assert not folder.exists(), "its certificate files are gone"


def test_a_plugin_that_hands_out_an_expired_credential_is_one_line_naming_the_cluster(
    tmp_path: Path, ca: Path
) -> None:
    auth = ClusterAuth(write_kubeconfig(tmp_path, "https://127.0.0.1:1", exec_user(tmp_path / "l", -60, ca)))
    with pytest.raises(KubeconfigError) as caught:
        client.VersionApi(auth.api_client()).get_code(_request_timeout=1)
    said = str(caught.value)
    assert said.startswith(f"{tmp_path}/kubeconfig: context east of cluster east: exec credential plugin ")
    assert "handed out a credential that had already expired" in said and "BEGIN" not in said
    assert not auth.due(), "a failed renewal is not asked for again at once"
