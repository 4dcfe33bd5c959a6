"""Plain words for the figures of a drill record: a name with its unit, a formatted value, a meaning.

Shared by the HTML report, the evidence pack and the terminal summary so they all say the same thing.
"""

import re
from collections.abc import Callable
from typing import Any

REASON_CHARS = 160  # the terminal summary's; the HTML report shows more
_WHERE = re.compile(r"^\S+\.py:\d+: \w+$")  # pytest's `drills/x.py:20: AssertionError` line
VERDICT_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#9a6700", "skip": "#59636e"}
VERDICT_WORDS = {
    "pass": "PASS: objective met",
    "fail": "FAIL: objective missed",
    "error": "ERROR: could not be judged",
    "skip": "SKIPPED: the drill did not run",
}


def seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.2f} s"


def percent(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.3f} %"


def count(value: Any) -> str:
    return "-" if value is None else f"{value:d}" if isinstance(value, int) else str(value)


def milliseconds(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


# figure key -> (name with unit, formatter, what it means)
FIGURES: dict[str, tuple[str, Callable[[Any], str], str]] = {
    "rto_s": (
        "RTO, measured",
        seconds,
        "time from the fault until users were served again, stably (recovery time)",
    ),
    "rpo_s": (
        "RPO, measured",
        seconds,
        "how far back in time the data written before the fault was lost (0 s: nothing lost)",
    ),
    "lost_writes": ("lost writes", count, "acknowledged writes from before the fault the survivor lacks"),
    "availability": ("availability", percent, "share of probe requests answered well during the drill"),
    "longest_outage_s": ("longest outage", seconds, "the longest unbroken stretch of failed requests"),
    "probes": ("probe requests", count, "requests sent to the global endpoint during the drill"),
    "writes": ("sentinel writes", count, "numbered data writes made to measure data loss"),
    "rto_outcome": ("recovery outcome", str, "recovered, no_failure, not_recovered or no_data"),
}

GLOSSARY = (
    (
        "RTO (recovery time objective)",
        "the longest the service may be down after a fault; measured from the "
        "moment the fault took effect to the first of a run of good answers that lasted.",
    ),
    (
        "RPO (recovery point objective)",
        "the most data the service may lose, as time: measured with numbered "
        "writes made before the fault and read back from the cluster that took over.",
    ),
    ("availability", "successful probe requests divided by all probe requests during the drill."),
    (
        "probe",
        "one HTTP request to the app, through the global endpoint or straight to one cluster; it fails "
        "on a connection error, a timeout, a 5xx answer, or an answer slower than the latency bound.",
    ),
    (
        "phase",
        "a step of the drill's recovery (promote, traffic switch, first good request, soak, ...); "
        "the shaded bands on each timeline plot show when each ran.",
    ),
)


def figure_rows(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(name, value, meaning) for an app's figures: known ones first in a fixed order, then the rest."""
    rows = [(FIGURES[k][0], FIGURES[k][1](figures[k]), FIGURES[k][2]) for k in FIGURES if k in figures]
    latency = figures.get("latency_s")
    if isinstance(latency, dict):
        text = ", ".join(f"p{float(p):g} {milliseconds(v)}" for p, v in latency.items())
        rows.append(("latency percentiles", text, "answered requests: p99 = 99 % were at least this fast"))
    skip = {*FIGURES, "latency_s", "rto_phases"}
    rows += [(key, str(value), "") for key, value in figures.items() if key not in skip]
    return rows


def phase_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """(phase, seconds) of the RTO broken into the drill's phases, plus the time no phase covers."""
    phases = figures.get("rto_phases")
    if not isinstance(phases, dict):
        return []
    rows = [(name, seconds(value)) for name, value in phases.get("phases", {}).items()]
    if phases.get("unattributed"):
        rows.append(("(in no phase)", seconds(phases["unattributed"])))
    return rows


def reason_line(text: str, limit: int = REASON_CHARS) -> str:
    """One line of a verdict's reason: for a pytest failure, the assertion's message (its last line that
    says something), cut to `limit` characters."""
    lines = [line.strip().removeprefix("E ").strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("+", "assert ")) and not _WHERE.match(line)]
    line = (useful or lines or [""])[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"
