"""A local HTTP server whose answers a test switches (ok, fail, slow, hang, ...), and the `servers` fixture
that makes them: what the probers' unit tests probe."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out as two writes: no delayed-ACK stall between them
    server: _HTTPServer

    def do_GET(self) -> None:
        app = self.server.app
        if app.mode in ("hang", "drop"):  # hang: answer nothing until the server stops
            if app.mode == "hang":
                app.release.wait()
            self.close_connection = True
            return
        if app.mode == "raw":
            self.wfile.write(app.raw)
            self.close_connection = True
            return
        if app.mode == "slow":
            app.release.wait(app.delay)
        if app.mode == "json":
            body, kind = json.dumps({"cluster": app.identity}).encode(), "application/json"
        else:
            body, kind = app.identity.encode(), "text/plain"
        self.send_response({"fail": 503, "status": app.status}.get(app.mode, 200))
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if app.mode != "json":
            self.send_header("X-Served-By", app.identity)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads

    def __init__(self, app: Server, port: int) -> None:
        self.app = app
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self.app.lock:
            self.app.accepted += 1
            self.app.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self.app.lock:
            self.app.open.discard(request)
        super().shutdown_request(request)


class Server:
    """An HTTP server on 127.0.0.1 whose answers switch with `mode`: ok, fail (503), status (`status`),
    slow (after `delay`), json (the identity in a JSON body's "cluster", no header), hang, drop (close
    without answering), raw (write `raw` and close). Every answer but json's carries X-Served-By."""

    def __init__(self, mode: str = "ok", identity: str = "c1/pod-a", port: int = 0) -> None:
        self.mode, self.identity, self.delay, self.raw, self.status = mode, identity, 0.0, b"", 200
        self.lock, self.release = threading.Lock(), threading.Event()
        self.accepted, self.open = 0, set[socket.socket]()
        self._httpd = _HTTPServer(self, port)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/healthz"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="test-server")
        self._thread.start()
        self._stopped = False

    def clients_open(self) -> int:
        """Connections whose client has not closed its end (even those a hanging handler holds)."""
        with self.lock:
            return sum(_peer_open(sock) for sock in self.open)

    def stop(self) -> None:
        """Stop as a killed process would: the listener and every connection close."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self.release.set()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()


def _peer_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(mode: str = "ok", identity: str = "c1/pod-a", port: int = 0) -> Server:
        made.append(Server(mode, identity, port))
        return made[-1]

    yield make
    for server in made:
        server.stop()
