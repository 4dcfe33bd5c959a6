"""Game-day pauses: the operators' notes go on the timeline, Enter goes on, silence stops the drill."""

import pytest

from harness.gameday import NoOperator, Operators
from harness.timeline import Timeline

WHAT = "next: inject cluster-loss on east"


def operators(answer: str | None, asked: list[tuple[str, float]]) -> tuple[Operators, Timeline]:
    timeline = Timeline()

    def ask(prompt: str, timeout_s: float) -> str | None:
        asked.append((prompt, timeout_s))
        return answer

    return Operators(timeline, 300.0, ask), timeline


def test_a_note_goes_on_the_timeline() -> None:
    asked: list[tuple[str, float]] = []
    pause, timeline = operators("  DNS TTL is 300 s, not 30 \n", asked)
    pause.pause(WHAT)
    assert [e.name for e in timeline.events()] == ["operator.paused", "operator.note"]
    assert timeline.events("operator.note")[0].detail == {"at": WHAT, "note": "DNS TTL is 300 s, not 30"}
    assert WHAT in asked[0][0] and asked[0][1] == 300.0


def test_enter_alone_goes_on() -> None:
    pause, timeline = operators("\n", [])
    pause.pause(WHAT)
    assert [e.name for e in timeline.events()] == ["operator.paused"]


def test_silence_stops_the_drill() -> None:
    pause, timeline = operators(None, [])
    with pytest.raises(NoOperator, match=f"no operator answered within 300 s at: {WHAT}"):
        pause.pause(WHAT)
    assert [e.name for e in timeline.events()] == ["operator.paused", "operator.silent"]
