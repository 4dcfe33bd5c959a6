"""The sentinel writer: numbered writes on a fixed grid through the app's sentinel store (sentinels.py), for
measured RPO (ARCHITECTURE.md, "Measurement definitions").

Two drills never collide, twice over. Each writer writes to its own stream, by default
"fleetdrill-<seq base>". And its seqs run up from its seq base, by default the wall-clock time in
microseconds when it was made (new_seq_base), so even an app without streams keeps drills apart: a later
drill starts above every seq an earlier one wrote (a writer adds far fewer than one seq per microsecond;
unless the clock was set back in between), and one started a second after another that is still running
stays clear of it for 10**6 writes (14 hours at 20 Hz). Seqs stay below 2**53, exact in any JSON parser.
"""

from __future__ import annotations

import math
import threading
import time

from harness.background import Background
from harness.errors import ConfigError, FleetDrillError
from harness.samples import SentinelWrite
from harness.sentinels import WriteChannel


def new_seq_base() -> int:
    """The default seq base: wall-clock microseconds since the epoch."""
    return time.time_ns() // 1000


class SentinelWriter(Background):
    """Writes seqs seq_base, seq_base + 1, ... to its stream at rate_hz from a background thread.

    One write at a time through the channel, on a fixed grid: a write that overruns its slot pushes the
    next to the next free slot. The channel says whether each was acknowledged, refused or left unknown;
    errors() says why each was not acknowledged. A context manager; read back with the store's
    present(where, writer.seq_base - 1, writer.stream).
    """

    what = "the sentinel writer"

    def __init__(
        self,
        channel: WriteChannel,
        rate_hz: float = 20.0,
        *,
        stream: str | None = None,
        seq_base: int | None = None,
    ) -> None:
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ConfigError(f"SentinelWriter rate_hz must be a positive number, got {rate_hz!r}")
        self.seq_base = new_seq_base() if seq_base is None else seq_base
        self.stream = stream or f"fleetdrill-{self.seq_base}"
        self._interval = 1.0 / rate_hz
        self._channel = channel
        self._deadline_s = 3 * channel.timeout_s + 1.0  # connect, send and receive may each take timeout_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writes: list[SentinelWrite] = []
        self._errors: dict[int, str] = {}
        self._thread: threading.Thread | None = None
        self._joined = False
        self._failure: BaseException | None = None

    def start(self) -> SentinelWriter:
        """Start writing."""
        if self._thread is not None or self._stop.is_set():
            raise FleetDrillError("this SentinelWriter was already started; make a new one")
        self._thread = threading.Thread(target=self._run, name="fleetdrill-sentinel", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the write in progress (within the channel's timeout) and join the thread; idempotent."""
        self._stop.set()
        if self._thread is None or self._joined:
            return
        self._joined = True
        self._thread.join(self._deadline_s)
        if self._thread.is_alive():
            raise FleetDrillError(f"the sentinel writer did not stop within {self._deadline_s:g} s")
        if self._failure is not None:
            raise FleetDrillError(f"the sentinel writer failed: {self._failure!r}") from self._failure

    def writes(self) -> list[SentinelWrite]:
        """Every write so far, in seq order."""
        with self._lock:
            return list(self._writes)

    def errors(self) -> dict[int, str]:
        """Why each unacknowledged write was not acknowledged, by seq."""
        with self._lock:
            return dict(self._errors)

    def _run(self) -> None:
        seq, due = self.seq_base, time.monotonic()
        try:
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                attempt = self._channel.send(seq, self.stream)
                ended_at = time.monotonic()
                acked_at = ended_at if attempt.outcome == "acked" else None
                write = SentinelWrite(seq, acked_at, attempt.outcome, ended_at, attempt.served_by)
                with self._lock:
                    self._writes.append(write)
                    if attempt.error is not None:
                        self._errors[seq] = attempt.error
                seq += 1
                due += self._interval * max(1, math.ceil((time.monotonic() - due) / self._interval))
        except BaseException as exc:
            self._failure = exc
        finally:
            self._channel.close()
