"""Plain words for a drill record: each figure's name with its unit, formatted value and meaning; the drill's
name in words; what went wrong in one sentence.

Shared by the HTML report, the evidence pack and the terminal summary so they all say the same thing.
"""

import re
from collections.abc import Callable, Sequence
from typing import Any

from harness.report.drill_record import DrillRecord
from harness.samples import ReplicaLag

REASON_CHARS = 160  # the terminal summary's; the HTML report shows more
ERROR_CHARS = 300  # the error quoted in a failed drill's first sentence
_WHERE = re.compile(r"^\S+\.py:\d+: \w+$")  # pytest's `drills/x.py:20: AssertionError` line
_LOCATION = re.compile(r"^(\S+\.py:\d+):")  # where a traceback's frame is
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
    for found in figures.get("promql") or []:
        rows.append(promql_row(found))
    if figures.get("replication_at_t0"):
        lags = "; ".join(ReplicaLag(**lag).describe() for lag in figures["replication_at_t0"])
        meaning = "each replica's lag just before the fault: writes acknowledged since were not on it yet"
        rows.append(("replication lag at t0", lags, meaning))
    skip = {
        *FIGURES,
        "latency_s",
        "rto_phases",
        "lost_ids",
        "promql",
        "replication_at_t0",
    }  # every lost id stays in record.json only
    rows += [(key, str(value), "") for key, value in figures.items() if key not in skip]
    return rows


def promql_row(found: dict[str, Any]) -> tuple[str, str, str]:
    """(name, value, meaning) of what one PromQL objective measured in one place."""
    where = f" on {found['cluster']}" if found.get("cluster") else ""
    name = f"PromQL {found.get('objective')}{where}"
    value = "-" if found.get("worst") is None else f"{found['worst']:g} at worst"
    if found.get("burn_rate") is not None:
        spent = percent(found.get("budget_spent"))
        value += f"; error budget burned {found['burn_rate']:.3g}x, {spent} of the period's"
    meaning = (
        f"{found.get('query')} over the {found.get('window')} window, on Prometheus {found.get('prometheus')}"
    )
    return name, value, meaning


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


def readable(name: str) -> str:
    """A drill's pytest name in words: `test_lose_the_primary[us-east]` -> `Lose the primary (us-east)`."""
    base, _, parameter = name.partition("[")
    words = base.removeprefix("test_").replace("_", " ").strip() or base
    text = words[:1].upper() + words[1:]
    return f"{text} ({parameter.removesuffix(']')})" if parameter else text


def _listed(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _error(message: str) -> tuple[str, str]:
    """(the error's first line, where in the code it was raised or ""), from pytest's report of it."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    raised = next((line.removeprefix("E").strip() for line in lines if line.startswith("E ")), "")
    places = [found.group(1) for line in lines if (found := _LOCATION.match(line))]
    return reason_line(raised or message, ERROR_CHARS), (places[0] if places else "")


def headline(record: DrillRecord, place: str) -> str:
    """One plain sentence of what went wrong in a drill and where (`place`: "after the cluster-loss on
    us-east", or ""): the objectives it missed, else those it could not judge and why, else the error that
    broke it; "" when nothing went wrong."""
    sentence = _what_went_wrong(record, f" {place}" if place else "")
    if sentence and record.loaded_runner:
        sentence += f" It was {record.loaded_runner}: the runner may have missed it, not the fleet."
    return sentence


def _what_went_wrong(record: DrillRecord, where: str) -> str:
    missed = [v for v in record.verdicts if v.status == "fail"]
    if len(missed) == 1:
        (v,) = missed
        why = reason_line(v.message, ERROR_CHARS).partition(": ")[2].split(";")[0]
        figures = f"measured {v.measured}, expected {v.expected}"
        return f"{v.objective} missed{where}: {figures}{f'; {why}' if why else ''}."
    if missed:
        parts = [f"{v.objective} (measured {v.measured}, expected {v.expected})" for v in missed]
        return f"Missed{where}: {_listed(parts)}."
    unjudged = [v for v in record.verdicts if v.status == "error"]
    if unjudged:
        names = [v.objective for v in unjudged]
        why = reason_line(unjudged[0].message, ERROR_CHARS)
        why = why.removeprefix(f"{names[0]} not judged: ")
        return f"{_listed(names)} could not be judged{where}: {why.rstrip('.')}."
    if record.outcome not in ("failed", "error"):
        return ""
    error, at = _error(record.message or "the drill did not say why")
    verb = "broke" if record.outcome == "error" else "failed"
    return f"The drill {verb}{where}{f' at {at}' if at else ''}: {error.rstrip('.')}."
