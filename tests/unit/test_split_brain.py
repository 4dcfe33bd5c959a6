"""The split-brain check: from each cluster's writes, never two clusters whose acknowledged writes
interleave in time; a cluster that did not answer is unknown, never fenced."""

from harness import measure
from harness.samples import Interleaving, SentinelWrite, WriteOutcome

A, R, U = "acked", "refused", "unknown"


def series(start_seq: int, writes: list[tuple[WriteOutcome, float]]) -> list[SentinelWrite]:
    """Writes in seq order from (outcome, when the attempt ended)."""
    return [
        SentinelWrite(start_seq + i, t if outcome == A else None, outcome, t)
        for i, (outcome, t) in enumerate(writes)
    ]


def test_a_clean_handover_to_a_fenced_primary_passes() -> None:
    old = series(0, [(A, 9.0), (A, 9.5), (A, 10.0), (U, 10.4), (R, 10.9), (R, 11.4), (R, 11.9)])
    new = series(100, [(U, 10.5), (A, 11.0), (A, 11.5), (U, 11.7), (A, 12.0)])  # its own blips do not count
    verdict = measure.judge_split_brain({"west": new, "east": old}, t0=10.2)
    assert (verdict.status, verdict.measured) == ("pass", "0 interleaved acks")
    assert verdict.message == (
        "never two writers: acknowledged writes east -1.2 s to -0.200 s, then west +0.800 s to +1.8 s, "
        "never interleaved"
    )


def test_two_writers_taking_turns_are_caught() -> None:
    slots = [10.0 + k / 10 for k in range(50)]  # for 5 s each takes every other write and refuses the rest
    east = series(0, [(A if k % 2 == 0 else R, t) for k, t in enumerate(slots)])
    west = series(100, [(R if k % 2 == 0 else A, t) for k, t in enumerate(slots)])
    verdict = measure.judge_split_brain({"east": east, "west": west}, t0=10.0)
    assert (verdict.status, verdict.measured) == ("fail", "48 interleaved acks")
    assert (verdict.moments["two_writers_start"], verdict.moments["two_writers_end"]) == (slots[1], slots[48])
    assert verdict.message.startswith(
        "split brain: two clusters' acknowledged writes interleave, 48 acks in all: east and west from "
        "+0.100 s to +4.8 s (east acked at +0.200 s, +0.400 s, +0.600 s, +0.800 s, +1.0 s, ... (24 in all); "
        "west acked at +0.100 s, +0.300 s,"
    )


def test_a_primary_that_keeps_accepting_after_the_promotion_is_caught() -> None:
    old = series(0, [(A, 9.0), (A, 9.5), (A, 10.0), (A, 10.5), (A, 11.0), (A, 11.5), (R, 12.0)])
    new = series(100, [(A, 11.2), (A, 11.7), (A, 12.2)])
    verdict = measure.judge_split_brain({"east": old, "west": new}, t0=10.2)
    assert (verdict.status, verdict.measured) == ("fail", "2 interleaved acks")
    assert verdict.message == (
        "split brain: two clusters' acknowledged writes interleave, 2 acks in all: east and west from "
        "+1.0 s to +1.3 s (east acked at +1.3 s; west acked at +1.0 s)"
    )
    assert (verdict.moments["two_writers_start"], verdict.moments["two_writers_end"]) == (11.2, 11.5)


def test_an_old_primary_that_rejoins_and_accepts_one_write_is_caught_even_unanswered() -> None:
    old = series(0, [(A, 9.0), (A, 10.0), (U, 11.0), (U, 12.0), (A, 12.5), (U, 13.0)])
    new = series(100, [(A, 11.0), (A, 12.0), (A, 13.0)])
    interleaved = ((11.0, "west"), (12.0, "west"), (12.5, "east"))
    assert measure.two_writers({"east": old, "west": new}) == [
        Interleaving("east", "west", 11.0, 12.5, interleaved)
    ]
    verdict = measure.judge_split_brain({"east": old, "west": new}, t0=10.2)
    assert verdict.status == "fail"  # a proven second writer beats the writes nobody answered


def test_an_unreachable_old_primary_is_not_judged_fenced() -> None:
    old = series(0, [(A, 9.0), (A, 9.5), (A, 10.0), (U, 10.6), (U, 12.0), (U, 13.0), (U, 14.0)])
    new = series(100, [(U, 10.5), (A, 11.0), (A, 11.5), (A, 12.0)])
    verdict = measure.judge_split_brain({"east": old, "west": new}, t0=10.2)
    assert (verdict.status, verdict.measured) == ("error", "unknown")
    assert verdict.message == (
        "split brain not judged: east did not answer 3 writes after +0.800 s, when west acknowledged its "
        "first write; whether it accepted them is unknown. A primary that cannot be reached is not fenced: "
        "write to east over a path the fault does not cut, so that it answers (a refusal shows it fenced)"
    )
    assert verdict.moments["unanswered_since"] == 11.0


def test_only_writes_unanswered_once_the_new_writer_took_over_leave_it_unknown() -> None:
    old = series(0, [(A, 9.0), (A, 10.0), (U, 10.6), (U, 10.99), (R, 11.5), (R, 12.5)])
    new = series(100, [(A, 11.0), (A, 12.0)])
    assert measure.judge_split_brain({"east": old, "west": new}, t0=10.2).status == "pass"
    unrecorded = [*old[:2], SentinelWrite(2, None, U)]  # a record from before ended_at was kept
    verdict = measure.judge_split_brain({"east": unrecorded, "west": new}, t0=10.2)
    assert verdict.status == "error"


def test_without_a_handover_the_check_is_not_judged() -> None:
    verdict = measure.judge_split_brain(
        {"east": series(0, [(A, 9.0)]), "west": series(9, [(U, 9.5)])}, t0=10.0
    )
    assert verdict.status == "error"
    assert verdict.message == "split brain not judged: only east accepted writes: no handover to check"
