"""The kubelet's attach: a stream session joined to a running container's stdin and output.

Output is what the container writes from the moment of attach on, read from its run's log file as it
grows. Without a tty the runtime writes the container's stdout and stderr there, merged, so it all goes
to one output channel: stdout, or stderr when only stderr is wanted. With a tty (the container's spec
decides, as the kubelet's GetAttach does) the log is what its terminal outputs, a terminal's line ends
included, and it goes to stdout; the terminal's copier wakes the session at each piece of output.
The session ends when that run's output ends (the process exits; with a tty, once every process has
closed the terminal), with a Success Status (the kubelet's ServeAttach), or when the client hangs up.
Input goes to the container when its spec asks for stdin (spec.stdin): to its terminal's master, or to a
pipe the node agent keeps open (runtime.StdinPipe). With spec.stdinOnce and no tty the pipe is closed,
and the container reads EOF, once the first attach that writes to it ends or closes its stdin; a
terminal stays open (containerd's rule: closing it would hang up the session). The resize channel sets
the terminal's window size. A container without spec.stdin ignores input.
"""

import asyncio
import contextlib
import os

from harness.localfleet.nodeagent import containerexec, containerlogs, streams, terminal
from harness.localfleet.nodeagent.pods import Container, PodWorker
from harness.localfleet.nodeagent.runtime import StdinPipe
from harness.localfleet.nodeagent.terminal import Terminal

FOLLOW_POLL_S = containerlogs.FOLLOW_POLL_S
FINISH_TIMEOUT_S = containerexec.FINISH_TIMEOUT_S


async def run_session(
    channels: streams.Channels, worker: PodWorker, container: Container, wanted: dict[str, bool]
) -> None:
    """Attach `channels` to the container's current run until its output ends or the client hangs up."""
    process, run, tty = container.process, container.restarts, container.terminal
    log = containerlogs.log_path(worker, container.spec.name, run)
    offset = log.stat().st_size if log.exists() else 0
    output = streams.STDOUT if wanted["stdout"] else None
    if tty is None and output is None and wanted["stderr"]:
        output = streams.STDERR
    stdin = (tty if tty is not None else container.stdin) if container.spec.stdin else None
    inbound = asyncio.ensure_future(_inbound(channels, stdin if wanted["stdin"] else None, tty))
    loop, woken = asyncio.get_running_loop(), asyncio.Event()
    inbound.add_done_callback(lambda _: woken.set())

    def wake() -> None:  # called from the terminal's copier thread
        with contextlib.suppress(RuntimeError):  # the session's loop has closed
            loop.call_soon_threadsafe(woken.set)

    if tty is not None:
        tty.listen(wake)
    try:
        while True:
            woken.clear()
            if tty is not None:
                live = not tty.ended.is_set()
            else:
                live = process is not None and container.process is process and process.returncode is None
            data = containerlogs.read_at(log, offset)
            offset += len(data)
            if data and output is not None:
                with contextlib.suppress(OSError):
                    await channels.send(output, data)
            if not live:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), FOLLOW_POLL_S)
            if inbound.done():
                return
        with contextlib.suppress(OSError):
            await channels.finish(containerexec.exit_status(0, []))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbound, FINISH_TIMEOUT_S)
    finally:
        if tty is not None:
            tty.unlisten(wake)
        inbound.cancel()
        await asyncio.gather(inbound, return_exceptions=True)


async def _inbound(
    channels: streams.Channels, stdin: StdinPipe | Terminal | None, tty: Terminal | None
) -> None:
    """Copy the client's stdin to the container's, and its terminal sizes to the container's terminal,
    until the client closes its stdin or hangs up; return when the client has gone."""
    writing = stdin.dup() if stdin is not None else None
    sizing = tty.dup() if tty is not None else None
    try:
        if writing is not None:
            os.set_blocking(writing, False)
        while (event := await channels.receive()) is not None:
            channel, data, ended = event
            if channel == streams.RESIZE and sizing is not None:
                terminal.resize(sizing, data)
            if channel != streams.STDIN or writing is None:
                continue
            try:
                await _write(writing, data)
            except OSError:  # the container closed its stdin, or has gone
                ended = True
            if ended:
                _done_writing(writing, stdin)
                writing = None
    finally:
        if writing is not None:
            _done_writing(writing, stdin)
        if sizing is not None:
            os.close(sizing)


def _done_writing(fd: int, stdin: StdinPipe | Terminal) -> None:
    """Close this attach's copy of stdin; the first attach of a stdinOnce container closes its pipe."""
    os.close(fd)
    if stdin.once:
        stdin.close()


async def _write(fd: int, data: bytes) -> None:
    """Write all of data to a non-blocking pipe or terminal, waiting while it is full."""
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
