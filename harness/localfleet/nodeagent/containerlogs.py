"""Container logs for the kubelet's API: one run's log file served as the kubelet serves it.

The runtime writes a container's raw output to `logs/<container>/<run>.log` under the pod's folder,
one file per run, with no time per line (a CRI runtime writes one). A line is served as a CRI runtime
logs it: a line ending in CR LF (a terminal's, when the container has a tty) ends in LF (containerd's
log writer drops either line end, and the kubelet's reader prints LF). The kubelet's `timestamps`,
`sinceSeconds` and `sinceTime` need those times, so a LogClock samples every running container's log
size every CLOCK_S. A byte is dated by the first sample at or past it, that is, by the file's
modification time then: no earlier than the write (give or take a tick of the kernel's coarse clock)
and at most CLOCK_S later. Lines already in a log when it is first sampled (written before the agent
started, say) all get that first sample's time; a log never sampled is dated by its modification time.
"""

import asyncio
import bisect
import datetime as dt
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from harness.localfleet.nodeagent import streams
from harness.localfleet.nodeagent.pods import Container, PodWorker

CLOCK_S = 0.25
MAX_SAMPLES = 4096  # per log; past this every other sample goes (dates stay upper bounds)
FOLLOW_POLL_S = 0.1
LINE = re.compile(rb"[^\n]*\n|[^\n]+")


class LogError(Exception):
    """No log to show for the request, worded as the kubelet words it."""


@dataclass(frozen=True)
class LogOptions:
    """The v1.PodLogOptions query the API server forwards (pkg/registry/core/pod/strategy.go)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail: int | None = None
    limit: int | None = None
    since: float | None = None

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> "LogOptions":
        """Decode and validate as the kubelet does: 400 when undecodable, 422 when invalid."""
        first = {key: values[0] for key, values in query.items()}
        if "tail" in first:  # the older name; "all" means no limit
            tail = first.pop("tail")
            if tail != "all":
                first["tailLines"] = tail
        try:
            tail, limit, seconds = (
                int(first[key]) if key in first else None
                for key in ("tailLines", "limitBytes", "sinceSeconds")
            )
            moment = (
                dt.datetime.fromisoformat(first["sinceTime"]).timestamp() if "sinceTime" in first else None
            )
        except ValueError as error:
            raise streams.Refusal(HTTPStatus.BAD_REQUEST, '{"message": "Unable to decode query."}') from error
        if (
            (tail is not None and tail < 0)
            or (limit is not None and limit < 1)
            or (seconds is not None and (seconds < 1 or moment is not None))
        ):
            raise streams.Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, '{"message": "Invalid request."}')

        def flag(key: str) -> bool:  # as apimachinery's Convert_Slice_string_To_bool
            return key in first and first[key] != "0" and first[key].lower() != "false"

        since = time.time() - seconds if seconds is not None else moment
        return cls(flag("follow"), flag("previous"), flag("timestamps"), tail, limit, since)


def _run_of(container_id: str) -> int:
    """The run number in a container ID (the pod worker names a run `fleetdrill://UID-NAME-RUN`)."""
    return int(container_id.rsplit("-", 1)[1])


def chosen_run(pod: str, container: Container, previous: bool) -> int:
    """Which run's log to show, chosen as the kubelet's validateContainerLogStatus chooses from the
    container's state: the running one, else the last terminated one; `previous` wants the one
    before (lastState.terminated exists once a later run is started or due)."""
    name, last = container.spec.name, container.last_exit
    has_previous = last is not None and container.restarts > _run_of(last["containerID"])
    if previous:
        if not has_previous:
            raise LogError(f'previous terminated container "{name}" in pod "{pod}" not found')
        return _run_of(last["containerID"])
    if container.process is not None:
        return container.restarts
    if last is not None:
        return _run_of(last["containerID"])
    raise LogError(f'container "{name}" in pod "{pod}" is waiting to start: {container.waiting_reason}')


def log_path(worker: PodWorker, name: str, run: int) -> Path:
    return worker.volumes.pod_dir(worker.pod.metadata.uid) / "logs" / name / f"{run}.log"


def logged(line: bytes) -> bytes:
    """The line as the runtime's log has it: a CR LF line end becomes LF."""
    return line[:-2] + b"\n" if line.endswith(b"\r\n") else line


def _stamp(moment: float) -> bytes:
    """RFC 3339 with nine fractional digits, as the CRI log reader prints (RFC3339NanoFixed)."""
    whole = int(moment)
    fraction = int((moment - whole) * 1e9)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{fraction:09d}Z").encode()


def read_at(path: Path, offset: int) -> bytes:
    """The file from `offset` on (nothing if it does not exist)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read()
    except FileNotFoundError:
        return b""


class LogClock:
    """When each part of every container log reached the disk (see the module docstring)."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
        self.paths: dict[tuple[str, str, int], Path] = {}  # each run's log file, worked out once

    async def run(self, workers: dict[str, PodWorker]) -> None:
        while True:
            self.sample(workers)
            await asyncio.sleep(CLOCK_S)

    def sample(self, workers: dict[str, PodWorker]) -> None:
        """Note each running container's log size and modification time; forget pods that are gone."""
        alive = set()
        for worker in list(workers.values()):
            uid = worker.pod.metadata.uid
            alive.add(uid)
            for container in worker.containers:
                if container.process is None:
                    continue
                key = (uid, container.spec.name, container.restarts)
                path = self.paths.get(key)
                if path is None:
                    path = self.paths[key] = log_path(worker, *key[1:])
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue
                points = self.samples.setdefault(key, [])
                if not points or info.st_size > points[-1][0]:
                    points.append((info.st_size, info.st_mtime))
                if len(points) > MAX_SAMPLES:
                    del points[1:-1:2]
        for key in [key for key in self.paths if key[0] not in alive]:
            del self.paths[key]
        for key in [key for key in self.samples if key[0] not in alive]:
            del self.samples[key]

    def time_of(self, key: tuple[str, str, int], path: Path, offset: int) -> float:
        """An upper bound of when the byte before `offset` was written."""
        points = self.samples.get(key, [])
        index = bisect.bisect_left(points, (offset, float("-inf")))
        if index < len(points):
            return points[index][1]
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return time.time()

    async def read(
        self, worker: PodWorker, container: Container, run: int, options: LogOptions, hung_up: asyncio.Future
    ) -> AsyncIterator[bytes]:
        """One run's log as the kubelet serves it: tail, since, timestamps and limit; with follow,
        new lines until that run has ended and its log is read out, or the client hangs up."""
        key = (worker.pod.metadata.uid, container.spec.name, run)
        path, offset, sent, tail = log_path(worker, container.spec.name, run), 0, 0, options.tail
        while True:
            live = options.follow and worker.is_alive() and container.process is not None
            live = live and container.restarts == run
            data = read_at(path, offset)
            data = data[: data.rfind(b"\n") + 1] if live else data  # a partial line may still grow
            entries, end = [], offset
            for line in LINE.findall(data):
                end += len(line)
                entries.append((line, end))
            offset = end
            if tail is not None:
                entries, tail = entries[max(0, len(entries) - tail) :], None
            shown = []
            for line, end in entries:
                moment = self.time_of(key, path, end)
                if options.since is None or moment >= options.since:
                    entry = logged(line)
                    shown.append(_stamp(moment) + b" " + entry if options.timestamps else entry)
            out = b"".join(shown)
            if options.limit is not None:
                out = out[: options.limit - sent]
            sent += len(out)
            if out:
                yield out
            if not live or sent == options.limit:
                return
            await asyncio.wait([hung_up], timeout=FOLLOW_POLL_S)
            if hung_up.done():
                return
