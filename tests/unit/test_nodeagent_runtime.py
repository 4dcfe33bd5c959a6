"""The node's container runtime stops containers as the kubelet does: a container that outlives its
SIGKILL's first wait is killed again and awaited, never given up while it still runs."""

import signal
import subprocess
import time

import pytest

from harness.localfleet.nodeagent import runtime


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class SlowToEnd(subprocess.Popen):
    """A real process that ignores SIGTERM and whose first `slow` waits time out, as a killed one held to a
    small CPU quota does while it frees its memory at that quota's pace."""

    def __init__(self, args: list[str], slow: int) -> None:
        super().__init__(args, start_new_session=True, preexec_fn=_ignore_sigterm)
        self.slow, self.waits = slow, 0

    def wait(self, timeout: float | None = None) -> int:
        self.waits += 1
        if self.waits <= self.slow:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return super().wait(timeout)


def test_a_container_slow_to_end_after_sigkill_is_killed_again_and_awaited(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "KILL_AGAIN_S", 0.1)
    process = SlowToEnd(["sleep", "60"], slow=2)
    try:
        codes = runtime.stop_all([(process, signal.SIGTERM)], time.monotonic())
    finally:
        process.kill()
    assert codes == [-signal.SIGKILL]
    assert process.waits == 3
    assert f"container process {process.pid} runs on 0.1 s after SIGKILL" in capsys.readouterr().out
