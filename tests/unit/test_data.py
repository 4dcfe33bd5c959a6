"""The sentinel writer and the sentinel stores (harness.data, harness.sentinels) against a fake orders API
and fake scripts: sentinel seqs and acks, failed writes, paginated read-back, the adapters' settings."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from harness.config import CommandSentinels, HttpSentinels
from harness.data import SentinelWriter, new_seq_base
from harness.errors import ConfigError, FleetDrillError
from harness.samples import SentinelWrite
from harness.sentinels import Attempt, CommandStore, HttpStore, Where
from tests.conftest import wait_for


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out as two writes: no delayed-ACK stall between them
    server: _HTTPServer

    def do_POST(self) -> None:
        store = self.server.store
        store.methods.add(self.command)
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

    do_PUT = do_POST

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
        self.methods: set[str] = set()
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


ORDERS = HttpSentinels.model_validate(
    {"adapter": "http", "write": {"path": "/orders"}, "read": {"path": "/orders", "items": "orders"}}
)


def writer_to(
    base: str, timeout_s: float = 2.0, spec: HttpSentinels = ORDERS, **options: object
) -> SentinelWriter:
    """A writer to the fake orders API at `base`, as the sample app's fleet file configures it."""
    channel = HttpStore(spec, write_timeout_s=timeout_s).channel(Where("global", base))
    return SentinelWriter(channel, **options)  # type: ignore[arg-type]


def read_present(base: str, since: int = 0, stream: str = "default") -> set[int]:
    return HttpStore(ORDERS).present(Where("eu-west", base), since, stream)


def acked(writer: SentinelWriter) -> list[SentinelWrite]:
    return [w for w in writer.writes() if w.acked_at is not None]


class SlowThird:
    """A channel that acknowledges at once, except its third write, which takes five beats."""

    timeout_s = 1.0

    def __init__(self) -> None:
        self.sent: list[float] = []

    def send(self, seq: int, stream: str) -> Attempt:
        self.sent.append(time.monotonic())
        if len(self.sent) == 3:
            time.sleep(0.1)  # the slow write under test, not a synchronisation
        return Attempt("acked")

    def close(self) -> None:
        pass


def test_a_slow_write_skips_beats_and_never_bursts_to_catch_up() -> None:
    channel = SlowThird()
    with SentinelWriter(channel, rate_hz=50) as writer:  # type: ignore[arg-type]
        wait_for(lambda: len(channel.sent) >= 8, 10, "8 writes")
    sent, beat = channel.sent, 0.02
    # writes wake on beats, each at most one beat late (a later wake skips the beats it missed), so any
    # k+1 writes span at least k-1 beats, however busy the machine; a burst to catch up would not
    pairs = [(i, j) for i in range(len(sent)) for j in range(i + 1, len(sent))]
    crowded = [(i, j) for i, j in pairs if sent[j] - sent[i] < (j - i - 1) * beat]
    assert not crowded, f"writes closer than the beat allows: {crowded}"
    assert sent[3] - sent[2] >= 0.1, "the write after the slow one waits for it"
    seqs = [w.seq for w in writer.writes()]
    assert seqs == list(range(writer.seq_base, writer.seq_base + len(sent)))


def test_writer_writes_consecutive_seqs_from_its_base_on_a_steady_beat(store: Store) -> None:
    with writer_to(store.base, rate_hz=50, seq_base=1000) as writer:
        wait_for(lambda: len(writer.writes()) >= 15, 10, "15 writes")
    writes = writer.writes()
    assert [w.seq for w in writes] == list(range(1000, 1000 + len(writes)))
    assert all(w.acked_at is not None for w in writes) and writer.errors() == {}
    times = [w.acked_at for w in writes]
    assert times == sorted(times)
    mean = (times[-1] - times[0]) / (len(times) - 1)
    # never faster than the beat; slower only by the beats a late wake-up skips on a loaded runner (the
    # writer does not burst to catch up): three beats is what a busy 2-core CI runner was seen to need
    assert 0.016 <= mean <= 0.06, f"writes every {mean * 1000:.1f} ms, not every 20 ms"
    assert writer.stream == "fleetdrill-1000"
    assert {w.seq for w in writes} <= set(store.orders["fleetdrill-1000"])
    assert store.orders["fleetdrill-1000"][1000] == {
        "seq": 1000,
        "payload": "fleetdrill sentinel",
        "stream": "fleetdrill-1000",
    }


def test_failed_and_hanging_writes_are_recorded_unacknowledged(store: Store) -> None:
    with writer_to(store.base, 0.2, rate_hz=50) as writer:
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
        url = f"http://127.0.0.1:{unreachable.getsockname()[1]}"
        with writer_to(url, 0.2, rate_hz=50) as writer:
            wait_for(lambda: len(writer.writes()) >= 3, 10, "3 writes")
    writes, errors = writer.writes(), writer.errors()
    assert {(w.outcome, w.acked_at) for w in writes} == {("unknown", None)}
    assert all(errors[w.seq].startswith("ConnectionRefusedError") for w in writes)


def test_writers_made_later_start_above_earlier_seqs(store: Store) -> None:
    before = time.time_ns() // 1000
    first = writer_to(store.base)
    second = writer_to(store.base)
    assert before <= first.seq_base < second.seq_base <= new_seq_base() < 2**53


def test_stop_is_idempotent_and_an_exception_in_the_block_stops_the_writer(store: Store) -> None:
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="drill failed"), writer_to(store.base) as writer:
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


@pytest.mark.parametrize("url", ["ftp://host", "http:///", "http://host:99999"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="bad URL"):
        writer_to(url)


def test_the_http_adapter_takes_its_paths_method_body_and_fields_from_the_fleet_file(store: Store) -> None:
    """Another app's API: PUT with its own body, listed under "items" with "cursor" for the next page."""
    spec = HttpSentinels.model_validate(
        {
            "adapter": "http",
            "write": {"path": "/orders", "method": "PUT", "body": {"seq": "$seq", "note": "dr-$stream-$seq"}},
            "read": {"path": "/orders", "items": "orders", "next": "next"},
        }
    )
    with writer_to(store.base, spec=spec, rate_hz=50, seq_base=5, stream="s") as writer:
        wait_for(lambda: len(acked(writer)) >= 2, 10, "2 acknowledged writes")
    assert store.methods == {"PUT"}
    assert store.orders["default"][5] == {"seq": 5, "note": "dr-s-5"}
    other = HttpSentinels.model_validate(
        {"adapter": "http", "write": {"path": "/orders"}, "read": {"path": "/orders", "items": "items"}}
    )
    with pytest.raises(FleetDrillError, match=r'expected \{"items"'):
        HttpStore(other).present(Where("eu-west", store.base), 0, "default")


def script(tmp_path: Path) -> Path:
    """A sentinel store of the user's own: writes append "stream seq" lines to a file; reads print them."""
    path = tmp_path / "sentinels.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import json, sys, time
            kept = {str(tmp_path / "kept.txt")!r}
            if sys.argv[1] == "write":
                seq, stream, target = sys.argv[2:]
                if open({str(tmp_path / "mode")!r}).read() == "refuse":
                    sys.exit("read-only replica")
                if open({str(tmp_path / "mode")!r}).read() == "hang":
                    time.sleep(5)
                open(kept, "a").write(f"{{stream}} {{seq}}\\n")
                print(f"{{target}}/db-0")
            else:
                since, stream = int(sys.argv[2]), sys.argv[3]
                for line in open(kept):
                    name, seq = line.split()
                    if name == stream and int(seq) > since:
                        print(json.dumps({{"seq": int(seq)}}) if int(seq) % 2 else seq)
            """
        )
    )
    (tmp_path / "kept.txt").write_text("")
    (tmp_path / "mode").write_text("ok")
    return path


def command_store(tmp_path: Path, timeout: str = "5s") -> CommandStore:
    argv = [sys.executable, str(script(tmp_path))]
    spec = {
        "adapter": "command",
        "write": [*argv, "write", "{seq}", "{stream}", "{target}"],
        "read": [*argv, "read", "{since}", "{stream}"],
        "timeout": timeout,
    }
    return CommandStore(CommandSentinels.model_validate(spec))


def test_the_command_adapter_writes_and_reads_through_the_users_scripts(tmp_path: Path) -> None:
    sentinels = command_store(tmp_path, timeout="2s")  # a Python start on a loaded runner: under 2 s
    with SentinelWriter(sentinels.channel(Where("us-east", "")), rate_hz=20, seq_base=10) as writer:
        wait_for(lambda: len(acked(writer)) >= 3, 20, "3 acknowledged writes")
        (tmp_path / "mode").write_text("refuse")
        wait_for(lambda: any(w.outcome == "refused" for w in writer.writes()), 20, "a refused write")
        (tmp_path / "mode").write_text("hang")
        wait_for(lambda: any(w.outcome == "unknown" for w in writer.writes()), 20, "a write left unknown")
    writes, errors = writer.writes(), writer.errors()
    written = {w.seq for w in writes if w.outcome == "acked"}
    assert {w.served_by for w in writes if w.outcome == "acked"} == {"us-east"}
    assert any("read-only replica" in errors[w.seq] for w in writes if w.outcome == "refused")
    assert any("still ran after 2 s" in errors[w.seq] for w in writes if w.outcome == "unknown")
    assert sentinels.present(Where("us-east", ""), 9, writer.stream) == written
    assert sentinels.present(Where("us-east", ""), 10, writer.stream) == written - {10}


@pytest.mark.parametrize(
    ("program", "match"),
    [
        ("print(1); print('two')", "line 2: expected a number or a JSON object with its seq, got 'two'"),
        ("import sys; sys.exit('no route to db')", "exited 1: no route to db"),
        ("import time; time.sleep(10)", "still ran after 2 s"),
    ],
)
def test_the_command_adapter_refuses_reads_it_cannot_trust(program: str, match: str) -> None:
    spec = {
        "adapter": "command",
        "write": ["true"],
        "read": [sys.executable, "-c", program],
        "timeout": "2s",
    }
    with pytest.raises(FleetDrillError, match=match):
        CommandStore(CommandSentinels.model_validate(spec)).present(Where("us-east", ""), 0, "s")
