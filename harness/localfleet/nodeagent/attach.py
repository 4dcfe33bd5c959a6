"""The kubelet's attach: a stream session joined to a running container's stdin and output.

Output is what the container writes from the moment of attach on, read from its run's log file as it
grows (the runtime writes the container's stdout and stderr there, merged, so it all goes to one output
channel: stdout, or stderr when only stderr is wanted). The session ends when that run ends, with a
Success Status (the kubelet's ServeAttach), or when the client hangs up.
Input goes to the container's stdin when its spec asks for one (spec.stdin): a pipe the node agent
keeps open (runtime.StdinPipe). With spec.stdinOnce the pipe is closed, and the container reads EOF,
once the first attach that writes to it ends or closes its stdin. A container without spec.stdin
ignores input.
A container with spec.tty gets no terminal here (its stdin is a pipe, its output a file): a tty
session translates as a terminal's defaults would (input CR to LF, output LF to CRLF), but nothing
echoes what is typed, and programs that check for a terminal (shells' prompts) see none.
"""

import asyncio
import contextlib
import os

from harness.localfleet.nodeagent import containerexec, containerlogs, streams
from harness.localfleet.nodeagent.pods import Container, PodWorker
from harness.localfleet.nodeagent.runtime import StdinPipe

FOLLOW_POLL_S = containerlogs.FOLLOW_POLL_S
FINISH_TIMEOUT_S = containerexec.FINISH_TIMEOUT_S


def terminal_input(data: bytes) -> bytes:
    """What a terminal's line discipline passes on by default (ICRNL): Enter is a newline."""
    return data.replace(b"\r", b"\n")


def terminal_output(data: bytes) -> bytes:
    """What a terminal shows by default (ONLCR): each newline starts a new line at its left."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def run_session(
    channels: streams.Channels, worker: PodWorker, container: Container, wanted: dict[str, bool]
) -> None:
    """Attach `channels` to the container's current run until the run ends or the client hangs up."""
    process, run = container.process, container.restarts
    tty = bool(container.spec.tty)
    log = containerlogs.log_path(worker, container.spec.name, run)
    offset = log.stat().st_size if log.exists() else 0
    output = streams.STDOUT if wanted["stdout"] else streams.STDERR if wanted["stderr"] else None
    inbound = asyncio.ensure_future(_inbound(channels, container.stdin if wanted["stdin"] else None, tty))
    try:
        while True:
            live = process is not None and container.process is process and process.returncode is None
            data = containerlogs.read_at(log, offset)
            offset += len(data)
            if data and output is not None:
                with contextlib.suppress(OSError):
                    await channels.send(output, terminal_output(data) if tty else data)
            if not live:
                break
            await asyncio.wait([inbound], timeout=FOLLOW_POLL_S)
            if inbound.done():
                return
        with contextlib.suppress(OSError):
            await channels.finish(containerexec.exit_status(0, []))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbound, FINISH_TIMEOUT_S)
    finally:
        inbound.cancel()
        await asyncio.gather(inbound, return_exceptions=True)


async def _inbound(channels: streams.Channels, pipe: StdinPipe | None, tty: bool) -> None:
    """Copy the client's stdin to the container's until the client closes it or hangs up (resizes go
    nowhere: there is no terminal to size); return when the client has gone."""
    stdin = pipe.dup() if pipe is not None else None
    try:
        if stdin is not None:
            os.set_blocking(stdin, False)
        while (event := await channels.receive()) is not None:
            channel, data, ended = event
            if channel != streams.STDIN or stdin is None:
                continue
            try:
                await _write(stdin, terminal_input(data) if tty else data)
            except OSError:  # the container closed its stdin, or has gone
                ended = True
            if ended:
                _done_writing(stdin, pipe)
                stdin = None
    finally:
        if stdin is not None:
            _done_writing(stdin, pipe)


def _done_writing(stdin: int, pipe: StdinPipe) -> None:
    """Close this attach's copy of the pipe; the first attach of a stdinOnce container closes it all."""
    os.close(stdin)
    if pipe.once:
        pipe.close()


async def _write(fd: int, data: bytes) -> None:
    """Write all of data to a non-blocking pipe, waiting while it is full."""
    loop = asyncio.get_running_loop()
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


def _wake(ready: asyncio.Future) -> None:
    if not ready.done():
        ready.set_result(None)
