"""A bounded load on one URL: `concurrency` clients, each sending its next request as soon as the last one
is answered (a closed loop: the load offered is the requests in flight, never more), every answer and
failure recorded as it came. It stops when its block ends, on every exit path, or at its deadline, whichever
comes first: a drill that hangs or dies never leaves it running."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Self

from harness.background import Background
from harness.errors import FleetDrillError

JOIN_SLACK_S = 1.0
"""How long past a request's timeout stopping waits for a client thread."""


@dataclass(frozen=True)
class Request:
    """One request of the load: sent and received are monotonic seconds; status None when no answer came
    (then error says why); served_by is the identity header's value when the answer had one."""

    sent: float
    received: float
    status: int | None
    error: str | None
    served_by: str | None


class Load(Background):
    """`with Load(url, 32, deadline_s=300) as load:` keeps 32 requests in flight on url until the block ends
    or deadline_s after it began; `requests()` is what was sent so far, `started` and `stopped` when."""

    what = "the load"

    def __init__(
        self,
        url: str,
        concurrency: int,
        deadline_s: float,
        timeout_s: float = 5.0,
        identity_header: str | None = None,
    ) -> None:
        if concurrency < 1 or deadline_s <= 0 or timeout_s <= 0:
            raise ValueError(
                f"load needs concurrency >= 1 and positive times, got {concurrency}, {deadline_s}"
            )
        self.url, self.concurrency, self.deadline_s, self.timeout_s = url, concurrency, deadline_s, timeout_s
        self.identity_header = identity_header
        self.started = 0.0
        self.stopped: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> Self:
        self.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop every client (each ends its request in flight, at most timeout_s); FleetDrillError when one
        does not end in time."""
        self._stop.set()
        if self.stopped is None:  # the load dropped now, or at its deadline when that came first
            self.stopped = min(time.monotonic(), self.started + self.deadline_s)
        until = time.monotonic() + self.timeout_s + JOIN_SLACK_S
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise FleetDrillError(f"load on {self.url}: {len(alive)} client(s) still running after stop")

    @property
    def running(self) -> bool:
        """Clients are sending (not stopped, and before the deadline)."""
        return not self._stop.is_set() and time.monotonic() < self.started + self.deadline_s

    def requests(self, since: float = 0.0) -> list[Request]:
        """The requests sent at or after `since`, in the order they were answered."""
        with self._lock:
            return [r for r in self._requests if r.sent >= since]

    def _client(self) -> None:
        while self.running:
            sent, status, error, served_by = time.monotonic(), None, None, None
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                    response.read()
                    status = response.status
                    served_by = response.headers.get(self.identity_header) if self.identity_header else None
            except urllib.error.HTTPError as answer:
                status, error = answer.code, f"HTTP {answer.code}"
                served_by = answer.headers.get(self.identity_header) if self.identity_header else None
            except OSError as failure:
                error = f"{type(failure).__name__}: {failure}"
            with self._lock:
                self._requests.append(Request(sent, time.monotonic(), status, error, served_by))
