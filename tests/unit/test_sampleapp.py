"""The sample app: the orders API, persistence, replication with lag, loss on failover, promotion, fencing.

Instances run in-process on 127.0.0.1 (one test runs the primary as `python -m` and kills it), each with
its own data folder; every wait is a poll with a deadline.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.localfleet import apps
from harness.localfleet.sampleapp import App, Config
from harness.localfleet.sampleapp_store import FENCED, LOG
from tests.conftest import wait_for

Response = tuple[int, Any, str]


def call(url: str, method: str = "GET", body: object = None) -> Response:
    """(status, JSON body or None, X-Served-By) of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        with error:
            status, raw, headers = error.code, error.read(), error.headers
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = None
    return status, reply, headers["X-Served-By"]


def post(url: str, seq: int, payload: object = "p", **extra: object) -> Response:
    return call(f"{url}/orders", "POST", {"seq": seq, "payload": payload, **extra})


def status(url: str) -> dict[str, Any]:
    return call(f"{url}/status")[1]


def has(url: str, seq: int) -> bool:
    return call(f"{url}/orders/{seq}")[0] == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Fleet:
    """Instances by cluster name, configured through their environment, on fixed ports so they can restart.

    The first name is the primary at first start; the others are replicas and every one is a peer.
    """

    def __init__(self, root: Path, names: str, **env: str) -> None:
        self.root = root
        self.ports = {name: free_port() for name in names}
        self.primary = names[0]
        self.env = {"ORDERS_REPLICATION_LAG": "0.2", "ORDERS_POLL_INTERVAL": "0.1", **env}
        self.apps: dict[str, App] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def environ(self, name: str, **env: str) -> dict[str, str]:
        return {
            "ORDERS_DATA_DIR": str(self.root / name),
            "ORDERS_CLUSTER": name,
            "POD_NAME": f"orders-{name}",
            "ORDERS_LISTEN": f"127.0.0.1:{self.ports[name]}",
            "ORDERS_ROLE": "primary" if name == self.primary else "replica",
            "ORDERS_PEERS": ",".join(f"{peer}={self.url(peer)}" for peer in self.ports if peer != name),
            **self.env,
            **env,
        }

    def start(self, name: str, **env: str) -> App:
        app = self.apps[name] = App(Config.from_env(self.environ(name, **env)))
        app.start()
        return app

    def stop(self, name: str) -> None:
        self.apps.pop(name).close()

    def spawn(self, name: str) -> None:
        """Run the instance as a process, as the node agent does."""
        with (self.root / f"{name}.log").open("a") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "harness.localfleet.sampleapp"],
                env={**os.environ, **self.environ(name)},
                stdout=log,
                stderr=log,
            )
        wait_for(lambda: self._answers(name), 20, f"{name} to answer")

    def _answers(self, name: str) -> bool:
        try:
            return call(f"{self.url(name)}/healthz")[0] == 200
        except OSError:
            return False

    def signal(self, name: str, signum: int) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(signum)
        return proc.wait(timeout=20)

    def close(self) -> None:
        """Kill the processes first: an in-process app that fails to stop must not leave one running."""
        try:
            for name in list(self.procs):
                self.signal(name, signal.SIGKILL)
        finally:
            for name in list(self.apps):
                self.stop(name)


@pytest.fixture(autouse=True)
def no_threads_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_for(lambda: set(threading.enumerate()) <= before, 10, "the sample app's threads to end")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(names: str, **env: str) -> Fleet:
        made.append(Fleet(tmp_path, names, **env))
        return made[-1]

    yield make
    for each in made:
        each.close()


def writable(url: str) -> bool:
    return not status(url)["fenced"] and status(url)["role"] == "primary"


def test_config_from_env_parses_defaults_and_names_bad_variables(tmp_path: Path) -> None:
    cfg = Config.from_env(
        {
            "ORDERS_DATA_DIR": str(tmp_path),
            "ORDERS_CLUSTER": "eu",
            "ORDERS_PEERS": "eu=http://x, us=http://u:80/",
        }
    )
    assert (cfg.listen, cfg.role, cfg.lag, cfg.config_dir) == (("0.0.0.0", 8080), "replica", 0.5, None)
    assert cfg.peers == {"us": "http://u:80"}
    with pytest.raises(ValueError, match="ORDERS_DATA_DIR and ORDERS_CLUSTER must be set"):
        Config.from_env({})
    base = {"ORDERS_DATA_DIR": str(tmp_path), "ORDERS_CLUSTER": "eu"}
    for name, value in [
        ("ORDERS_PEERS", "us"),
        ("ORDERS_ROLE", "leader"),
        ("ORDERS_LISTEN", "localhost:http"),
        ("ORDERS_REPLICATION_LAG", "-1"),
        ("ORDERS_FENCE_TIMEOUT", "soon"),
        ("ORDERS_DEPENDS_ON", "catalogue=ftp://x"),
        ("ORDERS_FAIL_SHARE", "1.5"),
    ]:
        with pytest.raises(ValueError, match=name):
            Config.from_env({**base, name: value})


def test_readiness_follows_the_services_it_depends_on(fleet: Callable[..., Fleet]) -> None:
    f = fleet("ab")
    f.start("b")
    dependency = f"{f.url('b')}/healthz"
    f.start("a", ORDERS_PEERS="", ORDERS_DEPENDS_ON=f"catalogue={dependency}")
    a = f.url("a")
    wait_for(lambda: call(f"{a}/readyz")[0] == 200, 10, "a to be ready once its dependency answers")
    f.stop("b")
    wait_for(lambda: call(f"{a}/readyz")[0] == 503, 10, "a to be unready without its dependency")
    assert call(f"{a}/readyz")[1] == {"error": f"dependency catalogue ({dependency}) unreachable"}
    assert call(f"{a}/healthz")[0] == 200  # alive: only readiness follows the dependency
    f.start("b")
    wait_for(lambda: call(f"{a}/readyz")[0] == 200, 10, "a to be ready again")


def test_a_bad_version_fails_its_share_of_client_requests_but_not_the_kubelets_probes(
    fleet: Callable[..., Fleet],
) -> None:
    f = fleet("ab")
    f.start("b")
    f.start("a", ORDERS_FAIL_SHARE="0.25")
    a = f.url("a")
    answers = [call(f"{a}/readyz")[:2] for _ in range(40)]
    failed = [reply for code, reply in answers if code == 500]
    assert len(failed) == 10 and failed[0] == {"error": "injected failure (ORDERS_FAIL_SHARE)"}
    kubelet = urllib.request.Request(f"{a}/readyz", headers={"User-Agent": "kube-probe/1.36"})
    assert all(urllib.request.urlopen(kubelet, timeout=10).status == 200 for _ in range(8))
    assert all(call(f"{a}/status")[0] == 200 for _ in range(8)), "the peers' protocol is spared"


def test_writes_reads_and_pages_per_stream(fleet: Callable[..., Fleet]) -> None:
    f = fleet("a")
    f.start("a")
    url = f.url("a")
    for seq in range(1, 6):
        assert post(url, seq, {"n": seq})[:2] == (
            201,
            {"seq": seq, "stream": "default", "epoch": 1, "cluster": "a"},
        )
    assert post(url, 1, "other stream", stream="s2")[0] == 201
    code, order, _ = call(f"{url}/orders/3")
    assert (code, order["payload"], order["epoch"], order["cluster"]) == (200, {"n": 3}, 1, "a")
    assert call(f"{url}/orders/1?stream=s2")[1]["payload"] == "other stream"
    assert call(f"{url}/orders/3?stream=s2")[0] == call(f"{url}/orders/99")[0] == 404

    def page(query: str) -> tuple[list[int], int | None]:
        reply = call(f"{url}/orders?{query}")[1]
        return [order["seq"] for order in reply["orders"]], reply["next"]

    assert page("since=0&limit=2") == ([1, 2], 2)
    assert page("since=2&limit=2") == ([3, 4], 4)
    assert page("since=4&limit=2") == ([5], None)
    assert page("") == ([1, 2, 3, 4, 5], None)
    assert page("stream=s2") == ([1], None)
    assert page("stream=none") == ([], None)
    assert post(url, "one")[0] == call(f"{url}/orders", "POST", [1])[0] == 400
    assert post(url, 6, stream=7)[0] == call(f"{url}/orders?limit=0")[0] == 400
    assert call(f"{url}/nowhere")[0] == 404


def test_a_duplicate_seq_is_idempotent_with_its_payload_and_a_conflict_with_another(
    fleet: Callable[..., Fleet],
) -> None:
    f = fleet("a")
    f.start("a")
    url = f.url("a")
    assert post(url, 7, {"qty": 1})[0] == 201
    assert post(url, 7, {"qty": 1})[:2] == (200, {"seq": 7, "stream": "default", "epoch": 1, "cluster": "a"})
    code, reply, _ = post(url, 7, {"qty": 2})
    assert (code, reply["order"]["payload"]) == (409, {"qty": 1})
    assert call(f"{url}/orders/7")[1]["payload"] == {"qty": 1}
    assert status(url)["position"] == 1


def test_orders_and_state_survive_a_restart_and_a_torn_last_line(fleet: Callable[..., Fleet]) -> None:
    f = fleet("a")
    f.start("a")
    url = f.url("a")
    assert [post(url, seq)[0] for seq in (1, 2)] == [201, 201]
    f.stop("a")
    with (f.root / "a" / LOG).open("ab") as log:
        log.write(b'{"stream":"default","seq":3,"pay')  # a crash in the middle of a write
    f.start("a", ORDERS_ROLE="replica")  # the saved state wins over the first-start role
    assert (status(url)["role"], status(url)["position"], status(url)["last_seq"]) == (
        "primary",
        2,
        {"default": 2},
    )
    assert has(url, 1) and has(url, 2) and not has(url, 3)
    assert post(url, 3)[0] == 201
    f.stop("a")
    f.start("a")
    assert [has(url, seq) for seq in (1, 2, 3)] == [True, True, True]


def test_every_response_names_the_cluster_and_pod_that_served_it(fleet: Callable[..., Fleet]) -> None:
    f = fleet("a")
    f.start("a")
    url = f.url("a")
    for path in ("/healthz", "/readyz", "/status", "/config", "/orders", "/orders/1", "/nowhere"):
        assert call(f"{url}{path}")[2] == "a/orders-a"
    assert post(url, "bad")[2] == call(url, "PUT", {})[2] == "a/orders-a"  # 400, and http.server's own 501


def test_replication_waits_for_the_lag_then_ships_in_order(fleet: Callable[..., Fleet]) -> None:
    lag = 2.0
    f = fleet("ab", ORDERS_REPLICATION_LAG=str(lag))
    f.start("b")
    f.start("a")
    a, b = f.url("a"), f.url("b")
    wait_for(lambda: writable(a), 10, "a to confirm its primacy")
    assert post(b, 1)[1]["error"] == "not primary"
    before = time.monotonic()
    assert post(a, 1)[0] == 201
    absent = not has(b, 1)
    assert time.monotonic() - before < lag, "too slow to look inside the lag"
    assert absent, "the write reached the replica before the lag"
    wait_for(lambda: has(b, 1), 10, "the write to reach b")
    assert time.monotonic() - before >= lag
    for seq in range(2, 6):
        post(a, seq)
    wait_for(lambda: status(b)["last_seq"] == {"default": 5}, 10, "b to catch up")
    wait_for(lambda: status(a)["replicated_to"] == {"b": 5}, 10, "a to see b's position")
    assert [o["seq"] for o in call(f"{b}/orders")[1]["orders"]] == [1, 2, 3, 4, 5]
    assert status(b)["epoch"] == 1 and not status(b)["fenced"]


def test_failover_loses_writes_acked_within_the_lag_and_fences_the_returning_primary(
    fleet: Callable[..., Fleet],
) -> None:
    lag = 2.0
    f = fleet("abc", ORDERS_REPLICATION_LAG=str(lag))
    f.start("b")
    f.start("c")
    f.spawn("a")
    a, b, c = (f.url(name) for name in "abc")
    wait_for(lambda: writable(a), 20, "a to confirm its primacy")
    assert post(a, 1)[::2] == (201, "a/orders-a")
    wait_for(lambda: has(b, 1) and has(c, 1), 10, "seq 1 to reach b and c")

    before = time.monotonic()
    assert post(a, 2)[0] == 201
    assert f.signal("a", signal.SIGKILL) == -signal.SIGKILL
    assert time.monotonic() - before < lag, "too slow to lose the primary inside the lag"

    code, reply, _ = call(f"{b}/promote", "POST", {})
    assert (code, reply) == (200, {"cluster": "b", "role": "primary", "epoch": 2})
    assert call(f"{b}/promote", "POST", {})[1]["epoch"] == 2  # already primary: unchanged
    assert has(b, 1) and not has(b, 2) and not has(c, 2)  # acked by a, lost with it
    assert post(b, 3)[:2] == (201, {"seq": 3, "stream": "default", "epoch": 2, "cluster": "b"})
    wait_for(lambda: has(c, 3) and status(c)["epoch"] == 2, 10, "c to follow b")

    f.spawn("a")  # the old primary returns with its data and its saved role
    code, reply, _ = post(a, 4)
    assert code == 503 and reply["error"] in (FENCED, "not primary")
    wait_for(lambda: status(a)["role"] == "replica", 10, "a to step down")
    assert status(a)["epoch"] == 2 and status(a)["fenced"]
    assert "epoch 2" in status(a)["fence_reason"]
    assert post(a, 4)[1]["error"] == "not primary"
    wait_for(lambda: has(a, 3), 10, "b's write to reach a")
    assert has(a, 2)  # a keeps its own lost write: nobody else has it
    assert writable(b) and status(b)["epoch"] == 2
    assert f.signal("a", signal.SIGTERM) == 0


def test_a_primary_with_no_reachable_peer_stays_fenced_but_serves_reads(fleet: Callable[..., Fleet]) -> None:
    f = fleet("ab")
    f.start("a")
    a = f.url("a")
    reply = status(a)
    assert (reply["role"], reply["fenced"], reply["fence_reason"]) == ("primary", True, FENCED)
    assert post(a, 1)[:2] == (503, {"error": FENCED, "role": "primary", "epoch": 1})
    assert call(f"{a}/readyz")[0] == 200
    assert not apps.takes_writes(f"{a}/status"), "fleet up must not take a ready primary for a writable one"
    assert call(f"{a}/orders")[:2] == (200, {"orders": [], "next": None})
    f.start("b")
    wait_for(lambda: writable(a), 10, "b to confirm a's primacy")
    assert apps.takes_writes(f"{a}/status") and post(a, 1)[0] == 201


def test_a_primary_cut_off_from_every_peer_fences_itself(fleet: Callable[..., Fleet]) -> None:
    f = fleet("ab", ORDERS_FENCE_TIMEOUT="0.5")
    f.start("a")
    f.start("b")
    a = f.url("a")
    wait_for(lambda: writable(a), 10, "a to confirm its primacy")
    f.stop("b")
    wait_for(lambda: status(a)["fenced"], 10, "a to fence itself")
    assert post(a, 1)[1]["error"] == status(a)["fence_reason"] == FENCED
    assert status(a)["peers"] == {"b": {"reachable": False}}
    f.start("b")
    wait_for(lambda: writable(a), 10, "a to confirm its primacy again")
    assert post(a, 1)[0] == 201


def test_a_running_primary_steps_down_when_a_peer_is_promoted(fleet: Callable[..., Fleet]) -> None:
    f = fleet("ab")
    f.start("a")
    f.start("b")
    a, b = f.url("a"), f.url("b")
    wait_for(lambda: writable(a), 10, "a to confirm its primacy")
    assert call(f"{b}/promote", "POST", {"epoch": 7})[1]["epoch"] == 7
    wait_for(lambda: status(a)["role"] == "replica", 10, "a to step down")
    reply = status(a)
    assert (reply["epoch"], reply["fenced"], reply["fence_reason"]) == (7, True, "deposed: b holds epoch 7")
    assert reply["replicated_to"] == {}
    assert post(a, 1)[0] == 503 and post(b, 1)[0] == 201
    wait_for(lambda: has(a, 1), 10, "b's write to reach a")
    assert call(f"{a}/promote", "POST", {})[1]["epoch"] == 8  # failback
    wait_for(lambda: status(b)["role"] == "replica" and writable(a), 10, "b to step down")
    assert status(b)["fence_reason"] == "deposed: a holds epoch 8"


def test_replicate_rejects_stale_epochs_and_applies_batches_idempotently(fleet: Callable[..., Fleet]) -> None:
    f = fleet("a")
    f.start("a")
    a = f.url("a")
    assert post(a, 1, "mine")[0] == 201

    def replicate(epoch: int, *entries: dict[str, Any]) -> Response:
        return call(f"{a}/replicate", "POST", {"epoch": epoch, "from": "x", "entries": list(entries)})

    code, reply, _ = replicate(0)
    assert (code, reply["epoch"], reply["role"]) == (409, 1, "primary")
    theirs = {"stream": "default", "seq": 1, "payload": "theirs", "epoch": 3, "cluster": "x", "at": 0.0}
    more = {**theirs, "seq": 2, "payload": "more"}
    assert replicate(3, theirs, more)[:2] == (200, {"epoch": 3, "role": "replica", "position": 3})
    assert replicate(3, theirs, more)[1]["position"] == 3  # a replay changes nothing
    assert call(f"{a}/orders/1")[1]["payload"] == "theirs"  # the primary's version wins
    assert (status(a)["fenced"], status(a)["fence_reason"]) == (True, "deposed: x holds epoch 3")
    assert replicate(2, more)[:2] == (409, {"error": "stale epoch 2", "epoch": 3, "role": "replica"})
    assert replicate(3, {"seq": 1})[0] == 400


def test_a_primary_meeting_another_primary_at_its_epoch_steps_down(fleet: Callable[..., Fleet]) -> None:
    f = fleet("p")
    f.start("p")
    p = f.url("p")
    assert call(f"{p}/replicate", "POST", {"epoch": 1, "from": "q", "entries": []})[0] == 200
    assert status(p)["fence_reason"] == "deposed: q is also primary at epoch 1"


def test_config_lists_mounted_files_by_name_and_sha256(fleet: Callable[..., Fleet], tmp_path: Path) -> None:
    mount = tmp_path / "config"
    version = mount / "..2024_01_01_00_00_00.1"
    (version / "nested").mkdir(parents=True)
    (version / "app.yaml").write_text("replicas: 3\n")
    (version / "nested" / "token").write_bytes(b"s3cret")
    (mount / "..data").symlink_to(version.name)
    for name in ("app.yaml", "nested"):
        (mount / name).symlink_to(f"..data/{name}")
    f = fleet("a")
    f.start("a", ORDERS_CONFIG_DIR=str(mount))
    assert call(f"{f.url('a')}/config")[1] == {
        "dir": str(mount),
        "files": {
            "app.yaml": hashlib.sha256(b"replicas: 3\n").hexdigest(),
            "nested/token": hashlib.sha256(b"s3cret").hexdigest(),
        },
    }
    g = fleet("b")
    g.start("b")
    assert call(f"{g.url('b')}/config")[1] == {"dir": None, "files": {}}


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics parsed: value by (sample name, sorted labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_by_method_and_status_and_show_the_replication_lag(
    fleet: Callable[..., Fleet],
) -> None:
    f = fleet("ab", ORDERS_REPLICATION_LAG="30")
    f.start("b")
    f.start("a")
    a = f.url("a")
    wait_for(lambda: writable(a), 10, "a to confirm its primacy")
    before = _metrics(a)
    assert before[("orders_replication_lag_seconds", (("peer", "b"),))] == 0, "nothing waits yet"
    assert post(a, 1)[0] == 201 and call(f"{a}/orders/9")[0] == 404
    wait_for(lambda: _metrics(a)[("orders_replication_lag_seconds", (("peer", "b"),))] > 0.2, 10, "a lag")
    after = _metrics(a)
    assert after[("http_requests_total", (("method", "POST"), ("status", "201")))] == 1
    assert after[("http_requests_total", (("method", "GET"), ("status", "404")))] == 1
    assert after[("http_request_duration_seconds_count", (("method", "POST"),))] == 1
    assert after[("http_request_duration_seconds_bucket", (("le", "+Inf"), ("method", "POST")))] == 1
    assert _metrics(f.url("b"))[("orders_replication_lag_seconds", (("peer", "a"),))] == 0, (
        "a replica ships none"
    )
