"""The kubelet's crash-loop back-off (client-go flowcontrol.Backoff as the kubelet uses it).

The first restart after a crash is immediate; a container that crashes again waits 10 s, then 20 s,
40 s ... up to 300 s, counted from when it finished. The back-off starts over when the container
last restarted more than twice the maximum (10 minutes) before it finished.
"""

from dataclasses import dataclass

INITIAL_S, MAX_S = 10.0, 300.0


@dataclass
class Backoff:
    """The back-off of one container; times are monotonic seconds."""

    delay_s: float = 0.0
    last_restart: float | None = None

    def restart_at(self, finished: float) -> float:
        """When the container that finished at `finished` may start again."""
        if self.last_restart is None or finished - self.last_restart > 2 * MAX_S:
            self.delay_s = 0.0
            return finished
        return finished + (self.delay_s or INITIAL_S)

    def restarted(self, now: float) -> None:
        """Record a restart: the next crash waits twice as long (10 s after the first restart)."""
        self.delay_s = INITIAL_S if not self.delay_s else min(self.delay_s * 2, MAX_S)
        self.last_restart = now
