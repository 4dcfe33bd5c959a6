"""The split-brain check: from each cluster's acknowledged writes, never two writers at once."""

from harness import measure
from harness.samples import SentinelWrite


def series(start_seq: int, acks: list[float | None]) -> list[SentinelWrite]:
    return [SentinelWrite(start_seq + i, ack) for i, ack in enumerate(acks)]


def test_a_clean_handover_passes() -> None:
    old = series(0, [9.0, 9.5, 10.0, None, None, None])  # fenced after the fault at 10.2
    new = series(100, [None, 11.0, 11.5, 12.0])
    verdict = measure.judge_split_brain({"east": old, "west": new}, t0=10.2)
    assert verdict.status == "pass"
    assert verdict.message == (
        "never two writers: accepted writes east -1.2 s to -0.200 s; west +0.800 s to +1.8 s, never at once"
    )


def test_a_primary_that_keeps_accepting_after_the_promotion_is_caught() -> None:
    old = series(0, [9.0, 9.5, 10.0, 10.5, 11.0, 11.5, None])  # not fenced: it kept taking writes
    new = series(100, [11.2, 11.7, 12.2])
    verdict = measure.judge_split_brain({"east": old, "west": new}, t0=10.2)
    assert verdict.status == "fail"
    assert verdict.measured == "0.300 s of two writers"
    assert verdict.message == (
        "split brain: 1 stretch(es) of two writers (0.300 s): east and west from +1.0 s to +1.3 s"
    )
    assert (verdict.moments["two_writers_start"], verdict.moments["two_writers_end"]) == (11.2, 11.5)


def test_an_old_primary_that_rejoins_and_accepts_one_write_is_caught() -> None:
    old = series(0, [9.0, 10.0, None, None, None, 12.5, None])  # one write accepted after it came back
    new = series(100, [11.0, 12.0, 13.0])
    overlaps = measure.two_writers({"east": old, "west": new})
    assert overlaps == [("east", "west", 12.5, 12.5)]
    assert measure.judge_split_brain({"east": old, "west": new}, t0=10.2).status == "fail"


def test_without_a_handover_the_check_is_not_judged() -> None:
    verdict = measure.judge_split_brain({"east": series(0, [9.0]), "west": series(9, [None])}, t0=10.0)
    assert verdict.status == "error"
    assert verdict.message == "split brain not judged: only east accepted writes: no handover to check"
