"""Game days: a drill pauses before each fault and before its verdicts, so the operators can watch and
act; they go on with Enter, or type a note first. Each pause, note and silence goes on the timeline."""

import select
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError
from harness.timeline import Timeline

PROMPT = "\n[game day] {what}. Enter to go on, or type a note and Enter: "


class NoOperator(FleetDrillError):
    """Nobody answered a game-day pause in time: the drill stops and its faults are reverted."""


def ask_terminal(prompt: str, timeout_s: float) -> str | None:
    """Ask on the controlling terminal; the answer, or None when nobody answered within timeout_s."""
    try:
        tty = Path("/dev/tty").open("r+")  # noqa: SIM115 (closed below, whatever happens)
    except OSError:
        raise FleetDrillError("the gameday suite pauses for operators: it needs a terminal") from None
    with tty:
        tty.write(prompt)
        tty.flush()
        ready, _, _ = select.select([tty], [], [], timeout_s)
        return tty.readline() if ready else None


@dataclass(frozen=True)
class Operators:
    """Who a game-day drill pauses for."""

    timeline: Timeline
    timeout_s: float
    ask: Callable[[str, float], str | None] = ask_terminal

    def pause(self, what: str) -> None:
        """Wait for the operators (at most timeout_s, then NoOperator); their note goes on the timeline."""
        self.timeline.record("operator.paused", detail={"at": what})
        answer = self.ask(PROMPT.format(what=what), self.timeout_s)
        if answer is None:
            self.timeline.record("operator.silent", detail={"at": what})
            raise NoOperator(f"no operator answered within {self.timeout_s:g} s at: {what}")
        if answer.strip():
            self.timeline.record("operator.note", detail={"at": what, "note": answer.strip()})
