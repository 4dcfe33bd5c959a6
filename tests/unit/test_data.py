"""harness.data against a fake orders API: sentinel seqs and acks, failed writes, paginated read-back."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from harness.data import SentinelWriter, new_seq_base, read_order, read_present
from harness.errors import ConfigError, FleetDrillError
from harness.samples import SentinelWrite
from tests.conftest import wait_for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out as two writes: no delayed-ACK stall between them
    server: _HTTPServer

    def do_POST(self) -> None:
        store = self.server.store
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if store.mode == "hang":
            store.release.wait()
            self.close_connection = True
        elif store.mode == "fail":
            self._answer(503, {"error": "not primary"})
        else:
            with store.lock:
                store.orders.setdefault(body.get("stream", "default"), {})[body["seq"]] = body
            self._answer(201, {"seq": body["seq"]})

    def do_GET(self) -> None:
        store, url = self.server.store, urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        with store.lock:
            store.gets.append(self.path)
            orders = dict(store.orders.get(query.get("stream", "default"), {}))
        if store.mode == "fail":
            self._answer(503, {"error": "not primary"})
        elif url.path == "/orders":  # like the sample app: seqs above since, "next" the last one listed
            since = int(query["since"])
            seqs = sorted(s for s in orders if s > since)
            chosen = seqs[: store.page]
            following = (since if store.mode == "stuck" else chosen[-1]) if seqs[store.page :] else None
            page = {"orders": [orders[s] for s in chosen], "next": following}
            self._answer(200, {"items": []} if store.mode == "shape" else page)
        elif (seq := int(url.path.rpartition("/")[2])) in orders:
            self._answer(200, orders[seq])
        else:
            self._answer(404, {"error": "no such order"})

    def _answer(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self, store: Store) -> None:
        self.store = store
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self.store.lock:
            self.store.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self.store.lock:
            self.store.open.discard(request)
        super().shutdown_request(request)


class Store:
    """A fake of the sample app's orders API, by stream. Modes: ok; fail (503 to everything); hang (writes
    never answer); stuck ("next" repeats "since"); shape (a listing without "orders")."""

    def __init__(self) -> None:
        self.mode, self.page = "ok", 3
        self.orders: dict[str, dict[int, dict]] = {}
        self.gets: list[str] = []
        self.lock, self.release = threading.Lock(), threading.Event()
        self.open = set[socket.socket]()
        self._httpd = _HTTPServer(self)
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="test-store")
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self.release.set()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def store() -> Iterator[Store]:
    fake = Store()
    yield fake
    fake.stop()


def acked(writer: SentinelWriter) -> list[SentinelWrite]:
    return [w for w in writer.writes() if w.acked_at is not None]


def test_writer_writes_consecutive_seqs_from_its_base_on_a_steady_beat(store: Store) -> None:
    with SentinelWriter(f"{store.base}/orders", rate_hz=50, seq_base=1000) as writer:
        wait_for(lambda: len(writer.writes()) >= 15, 10, "15 writes")
    writes = writer.writes()
    assert [w.seq for w in writes] == list(range(1000, 1000 + len(writes)))
    assert all(w.acked_at is not None for w in writes) and writer.errors() == {}
    times = [w.acked_at for w in writes]
    assert times == sorted(times)
    mean = (times[-1] - times[0]) / (len(times) - 1)
    assert 0.016 <= mean <= 0.03, f"writes every {mean * 1000:.1f} ms, not every 20 ms"
    assert writer.stream == "fleetdrill-1000"
    assert {w.seq for w in writes} <= set(store.orders["fleetdrill-1000"])
    assert store.orders["fleetdrill-1000"][1000] == {
        "seq": 1000,
        "payload": "fleetdrill sentinel",
        "stream": "fleetdrill-1000",
    }


def test_failed_and_hanging_writes_are_recorded_unacknowledged(store: Store) -> None:
    with SentinelWriter(f"{store.base}/orders", rate_hz=50, timeout_s=0.2) as writer:
        wait_for(lambda: len(acked(writer)) >= 3, 10, "3 acknowledged writes")
        store.mode = "fail"
        wait_for(lambda: sum(e.startswith("HTTP 503") for e in writer.errors().values()) >= 2, 10, "503s")
        store.mode = "hang"
        wait_for(lambda: any("timed out" in e for e in writer.errors().values()), 10, "a timed-out write")
        store.mode = "ok"
        resumed = writer.writes()[-1].seq
        wait_for(lambda: [w for w in acked(writer) if w.seq > resumed][2:], 10, "3 writes acked again")
    writes, errors = writer.writes(), writer.errors()
    assert [w.seq for w in writes] == list(range(writes[0].seq, writes[0].seq + len(writes)))
    assert {w.seq for w in writes if w.acked_at is None} == set(errors)
    assert {w.seq for w in writes if w.acked_at is not None} <= set(store.orders[writer.stream])
    by_outcome = {o: {w.seq for w in writes if w.outcome == o} for o in ("acked", "refused", "unknown")}
    assert by_outcome["refused"] == {seq for seq, e in errors.items() if e.startswith("HTTP 503")} != set()
    assert by_outcome["unknown"] == set(errors) - by_outcome["refused"] != set()  # the app never answered
    assert any("timed out" in errors[seq] for seq in by_outcome["unknown"])
    assert all(w.acked_at == w.ended_at for w in writes if w.outcome == "acked")
    ends = [w.ended_at for w in writes]
    assert None not in ends and ends == sorted(ends)


def test_writes_to_a_target_that_cannot_be_reached_are_unknown_not_refused() -> None:
    with socket.socket() as unreachable:
        unreachable.bind(("127.0.0.1", 0))  # bound but not listening: every connection is refused
        url = f"http://127.0.0.1:{unreachable.getsockname()[1]}/orders"
        with SentinelWriter(url, rate_hz=50, timeout_s=0.2) as writer:
            wait_for(lambda: len(writer.writes()) >= 3, 10, "3 writes")
    writes, errors = writer.writes(), writer.errors()
    assert {(w.outcome, w.acked_at) for w in writes} == {("unknown", None)}
    assert all(errors[w.seq].startswith("ConnectionRefusedError") for w in writes)


def test_writers_made_later_start_above_earlier_seqs(store: Store) -> None:
    before = time.time_ns() // 1000
    first = SentinelWriter(f"{store.base}/orders")
    second = SentinelWriter(f"{store.base}/orders")
    assert before <= first.seq_base < second.seq_base <= new_seq_base() < 2**53


def test_stop_is_idempotent_and_an_exception_in_the_block_stops_the_writer(store: Store) -> None:
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="drill failed"), SentinelWriter(f"{store.base}/orders") as writer:
        wait_for(lambda: writer.writes(), 10, "a write")
        raise RuntimeError("drill failed")
    writer.stop()
    new = [t for t in threading.enumerate() if t not in before and "process_request" not in t.name]
    assert new == []
    with pytest.raises(FleetDrillError, match="already started"):
        writer.start()


def test_read_present_follows_next_page_by_page_in_one_stream(store: Store) -> None:
    seqs = [*range(1, 11), 12, 40]
    store.orders = {"s": {s: {"seq": s} for s in seqs}, "default": {99: {"seq": 99}}}
    assert read_present(store.base, stream="s") == set(seqs)
    assert store.gets == [f"/orders?since={since}&stream=s" for since in (0, 3, 6, 9)]
    assert read_present(f"{store.base}/", since=9, stream="s") == {10, 12, 40}
    assert read_present(store.base) == {99}


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("stuck", r'"next" 0 does not move past since=0'),
        ("shape", r'expected \{"orders"'),
        ("fail", "answered HTTP 503"),
    ],
)
def test_read_present_refuses_what_it_cannot_trust(store: Store, mode: str, match: str) -> None:
    store.orders = {"default": {s: {"seq": s} for s in range(1, 10)}}
    store.mode = mode
    with pytest.raises(FleetDrillError, match=match):
        read_present(store.base)


def test_reads_of_an_unreachable_app_fail_loudly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FleetDrillError, match="failed: ConnectionRefusedError"):
        read_present(f"http://127.0.0.1:{port}")


def test_read_order_answers_the_order_or_none(store: Store) -> None:
    store.orders = {"s": {7: {"seq": 7, "payload": "x"}}}
    assert read_order(store.base, 7, stream="s") == {"seq": 7, "payload": "x"}
    assert read_order(store.base, 8, stream="s") is None
    assert read_order(store.base, 7) is None
    assert store.gets[-1] == "/orders/7"


@pytest.mark.parametrize("url", ["ftp://host/orders", "http:///orders", "http://host:99999/orders"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="bad URL"):
        SentinelWriter(url)
