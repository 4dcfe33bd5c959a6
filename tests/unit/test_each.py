"""The local fleet's waits on several checks at once: every check polled until it holds, each asked no more
once it held, and what still failed at the deadline named."""

from collections import Counter

from harness.localfleet import each


def test_every_check_is_polled_until_it_holds_and_not_asked_again_after() -> None:
    asked: Counter[str] = Counter()

    def holds_on(what: str, answer: int) -> bool:
        asked[what] += 1
        return asked[what] >= answer

    checks = {"first": lambda: holds_on("first", 1), "third": lambda: holds_on("third", 3)}
    assert each.unmet_after(checks, 10, interval_s=0.001) == []
    assert asked == {"first": 1, "third": 3}


def test_what_never_holds_is_named_at_the_deadline() -> None:
    checks = {"ready": lambda: True, "never": lambda: False}
    assert each.unmet_after(checks, 0.05, interval_s=0.001) == ["never"]
