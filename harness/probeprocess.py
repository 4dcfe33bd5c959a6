"""Probes in a process of their own: the schedule never waits for the harness's interpreter lock.

A drill's own threads (API calls and their JSON, sentinel writes, evidence polls) hold the GIL for tens of
milliseconds at a time, far longer when the machine is busy and the holder is descheduled; a prober thread
beside them wakes late and misses its slots (bench/probe_isolation.py: one thread parsing JSON beside a
thread prober at 50 Hz cost most of its slots; the same prober in a process of its own kept all of them).
ProbeProcess runs a traffic.Prober in a child (`python -m harness.probeprocess`) and mirrors its records:
the child streams its samples and missed slots as JSON lines every BATCH_S. Times are CLOCK_MONOTONIC, one
clock for every process on the machine, so they compare with the harness's own.

The child stops on a `stop` line or when its stdin closes (the harness died): it never outlives its run.
Credentials cannot cross the process boundary, so a prober with `auth` stays a thread (traffic.Prober).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from itertools import takewhile
from typing import IO, Any

from harness.background import Background
from harness.errors import ConfigError, FleetDrillError
from harness.measure import availability
from harness.samples import MissedSlot, ProbeSample
from harness.traffic import Prober, TargetStats, raise_priority

BATCH_S = 0.05
"""How often the child sends what its prober recorded: the live figures lag by at most this."""
START_TIMEOUT_S = 30.0


class ProbeProcess(Background):
    """A traffic.Prober (same keywords, without auth) run in a child process, with the Prober's interface:
    a context manager; samples, missed, stats and availability read the records mirrored so far."""

    what = "the probes"

    def __init__(self, targets: Mapping[str, str], **settings: Any) -> None:
        self._settings = {"targets": dict(targets), **settings}
        self._targets = tuple(targets)
        self._lock = threading.Lock()
        self._samples: dict[str, list[ProbeSample]] = {t: [] for t in targets}
        self._missed: dict[str, list[MissedSlot]] = {t: [] for t in targets}
        self._stats: dict[str, TargetStats] = {t: TargetStats(t, 0, 0, 0, 0, 0) for t in targets}
        self._started, self._stopped_line = threading.Event(), threading.Event()
        self._config_error: str | None = None
        self._error: str | None = None
        self._timeout_s = 0.0
        self._child: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._stopped = False

    def start(self, deadline_s: float = START_TIMEOUT_S) -> ProbeProcess:
        """Start the child; returns once its schedule runs. ConfigError for settings the Prober refuses."""
        if self._child is not None:
            raise FleetDrillError("this ProbeProcess was already started; make a new one")
        argv = [sys.executable, "-m", "harness.probeprocess"]
        child = self._child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert child.stdin is not None and child.stdout is not None
        self._reader = threading.Thread(
            target=self._follow, args=(child.stdout,), name="fleetdrill-probe-process", daemon=True
        )
        self._reader.start()
        with contextlib.suppress(OSError):  # a child that ended at once says why below
            child.stdin.write(json.dumps(self._settings) + "\n")
            child.stdin.flush()
        deadline = time.monotonic() + deadline_s
        while not self._started.wait(0.05):
            if self._stopped_line.is_set() or time.monotonic() > deadline:
                self._stopped = True
                ended = self._end_child(0.0)
                if self._config_error is not None:
                    raise ConfigError(self._config_error)
                late = f"its schedule did not run within {deadline_s:g} s"
                why = self._error or (f"it exited with status {child.returncode}" if ended else late)
                raise FleetDrillError(f"the probe process could not start: {why}")
        return self

    def stop(self, deadline_s: float = 5.0, drain_s: float | None = None) -> None:
        """As Prober.stop: stop sending, let the child await the requests in flight (drain_s, default the
        probe timeout) and send its last records; the child is killed when it outlives deadline_s beyond
        the drain. Idempotent. Raises FleetDrillError when the prober failed or the child did not stop."""
        if self._child is None or self._stopped:
            return
        self._stopped = True
        drain = self._timeout_s if drain_s is None else drain_s
        if not self._end_child(drain + deadline_s, drain_s):
            raise FleetDrillError(f"the probe process did not stop within {drain + deadline_s:g} s; killed")
        self._raise_failure()

    def samples(self, target: str | None = None) -> list[ProbeSample]:
        """One target's samples, or every target's, in order of send time."""
        with self._lock:
            chosen = [self._series(self._samples, target)] if target else list(self._samples.values())
            merged = [s for series in chosen for s in series]
        return sorted(merged, key=lambda s: (s.sent, s.received))

    def missed(self, target: str) -> list[MissedSlot]:
        """The target's missed slots, in time order."""
        with self._lock:
            return list(self._series(self._missed, target))

    def stats(self, target: str) -> TargetStats:
        """Live counters of one target (as of the child's last batch); raises once the prober failed."""
        self._raise_failure()
        with self._lock:
            return self._series(self._stats, target)

    def availability(self, target: str, last_s: float) -> float | None:
        """As Prober.availability, over the probes mirrored so far."""
        self._raise_failure()
        since = time.monotonic() - last_s
        with self._lock:
            series = self._series(self._samples, target)
            recent = list(takewhile(lambda s: s.received >= since, reversed(series)))
        return availability(recent, latency_bound=self._settings.get("latency_bound_s"))

    def _series(self, records: Mapping[str, Any], target: str) -> Any:
        try:
            return records[target]
        except KeyError:
            raise KeyError(f"no probe target {target!r}; targets: {', '.join(self._targets)}") from None

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise FleetDrillError(f"the prober failed and stopped early: {self._error}")

    def _follow(self, lines: IO[str]) -> None:
        """The reader thread: mirror every line the child sends, until it closes its output."""
        for line in lines:
            message = json.loads(line)
            if "batch" in message:
                self._take(message["batch"])
            if "started" in message:
                self._timeout_s = message["timeout_s"]
                self._started.set()
            self._config_error = message.get("config_error", self._config_error)
            self._error = message.get("error") or self._error
            if "stopped" in message:
                self._stopped_line.set()
        self._stopped_line.set()

    def _take(self, batch: Mapping[str, Mapping[str, Any]]) -> None:
        with self._lock:
            for target, records in batch.items():
                self._samples[target].extend(ProbeSample(**s) for s in records["samples"])
                self._missed[target].extend(MissedSlot(**m) for m in records["missed"])
                if "stats" in records:
                    self._stats[target] = TargetStats(**records["stats"])

    def _end_child(self, deadline_s: float, drain_s: float | None = None) -> bool:
        """Ask the child to stop (drain_s: its drain) and close its input; kill it if it has not ended within
        deadline_s. Whether it ended by itself."""
        child = self._child
        assert child is not None and child.stdin is not None and self._reader is not None
        with contextlib.suppress(OSError, ValueError):  # it has already ended
            child.stdin.write("stop\n" if drain_s is None else f"stop {drain_s}\n")
        with contextlib.suppress(OSError):
            child.stdin.close()
        try:
            child.wait(deadline_s)
            ended = True
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            ended = False
        self._reader.join()
        return ended


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _batch(prober: Prober, seen: dict[str, list[int]], counters: bool = True) -> dict[str, Any]:
    """What the prober recorded since the last batch, per target, with its live counters (raises
    FleetDrillError once the prober failed, unless counters is False)."""
    batch: dict[str, Any] = {}
    for target, counts in seen.items():
        samples, missed = prober.recorded_after(target, *counts)
        counts[0] += len(samples)
        counts[1] += len(missed)
        batch[target] = {"samples": [asdict(s) for s in samples], "missed": [asdict(m) for m in missed]}
        if counters:
            batch[target]["stats"] = asdict(prober.stats(target))
    return batch


def _serve() -> None:
    """The child: run the Prober the first input line describes, stream its records, stop when asked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the harness's to handle: it stops us
    raise_priority()  # every thread of ours: the prober's, and those that stream its records and stop it
    settings = json.loads(sys.stdin.readline())
    targets = settings.pop("targets")
    try:
        prober = Prober(targets, **settings)
    except ConfigError as error:
        _emit({"config_error": str(error), "stopped": True})
        return
    drain: list[float | None] = [None]
    asked = threading.Event()

    def listen() -> None:
        for line in sys.stdin:  # `stop [drain_s]`; the end of input stops too
            if line.startswith("stop"):
                drain[0] = float(line.split()[1]) if len(line.split()) > 1 else None
                break
        asked.set()

    threading.Thread(target=listen, daemon=True).start()
    try:
        prober.start()
    except FleetDrillError as error:
        _emit({"error": str(error), "stopped": True})
        return
    _emit({"started": True, "timeout_s": prober.timeout_s})
    seen = {target: [0, 0] for target in targets}
    error = None
    try:
        while not asked.wait(BATCH_S):
            _emit({"batch": _batch(prober, seen)})
        prober.stop(drain_s=drain[0])
    except FleetDrillError as failure:  # the prober failed: its records so far, and why
        error = str(failure)
    with contextlib.suppress(FleetDrillError):
        prober.stop(drain_s=0)
    _emit({"batch": _batch(prober, seen, counters=False), "error": error, "stopped": True})


if __name__ == "__main__":
    _serve()
