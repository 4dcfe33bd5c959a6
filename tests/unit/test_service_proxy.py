"""The API server's service proxy carries the kubeconfig's credentials as of each request: a static token,
or the one an exec credential plugin (aws eks get-token, gke-gcloud-auth-plugin, kubelogin) hands out,
renewed before it expires, or once the API server answers 401 Unauthorized to it, while the probes and the
sentinel reads go on."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import auth as auth_module
from harness.auth import ClusterAuth
from harness.config import HttpSentinels
from harness.errors import FleetDrillError
from harness.fleet import service_proxy
from harness.sentinels import HttpStore, Where
from harness.traffic import Prober
from tests.conftest import wait_for
from tests.unit.test_auth import exec_user, runs, serve, write_kubeconfig


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str | None, int | None]]]]:
    """A server recording each request's Authorization header."""
    yield from serve()


def test_a_token_user_reaches_the_proxy_with_its_token(tmp_path: Path) -> None:
    auth = ClusterAuth(write_kubeconfig(tmp_path, "http://127.0.0.1:1", {"token": "static-token"}))
    proxy = service_proxy(auth, "shop", "shop", "http")
    assert proxy.auth.headers() == {"Authorization": "Bearer static-token"}
    assert proxy.url == "http://127.0.0.1:1/api/v1/namespaces/shop/services/shop:http/proxy"
    assert "static-token" not in repr(proxy)


def test_a_renewed_token_reaches_the_proxy_s_next_request(tmp_path: Path, recorder: tuple[str, list]) -> None:
    url, seen = recorder
    log = tmp_path / "plugin.log"
    proxy = service_proxy(
        ClusterAuth(write_kubeconfig(tmp_path, url, exec_user(log, 3))), "shop", "shop", "80"
    )

    def tokens() -> set[str | None]:
        return {token for token, _ in list(seen)}

    with Prober(
        {"restored": proxy.url + "/readyz"}, rate_hz=20, max_conn_age_s=60, auth=proxy.auth
    ) as prober:
        wait_for(lambda: "Bearer token-1" in tokens(), 5, "probes with the plugin's first token")
        wait_for(lambda: "Bearer token-2" in tokens(), 10, "probes with the renewed token")
        sent = len(seen)
        wait_for(lambda: len(seen) > sent + 5, 5, "more probes")
    assert [token for token, _ in seen[sent:]] == ["Bearer token-2"] * len(seen[sent:]), "no stale copy"
    assert all(sample.ok for sample in prober.samples("restored")), "no probe went out unauthenticated"
    assert runs(log) == 2
    spec = {"adapter": "http", "write": {"path": "/w"}, "read": {"path": "/r", "items": "items"}}
    store = HttpStore(HttpSentinels.model_validate(spec))
    wait_for(lambda: proxy.auth.due(), 5, "the second token to come within its margin")
    assert store.records(Where("restored", proxy.url, auth=proxy.auth), 0, "s") == {}
    assert seen[-1][0] == "Bearer token-3", "a sentinel read renews it first"


def test_a_token_the_api_server_revokes_is_renewed_for_the_next_probes_and_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revoked: set[str] = set()
    server = serve(revoked=revoked)
    url, seen = next(server)
    log = tmp_path / "plugin.log"
    proxy = service_proxy(
        ClusterAuth(write_kubeconfig(tmp_path, url, exec_user(log, 600))), "shop", "shop", "80"
    )
    try:
        with Prober(
            {"restored": proxy.url + "/readyz"}, rate_hz=20, max_conn_age_s=60, auth=proxy.auth
        ) as prober:
            wait_for(lambda: any(token == "Bearer token-1" for token, _ in list(seen)), 5, "the first token")
            revoked.add("Bearer token-1")
            wait_for(lambda: any(token == "Bearer token-2" for token, _ in list(seen)), 10, "a renewed token")
            sent = len(seen)
            wait_for(lambda: len(seen) > sent + 5, 5, "more probes")
        assert {token for token, _ in seen[sent:]} == {"Bearer token-2"}, "no probe kept the revoked one"
        assert [s.status for s in prober.samples("restored")][-5:] == [200] * 5
        assert runs(log) == 2, "the refused probes in flight renewed it once"
        spec = {"adapter": "http", "write": {"path": "/w"}, "read": {"path": "/r", "items": "items"}}
        store = HttpStore(HttpSentinels.model_validate(spec))
        where = Where("restored", proxy.url, auth=proxy.auth)
        revoked.add("Bearer token-2")
        monkeypatch.setattr(auth_module, "REJECTED_GAP_S", 0.0)
        with pytest.raises(FleetDrillError, match="HTTP 401"):
            store.records(where, 0, "s")
        assert store.records(where, 0, "s") == {}
        assert seen[-1][0] == "Bearer token-3", "the next read renewed it"
    finally:
        server.close()
