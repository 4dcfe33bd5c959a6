"""Durations and fractions as people write them in fleet files and markers: "1m30s", "250ms", "99.9%"."""

import re
from decimal import Decimal
from fractions import Fraction

DURATION_PATTERN = r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|h|m|s))+$"
PERCENT_PATTERN = r"^(?:\d+(?:\.\d*)?|\.\d+)%$"
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


def _exact(value: object) -> Fraction:
    """`value` as an exact number if it is a real number (not a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    return Fraction(value)


def parse_duration(value: object) -> float:
    """Seconds in a number of seconds or a string like "250ms", "30s", "5m", "1h", "1.5s", "1m30s".

    Raises ValueError for anything else, for negatives and for values too large for a float.
    """
    try:
        if isinstance(value, str) and re.fullmatch(DURATION_PATTERN, value.strip()):
            seconds = sum((Fraction(n) * _UNIT[unit] for n, unit in _PART.findall(value)), Fraction(0))
        else:
            seconds = _exact(value)
        if seconds < 0:
            raise ValueError
        return float(seconds)
    except (ValueError, OverflowError):
        raise ValueError(f"not a duration: {value!r}") from None


def format_duration(seconds: float) -> str:
    """`seconds` as people write it ("250ms", "1m30s", "1.5s"); parse_duration reads it back exactly."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{n}{unit}" for n, unit in zip((hours, minutes, secs), "hms", strict=True) if n)
    candidates = [clock or "0s", f"{seconds!r}s", f"{Decimal(seconds):f}s"]  # the last is exact, if long
    if seconds < 1:
        candidates.insert(1, f"{round(seconds * 1000)}ms")
    return next(text for text in candidates if _reads_back(text, seconds))


def _reads_back(text: str, seconds: float) -> bool:
    try:
        return parse_duration(text) == seconds
    except ValueError:
        return False


def parse_fraction(value: object) -> float:
    """A fraction in (0, 1] from a number such as 0.999 or a percentage string such as "99.9%"."""
    try:
        if isinstance(value, str) and re.fullmatch(PERCENT_PATTERN, value.strip()):
            share = Fraction(value.strip()[:-1]) / 100
        else:
            share = _exact(value)
        if not 0 < share <= 1:
            raise ValueError
        return float(share)
    except (ValueError, OverflowError):
        raise ValueError(f"not a fraction in (0, 1]: {value!r}") from None
