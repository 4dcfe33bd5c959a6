"""The sample app: "orders", a small stateful service with async replication, epochs and fencing.

A test bed for DR drills, not a database. One instance runs per cluster. The primary commits a write
locally (fsync) and acknowledges it, then ships it to every peer after ORDERS_REPLICATION_LAG, so a
primary lost within the lag really loses acknowledged writes. Run: python -m harness.localfleet.sampleapp

Environment:
  ORDERS_DATA_DIR         the claim's folder: orders.jsonl (the log) and state.json (required, unless
                          ORDERS_DATABASE_URL)
  ORDERS_DATABASE_URL     optional: keep the orders in this PostgreSQL database (a libpq conninfo or URL,
                          the password in libpq's PGPASSWORD) instead: harness.localfleet.sampleapp_pg, where
                          the database replicates, fences and is promoted (the ORDERS_ROLE, _REPLICATION_LAG
                          and _FENCE_TIMEOUT below do not apply; ORDERS_PEERS is asked before a promotion)
  ORDERS_CLUSTER          this cluster's name (required)
  POD_NAME                this pod's name (default: the host name)
  ORDERS_LISTEN           host:port (or :port) to serve on (default 0.0.0.0:8080)
  ORDERS_ROLE             primary|replica at first start (default replica); state.json wins afterwards
  ORDERS_PEERS            comma-separated cluster=URL of the other clusters' endpoints (own name skipped)
  ORDERS_REPLICATION_LAG  seconds a committed write waits before it is shipped (default 0.5)
  ORDERS_CONFIG_DIR       optional folder of mounted ConfigMap/Secret files, listed by GET /config
  ORDERS_POLL_INTERVAL    seconds between rounds of GET /status to every peer (default 1)
  ORDERS_FENCE_TIMEOUT    seconds a primary stays writable after its last peer answer (default 5; 0: forever)
  ORDERS_DEPENDS_ON       comma-separated name=URL of services the app needs (default none): each is asked
                          GET URL every ORDERS_POLL_INTERVAL, and /readyz answers 503 naming the first that
                          did not answer 2xx in the last round (a readiness check of downstream services:
                          the coupling the environment isolation drill's broken fleet wires across
                          environments)
  ORDERS_FAIL_SHARE       share of client requests answered 500 (default 0; a bad version for the rollout
                          gate's drill): every request but the kubelet's probes (User-Agent kube-probe/...),
                          GET /metrics and the peers' /status and /replicate, spread evenly (every 1/share-th)

API (JSON; every response carries X-Served-By: <cluster>/<pod>; stream defaults to "default"):
  POST /orders {"seq", "payload", "stream"?}  201 committed {"seq", "stream", "epoch", "cluster"}; 200 the
      same payload again; 409 another payload; 503 {"error": "not primary" | "fenced: cannot confirm primacy"}
  GET /orders/{seq}[?stream=]                 200 the order | 404
  GET /orders?since=N[&stream=][&limit=L]     {"orders": [seq > N, by seq, at most L (100)], "next": seq|null}
  GET /healthz                                200 (the log is loaded before the port opens)
  GET /readyz                                 200 (fenced is ready); 503 {"error": "dependency NAME ..."}
      while a service of ORDERS_DEPENDS_ON did not answer its last poll (not ready until its first answer)
  GET /status                                 {"cluster", "pod", "role", "epoch", "fenced", "fence_reason",
      "position", "last_seq": {stream: seq}, "replicated_to": {peer: position}, "peers": {peer: last poll}}
  GET /config                                 {"dir", "files": {relative path: sha256}}
  GET /metrics                                Prometheus' text format (harness.localfleet.sampleapp_metrics)
  POST /replicate {"epoch", "from", "entries"} applied idempotently; 409 {"epoch"} when its epoch is stale
  POST /promote {"epoch"?}                    become primary at epoch+1 (or the given one if higher)

Epochs and fencing (never two writable primaries, at the price of availability):
- Every node adopts the highest epoch it meets (a peer's /status, a replication batch or reply). A primary
  that meets a higher epoch, or another primary at its own, steps down to replica, deposed: fenced=true
  with the reason, persisted, until a promote.
- A primary is writable only while confirmed: a round of status polls in which at least one peer answered
  and none held a higher epoch. At start (and first start: a wiped claim looks the same) a primary is
  unconfirmed; if no peer answers it stays fenced and refuses writes. A confirmation lasts
  ORDERS_FENCE_TIMEOUT, so a primary cut off from every peer fences itself and cannot accept writes when
  it rejoins before learning of a newer epoch. A promote confirms until the next answer from a peer (the
  operator's word that the others are gone); a node without peers is always confirmed.
- Cost: in a two-cluster fleet, losing the replica stops writes on the primary after the timeout
  (set ORDERS_FENCE_TIMEOUT=0 to keep them, and lose the protection against a partitioned primary).
"""

import hashlib
import http.client
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from harness.localfleet.sampleapp_metrics import CONTENT_TYPE, AppMetrics
from harness.localfleet.sampleapp_store import PRIMARY, REPLICA, Order, Primacy, Store

DEFAULT_STREAM = "default"
PEER_TIMEOUT_S = 1.0
BATCH = 256
PEER_PATHS = ("/status", "/replicate")
FAILED = "injected failure (ORDERS_FAIL_SHARE)"
log = logging.getLogger("orders")
Reply = tuple[int, Any]


class BadRequest(ValueError):
    """The client sent something the API cannot take (400)."""


@dataclass(frozen=True)
class Config:
    data_dir: Path | None
    cluster: str
    pod: str = "orders"
    listen: tuple[str, int] = ("0.0.0.0", 8080)
    role: str = REPLICA
    peers: dict[str, str] = field(default_factory=dict)
    lag: float = 0.5
    config_dir: Path | None = None
    poll_interval: float = 1.0
    fence_timeout: float = 5.0
    depends_on: dict[str, str] = field(default_factory=dict)
    fail_share: float = 0.0
    database: str | None = None
    """ORDERS_DATABASE_URL: the orders are kept in this PostgreSQL database (sampleapp_pg), not the log."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Config":
        """Parse the environment; a ValueError names the bad variable."""

        def seconds(name: str, default: float) -> float:
            try:
                value = float(env.get(name, default))
            except ValueError:
                value = -1.0
            if not 0 <= value < math.inf:
                raise ValueError(f"{name}: expected seconds >= 0, got {env[name]!r}")
            return value

        database = env.get("ORDERS_DATABASE_URL") or None
        needed = ("ORDERS_CLUSTER",) if database else ("ORDERS_DATA_DIR", "ORDERS_CLUSTER")
        missing = [name for name in needed if not env.get(name)]
        if missing:
            raise ValueError(f"{' and '.join(missing)} must be set")
        host, _, port = env.get("ORDERS_LISTEN", "0.0.0.0:8080").rpartition(":")
        if not port.isdigit():
            raise ValueError(f"ORDERS_LISTEN: expected host:port, got {env['ORDERS_LISTEN']!r}")
        role = env.get("ORDERS_ROLE", REPLICA)
        if role not in (PRIMARY, REPLICA):
            raise ValueError(f"ORDERS_ROLE: expected primary or replica, got {role!r}")
        try:
            fail_share = float(env.get("ORDERS_FAIL_SHARE", 0))
        except ValueError:
            fail_share = -1.0
        if not 0 <= fail_share <= 1:
            raise ValueError(
                f"ORDERS_FAIL_SHARE: expected a share in [0, 1], got {env['ORDERS_FAIL_SHARE']!r}"
            )
        peers = _named_urls(env, "ORDERS_PEERS", "cluster=http://host:port")
        peers.pop(env["ORDERS_CLUSTER"], None)
        return cls(
            data_dir=Path(env["ORDERS_DATA_DIR"]) if env.get("ORDERS_DATA_DIR") else None,
            cluster=env["ORDERS_CLUSTER"],
            pod=env.get("POD_NAME") or socket.gethostname(),
            listen=(host, int(port)),
            role=role,
            peers=peers,
            lag=seconds("ORDERS_REPLICATION_LAG", 0.5),
            config_dir=Path(env["ORDERS_CONFIG_DIR"]) if env.get("ORDERS_CONFIG_DIR") else None,
            poll_interval=seconds("ORDERS_POLL_INTERVAL", 1.0),
            fence_timeout=seconds("ORDERS_FENCE_TIMEOUT", 5.0),
            depends_on=_named_urls(env, "ORDERS_DEPENDS_ON", "name=http://host:port/path"),
            fail_share=fail_share,
            database=database,
        )


def _named_urls(env: Mapping[str, str], variable: str, form: str) -> dict[str, str]:
    """A comma-separated list of name=URL; a ValueError names the variable and the bad item."""
    found = {}
    for item in filter(None, (p.strip() for p in env.get(variable, "").split(","))):
        name, _, url = (part.strip() for part in item.partition("="))
        if not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"{variable}: expected {form}, got {item!r}")
        found[name] = url.rstrip("/")
    return found


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} must be an integer, got {value!r}")
    return value


def _query_int(query: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {query[name]!r}") from None


def _is_key(order: dict[str, Any]) -> bool:
    return isinstance(order.get("stream"), str) and isinstance(order.get("seq"), int)


def _call(url: str, body: object = None) -> Reply | None:
    """GET url (POST when there is a body): (status, JSON object), or None when no JSON object came back."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PEER_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, raw = error.code, error.read()
    except (OSError, http.client.HTTPException):
        return None
    try:
        reply = json.loads(raw)
    except ValueError:
        return None
    return (status, reply) if isinstance(reply, dict) else None


def _answers(url: str) -> bool:
    """GET url answers 2xx within PEER_TIMEOUT_S."""
    try:
        with urllib.request.urlopen(url, timeout=PEER_TIMEOUT_S) as response:
            return 200 <= response.status < 300
    except (OSError, http.client.HTTPException):
        return False


class Service:
    """What every orders instance has, whatever keeps its orders: the HTTP server, the dependency poller,
    /healthz, /readyz, /config, /metrics and the injected failures of ORDERS_FAIL_SHARE."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.served_by = f"{cfg.cluster}/{cfg.pod}"
        self.unready: str | None = "dependencies not asked yet" if cfg.depends_on else None
        self.cond = threading.Condition()  # guards the instance's state; notified on every change
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.metrics = AppMetrics(self.oldest_unshipped)
        self.server = Server(self)
        self.clients = 0  # client requests counted for ORDERS_FAIL_SHARE

    def start(self) -> None:
        self._spawn(self.server.serve_forever, 0.1)  # the period at which shutdown() is noticed
        if self.cfg.depends_on:
            self._spawn(self._dependency_loop)

    def close(self) -> None:
        """Stop serving and end every thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.threads:  # shutdown() waits for serve_forever() to return: only when it runs
            self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"orders-{target.__name__}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _dependency_loop(self) -> None:
        """Rounds of GET to every service of ORDERS_DEPENDS_ON: the app is ready only while all answered."""
        while True:
            down = [name for name, url in self.cfg.depends_on.items() if not _answers(url)]
            with self.cond:
                self.unready = (
                    f"dependency {down[0]} ({self.cfg.depends_on[down[0]]}) unreachable" if down else None
                )
                if self.cond.wait_for(lambda: self.stopping, self.cfg.poll_interval):
                    return

    def route(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Reply:
        if method == "GET" and path == "/healthz":
            return 200, {"ok": True}
        if method == "GET" and path == "/readyz":  # lock-free, as probes want: one reference read
            unready = self.unready
            return (503, {"error": unready}) if unready else (200, {"ok": True})
        if method == "GET" and path == "/config":
            return 200, self.config_files()
        return self.route_data(method, path, query, body)

    def route_data(self, method: str, path: str, query: Mapping[str, str], body: Any) -> Reply:
        """The orders, /status and the store's POST handlers (`posts`), each answered by the store."""
        if method == "GET" and path == "/status":
            return 200, self.status()
        if method == "GET" and path == "/orders":
            since, limit = _query_int(query, "since", -1), _query_int(query, "limit", 100)
            if not 1 <= limit <= 1000:
                raise BadRequest(f"limit must be between 1 and 1000, got {limit}")
            return 200, self.page(query.get("stream", DEFAULT_STREAM), since, limit)
        if method == "GET" and path.startswith("/orders/"):
            seq = _query_int({"seq": path.removeprefix("/orders/")}, "seq", 0)
            order = self.get(query.get("stream", DEFAULT_STREAM), seq)
            return (200, order) if order else (404, {"error": "no such order"})
        handlers = self.posts()
        if method == "POST" and path in handlers:
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            return handlers[path](body)
        return 404, {"error": f"no route for {method} {path}"}

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def page(self, stream: str, since: int, limit: int) -> dict[str, Any]:
        """GET /orders: {"orders": up to `limit` orders after seq `since`, "next": the next page's since}."""
        raise NotImplementedError

    def get(self, stream: str, seq: int) -> dict[str, Any] | None:
        raise NotImplementedError

    def posts(self) -> dict[str, Callable[[dict[str, Any]], Reply]]:
        """The store's POST handlers, by path."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where the orders are kept and this instance's role, for the log's first line."""
        raise NotImplementedError

    def fails(self, path: str, user_agent: str) -> bool:
        """ORDERS_FAIL_SHARE: this client request is one of the share answered 500 (evenly spread)."""
        share = self.cfg.fail_share
        if not share or user_agent.startswith("kube-probe/") or path in PEER_PATHS:
            return False
        with self.cond:
            n, self.clients = self.clients, self.clients + 1
        return math.floor((n + 1) * share) > math.floor(n * share)

    def oldest_unshipped(self) -> dict[str, float | None]:
        """Per peer, the commit time of the oldest write not yet shipped to it (None: none waits)."""
        return {}

    def config_files(self) -> dict[str, Any]:
        """Mounted files by path relative to ORDERS_CONFIG_DIR, skipping the kubelet's ..data machinery."""
        folder = self.cfg.config_dir
        if folder is None:
            return {"dir": None, "files": {}}
        files = {}
        for root, dirs, names in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".."))
            for name in sorted(n for n in names if not n.startswith("..")):
                path = Path(root, name)
                files[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
        return {"dir": str(folder), "files": files}


class App(Service):
    """One orders instance on its own store: its log, role and epoch, status poller and one shipper per
    peer."""

    def __init__(self, cfg: Config) -> None:
        if cfg.data_dir is None:
            raise ValueError("ORDERS_DATA_DIR must be set")
        self.store = Store(cfg.data_dir)
        self.node = Primacy(self.store, cfg.role, bool(cfg.peers), cfg.fence_timeout)
        self.peers: dict[str, dict[str, Any]] = {name: {"reachable": False} for name in cfg.peers}
        self.positions = dict.fromkeys(cfg.peers, 0)
        super().__init__(cfg)

    def start(self) -> None:
        super().start()
        if self.cfg.peers:
            self._spawn(self._poll_loop)
        for name, url in self.cfg.peers.items():
            self._spawn(self._ship_loop, name, url)

    def close(self) -> None:
        """Stop serving, end every thread, close the log; unshipped writes stay unshipped (as in a crash)."""
        super().close()
        self.store.close()

    def describe(self) -> str:
        return f"its log in {self.cfg.data_dir}, {self.node.role} at epoch {self.node.epoch}"

    def _poll_loop(self) -> None:
        """Rounds of GET /status to every peer: learn epochs, confirm primacy."""
        while True:
            replies = {name: _call(f"{url}/status") for name, url in self.cfg.peers.items()}
            with self.cond:
                answered = False
                for name, reply in replies.items():
                    ok = reply is not None and reply[0] == 200 and isinstance(reply[1].get("epoch"), int)
                    self.peers[name] = {"reachable": ok}
                    if ok:
                        answered = True
                        epoch, role = reply[1]["epoch"], reply[1].get("role")
                        self.peers[name] |= {"epoch": epoch, "role": role}
                        self.node.observe(name, epoch, role)
                if answered:
                    self.node.confirm()
                self.cond.notify_all()
                if self.cond.wait_for(lambda: self.stopping, self.cfg.poll_interval):
                    return

    def _due(self, name: str, retry_at: float) -> tuple[list[Order], float | None]:
        """The batch to ship to a peer now, or nothing and how long to wait (None: until notified)."""
        start, now = self.positions[name], time.monotonic()
        if self.node.refusal() or start >= self.store.position:
            return [], None
        if retry_at > now:
            return [], retry_at - now
        due_by = now - self.cfg.lag
        if self.store.committed_at[start] > due_by:
            return [], self.store.committed_at[start] - due_by
        end = start
        while end < min(start + BATCH, self.store.position) and self.store.committed_at[end] <= due_by:
            end += 1
        return self.store.log[start:end], None

    def _ship_loop(self, name: str, url: str) -> None:
        """Ship committed writes to one peer, in order, once they are ORDERS_REPLICATION_LAG old."""
        retry_at = 0.0
        while True:
            with self.cond:
                batch, wait = self._due(name, retry_at)
                while not batch and not self.stopping:
                    self.cond.wait(wait)
                    batch, wait = self._due(name, retry_at)
                if self.stopping:
                    return
                start, epoch = self.positions[name], self.node.epoch
            reply = _call(f"{url}/replicate", {"epoch": epoch, "from": self.cfg.cluster, "entries": batch})
            with self.cond:
                if reply is None or not isinstance(reply[1].get("epoch"), int):
                    retry_at = time.monotonic() + self.cfg.poll_interval
                elif reply[0] == 200:
                    if (self.node.epoch, self.positions[name]) == (epoch, start):
                        self.positions[name] = start + len(batch)
                else:  # a stale epoch: ours
                    self.node.observe(name, reply[1]["epoch"], reply[1].get("role"))
                    self.cond.notify_all()
                    retry_at = time.monotonic() + self.cfg.poll_interval

    def page(self, stream: str, since: int, limit: int) -> dict[str, Any]:
        with self.cond:
            orders, after = self.store.page(stream, since, limit)
        return {"orders": orders, "next": after}

    def get(self, stream: str, seq: int) -> dict[str, Any] | None:
        with self.cond:
            return self.store.get(stream, seq)

    def posts(self) -> dict[str, Callable[[dict[str, Any]], Reply]]:
        return {"/orders": self.post_order, "/replicate": self.replicate, "/promote": self.promote}

    def post_order(self, body: dict[str, Any]) -> Reply:
        seq, payload = _int(body.get("seq"), "seq"), body.get("payload")
        stream = body.get("stream", DEFAULT_STREAM)
        if not isinstance(stream, str):
            raise BadRequest("stream must be a string")
        with self.cond:
            refusal = self.node.refusal()
            if refusal:
                return 503, {"error": refusal, "role": self.node.role, "epoch": self.node.epoch}
            order = self.store.get(stream, seq)
            if order and order["payload"] != payload:
                return 409, {"error": f"seq {seq} of stream {stream!r} holds another payload", "order": order}
            status = 200 if order else 201
            if not order:
                order = dict(stream=stream, seq=seq, payload=payload, epoch=self.node.epoch, at=time.time())
                order["cluster"] = self.cfg.cluster
                self.store.append(order)
                self.cond.notify_all()
        return status, {k: order[k] for k in ("seq", "stream", "epoch", "cluster")}

    def replicate(self, body: dict[str, Any]) -> Reply:
        epoch, sender, entries = _int(body.get("epoch"), "epoch"), str(body.get("from")), body.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, dict) and _is_key(e) for e in entries):
            raise BadRequest("entries must be a list of orders")
        with self.cond:
            if epoch < self.node.epoch:
                return 409, {
                    "error": f"stale epoch {epoch}",
                    "epoch": self.node.epoch,
                    "role": self.node.role,
                }
            if self.node.observe(sender, epoch, PRIMARY):
                self.cond.notify_all()
            fresh = [e for e in entries if self.store.get(e["stream"], e["seq"]) != e]
            if fresh:
                self.store.append(*fresh)
            return 200, {"epoch": self.node.epoch, "role": self.node.role, "position": self.store.position}

    def promote(self, body: dict[str, Any]) -> Reply:
        wanted = body.get("epoch")
        wanted = 0 if wanted is None else _int(wanted, "epoch")
        with self.cond:
            if self.node.promote(wanted):
                self.positions = dict.fromkeys(self.positions, 0)
                self.cond.notify_all()
            return 200, {"cluster": self.cfg.cluster, "role": self.node.role, "epoch": self.node.epoch}

    def oldest_unshipped(self) -> dict[str, float | None]:
        """Per peer, the commit time of the oldest write not yet shipped to it (None: none waits)."""
        with self.cond:
            primary, end = self.node.role == PRIMARY, self.store.position
            return {
                peer: self.store.committed_at[start] if primary and start < end else None
                for peer, start in self.positions.items()
            }

    def status(self) -> dict[str, Any]:
        with self.cond:
            fence = self.node.fence_reason()
            return {
                "cluster": self.cfg.cluster,
                "pod": self.cfg.pod,
                "role": self.node.role,
                "epoch": self.node.epoch,
                "fenced": fence is not None,
                "fence_reason": fence,
                "position": self.store.position,
                "last_seq": self.store.last_seqs(),
                "replicated_to": dict(self.positions) if self.node.role == PRIMARY else {},
                "peers": {name: dict(view) for name, view in self.peers.items()},
            }


class Handler(BaseHTTPRequestHandler):
    """Parses a request, lets the app answer it, writes JSON; one request per connection (HTTP/1.0)."""

    server: "Server"
    timeout = 10

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        if method == "GET" and url.path == "/metrics":
            self._write(200, CONTENT_TYPE, self.server.app.metrics.render())
            return
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        if self.server.app.fails(url.path, self.headers.get("User-Agent") or ""):
            self._write(500, "application/json", json.dumps({"error": FAILED}).encode())
            self.server.app.metrics.observe(method, 500, time.monotonic() - started)
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            status, reply = self.server.app.route(method, url.path, query, body)
        except ValueError as error:  # BadRequest, or a body that is not JSON
            status, reply = 400, {"error": str(error)}
        except Exception as error:
            log.exception("%s %s failed", method, self.path)
            status, reply = 500, {"error": repr(error)}
        self._write(status, "application/json", json.dumps(reply).encode())
        self.server.app.metrics.observe(method, status, time.monotonic() - started)

    def _write(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def end_headers(self) -> None:
        self.send_header("X-Served-By", self.server.app.served_by)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: probes would flood the pod's log."""


class Server(ThreadingHTTPServer):
    """The HTTP server of one app; close() waits for the requests in flight."""

    daemon_threads = False
    # socketserver listens with a backlog of 5: a burst of probes and writes while the pod waits for a CPU
    # overflows it, and each dropped SYN comes back a second later (TCP's first retransmission), a
    # 1 s "latency" that is the server's, not the app's. Servers in production listen with the
    # kernel's maximum (Go, nginx: 511 and up).
    request_queue_size = 1024

    def __init__(self, app: Service) -> None:
        self.app = app
        super().__init__(app.cfg.listen, Handler)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = Config.from_env(os.environ)
    except ValueError as error:
        print(f"sampleapp: {error}", file=sys.stderr)
        return 2
    if cfg.database:  # psycopg loads only for an app given a database
        from harness.localfleet.sampleapp_pg import PgApp

        app: Service = PgApp(cfg)
    else:
        app = App(cfg)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    app.start()
    log.info("serving %s at %s: %s", app.served_by, cfg.listen, app.describe())
    stop.wait()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
