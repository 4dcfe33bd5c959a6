"""A container's terminal: resize messages, the log's line ends, and a real pseudo-terminal whose output
the copier puts in the log (echo, Enter, line ends and window size done by its line discipline)."""

import os
import subprocess
import threading
from pathlib import Path

from harness.localfleet.nodeagent import containerlogs, terminal
from harness.localfleet.nodeagent.terminal import Terminal

DEADLINE_S = 30.0  # generous for a loaded 2-core runner


def test_window_sizes_reads_each_json_line_and_skips_the_rest() -> None:
    data = (
        b'{"Width":101,"Height":37}\n{"Width":80}\nnot json\n{"Width":-1,"Height":5}\n{"Width":9,"Height":4}'
    )
    assert terminal.window_sizes(data) == [(37, 101), (4, 9)]


def test_a_terminal_line_end_is_logged_as_a_newline() -> None:
    assert containerlogs.logged(b"hi\r\n") == b"hi\n"
    assert containerlogs.logged(b"hi\n") == b"hi\n"
    assert containerlogs.logged(b"a\rb\n") == b"a\rb\n"  # a carriage return inside a line stays
    assert containerlogs.logged(b"partial\r") == b"partial\r"


def test_the_terminal_echoes_sizes_and_logs_until_every_process_closes_it(tmp_path: Path) -> None:
    tty, log = Terminal(), tmp_path / "0.log"
    sizing = tty.dup()
    os.set_blocking(sizing, False)  # as an attach does: the copier's reads do not block either
    terminal.resize(sizing, b'{"Width":101,"Height":37}\n')
    script = "stty size; read line; echo got $line"
    process = subprocess.Popen(
        ["sh", "-c", script], stdin=tty.child_end, stdout=tty.child_end, stderr=tty.child_end
    )
    os.close(tty.child_end)
    woken = threading.Event()
    tty.listen(woken.set)
    tty.pump(log)
    try:
        assert woken.wait(DEADLINE_S), "the size was not logged"
        os.write(sizing, b"hi\r")  # Enter, as a terminal sends it
        assert process.wait(timeout=DEADLINE_S) == 0
        tty.drain(DEADLINE_S)
        assert tty.ended.is_set()
        assert log.read_bytes() == b"37 101\r\nhi\r\ngot hi\r\n"  # echoed, Enter read as a newline
        assert tty.dup() is None  # the copier closed the node's master
    finally:
        os.close(sizing)
