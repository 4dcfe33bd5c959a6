"""Commands run in a container for the kubelet's exec, wired to the channels of a stream session.

`nsenter --target PID --net --mount --wd` joins the container's network and mount namespaces and
its working directory; the command gets the container's environment (from /proc/PID/environ) and a
session of its own (with a terminal when asked). If the client hangs up first, that session is
killed. The exit goes to the error channel as the v4 protocol's metav1.Status.
"""

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

from harness.localfleet.nodeagent import streams
from harness.localfleet.nodeagent.terminal import resize

FINISH_TIMEOUT_S = 60.0  # how long a finished session waits for its client to hang up


def exit_status(code: int, command: list[str]) -> bytes:
    """The v4 error channel's metav1.Status (k8s.io/cri-streaming remotecommand/exec.go)."""
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    message = f"error executing command [{' '.join(command)}], exit code {code}"
    status = {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {message}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
    return json.dumps(status).encode()


def container_env(pid: int) -> dict[str, str]:
    """The environment the container's process started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


async def run_session(
    channels: streams.Channels, pid: int, command: list[str], wanted: dict[str, bool], env: dict[str, str]
) -> None:
    """Run `command` in the container of `pid` with the channels `wanted` (stdin, stdout, stderr,
    tty) wired to it, then report its exit and wait for the client to hang up."""
    argv = ["nsenter", f"--target={pid}", "--net", "--mount", "--wd", "--", *command]
    pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    terminal = None
    if wanted["tty"]:
        terminal, side = os.openpty()
        process = await asyncio.create_subprocess_exec(
            "setsid", "--ctty", *argv, stdin=side, stdout=side, stderr=side, env=env
        )
        os.close(side)
        reader = asyncio.StreamReader()
        output = os.fdopen(os.dup(terminal), "rb", 0)  # the transport closes its own copy
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), output
        )
        outputs = [(reader, streams.STDOUT)]
    else:
        process = await asyncio.create_subprocess_exec(
            *argv,
            **{name: pipe if wanted[name] else null for name in ("stdin", "stdout", "stderr")},
            env=env,
            start_new_session=True,
        )
        outputs = [
            (s, c) for s, c in ((process.stdout, streams.STDOUT), (process.stderr, streams.STDERR)) if s
        ]
    inbound = asyncio.create_task(_inbound(channels, process, terminal))
    try:
        await asyncio.gather(*(_pump(source, channels, channel) for source, channel in outputs))
        code = await process.wait()
        with contextlib.suppress(OSError):
            await channels.finish(exit_status(128 - code if code < 0 else code, command))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbound, FINISH_TIMEOUT_S)
    finally:
        inbound.cancel()
        if terminal is not None:
            os.close(terminal)


async def _pump(source: asyncio.StreamReader, channels: streams.Channels, channel: int) -> None:
    """Copy one of the command's outputs to its channel until the command closes it."""
    while True:
        try:
            data = await source.read(1 << 16)
        except OSError:  # a terminal reads EIO once the command has gone
            return
        if not data:
            return
        with contextlib.suppress(OSError):
            await channels.send(channel, data)


async def _inbound(
    channels: streams.Channels, process: asyncio.subprocess.Process, terminal: int | None
) -> None:
    """Copy stdin and terminal sizes to the command until the client hangs up; then kill what is left."""
    while (event := await channels.receive()) is not None:
        channel, data, ended = event
        if channel == streams.RESIZE and terminal is not None:
            resize(terminal, data)
        elif channel == streams.STDIN and terminal is not None:
            with contextlib.suppress(OSError):
                os.write(terminal, data)
        elif channel == streams.STDIN and process.stdin is not None and not process.stdin.is_closing():
            try:
                process.stdin.write(data)
                await process.stdin.drain()
            except OSError:  # the command closed its stdin: the rest goes nowhere
                ended = True
            if ended:
                process.stdin.close()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
