"""A container's terminal (spec.tty): a pseudo-terminal whose master the node keeps, as a runtime keeps a
container's console.

The container's process gets the other end as its stdin, stdout and stderr, and as the controlling
terminal of a session of its own (podexec --tty), so its line discipline echoes what is typed, turns
Enter into a newline and ^C into SIGINT, and shells see a terminal and prompt. One thread copies what the
terminal outputs to the run's log (a CRI runtime logs a tty container's output as its stdout: containerd
pipes no stderr for a terminal) and wakes the attaches that follow that log. Attaches write to the
master and set its window size from their resize channel (TIOCSWINSZ, as containerd's task.Resize).
"""

import contextlib
import fcntl
import json
import os
import select
import struct
import termios
import threading
from collections.abc import Callable
from pathlib import Path

READ_BYTES = 1 << 16


def window_sizes(data: bytes) -> list[tuple[int, int]]:
    """(rows, columns) of each size a resize channel carried: JSON lines {"Width": W, "Height": H}
    (remotecommand's TerminalSize); lines that are not one are skipped."""
    sizes = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            size = json.loads(line)
            rows, columns = int(size["Height"]), int(size["Width"])
            if 0 <= rows < 1 << 16 and 0 <= columns < 1 << 16:
                sizes.append((rows, columns))
    return sizes


def resize(fd: int, data: bytes) -> None:
    """Set the window size of the terminal `fd` to each size in a resize message (the kernel signals
    SIGWINCH to its foreground process group when the size changes)."""
    for rows, columns in window_sizes(data):
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class Terminal:
    """One run's pseudo-terminal: `child_end` goes to the container, the master stays with the node.

    `once` is False: an attach never closes a terminal, which would hang up its session (containerd
    closes a stdinOnce container's stdin only without a tty); ^D typed on it ends a shell's input."""

    once = False

    def __init__(self) -> None:
        self._master, self.child_end = os.openpty()
        self._open = True
        self._lock = threading.Lock()
        self._listeners: set[Callable[[], None]] = set()
        self._copier: threading.Thread | None = None
        self.ended = threading.Event()
        """Set once every process has closed the terminal and its output is all in the log."""

    def pump(self, log: Path) -> None:
        """Copy what the terminal outputs to `log` from now until every process has closed it."""
        self._copier = threading.Thread(target=self._copy, args=(log,), name="terminal", daemon=True)
        self._copier.start()

    def drain(self, timeout_s: float) -> None:
        """Wait, at most `timeout_s`, until the output is all in the log (the container has exited)."""
        if self._copier is not None:
            self._copier.join(timeout_s)

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener` (from the copying thread) after each piece of output reaches the log, and at
        the end."""
        self._listeners.add(listener)

    def unlisten(self, listener: Callable[[], None]) -> None:
        self._listeners.discard(listener)

    def dup(self) -> int | None:
        """A copy of the master for one attach to write to and size (closed by it); None once closed."""
        with self._lock:
            return os.dup(self._master) if self._open else None

    def close(self) -> None:
        """Close the node's master (its copies stay open until their attaches close them)."""
        with self._lock:
            if self._open:
                os.close(self._master)
                self._open = False

    def _copy(self, log: Path) -> None:
        try:
            readable = select.poll()
            readable.register(self._master, select.POLLIN)
            with log.open("ab", buffering=0) as out:
                while True:  # attaches make the master non-blocking: wait until it is readable
                    readable.poll()
                    try:
                        data = os.read(self._master, READ_BYTES)
                    except BlockingIOError:
                        continue
                    except OSError:  # EIO: no process has the terminal open any more
                        break
                    if not data:
                        break
                    out.write(data)
                    self._tell()
        finally:
            self.close()
            self.ended.set()
            self._tell()

    def _tell(self) -> None:
        for listener in list(self._listeners):
            listener()
