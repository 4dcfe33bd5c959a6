"""A drill's record in allure-pytest's results (active with --alluredir; `fleetdrill run` sets it).

Added to the drill's test result once its record is written: labels (suite, cluster, region, objective),
a step per fault and per timeline phase at the times they really ran, a step per objective judged, and
attachments: the timeline plot, the timeline, the figures and the raw probe and sentinel series.
"""

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from allure_commons.model2 import Label, StatusDetails, TestStepResult
from allure_commons.types import AttachmentType

from harness.report import plots
from harness.report.runs import DrillResult, read_drill
from harness.timeline import phase_spans

SUITES = ("gate", "quarterly", "gameday")
STATUS = {"pass": "passed", "fail": "failed", "error": "broken", "skip": "skipped"}


def _ms(t_wall: float) -> int:
    return int(t_wall * 1000)


def _labels(item: pytest.Item, drill: DrillResult) -> list[Label]:
    regions = {c.name: c.region for c in drill.record.clusters}
    labels = [Label("suite", suite) for suite in SUITES if item.get_closest_marker(suite)]
    clusters = [name for name in drill.cluster.split(", ") if name in regions]
    labels += [Label("cluster", name) for name in clusters]
    labels += [Label("region", regions[name]) for name in clusters if regions[name]]
    labels += [Label("objective", f"{v.objective}: {v.expected}") for v in drill.record.verdicts]
    return labels


def _steps(drill: DrillResult) -> list[TestStepResult]:
    """Faults and phases in time order (with real start and stop), then the objectives judged."""
    events = drill.events
    last = max((e.t_mono for e in events), default=0.0)
    timed: list[tuple[float, TestStepResult]] = []
    for text, start, stop in drill.fault_spans():  # a fault never reverted is broken
        end, status = (stop, "passed") if stop is not None else (last, "broken")
        step = TestStepResult(
            name=text, status=status, start=_ms(drill.wall(start)), stop=_ms(drill.wall(end))
        )
        timed.append((start, step))
    ends = {
        (e.name.removesuffix(".end"), e.cluster, e.t_mono): e.detail
        for e in events
        if e.name.endswith(".end")
    }
    for span in phase_spans(events):
        detail = ends.get((span.name, span.cluster, span.end), {})
        failed = span.end is None or detail.get("outcome") == "error"
        step = TestStepResult(
            name=f"phase: {span.key}",
            status="broken" if failed else "passed",
            start=_ms(drill.wall(span.start)),
            stop=_ms(drill.wall(span.end if span.end is not None else last)),
            statusDetails=StatusDetails(message=detail.get("error")) if detail.get("error") else None,
        )
        timed.append((span.start, step))
    steps = [step for _, step in sorted(timed, key=lambda pair: pair[0])]
    for verdict in drill.record.verdicts:
        steps.append(
            TestStepResult(
                name=f"objective {verdict.objective}: expected {verdict.expected}, "
                f"measured {verdict.measured}",
                status=STATUS.get(verdict.status, "broken"),
                statusDetails=StatusDetails(message=verdict.message),
                start=_ms(drill.wall(last)),
                stop=_ms(drill.wall(last)),
            )
        )
    return steps


def _attachments(drill: DrillResult) -> list[tuple[Any, str, Any]]:
    """(body, name, type) of everything a reader of the allure report needs to check the figures."""
    found: list[tuple[Any, str, Any]] = []
    record = drill.record
    for app, figures in record.figures.items():
        bound = plots.latency_seconds(record.objectives.get(app, {}).get("latency"))
        png = plots.timeline_png(drill, app, bound, figures.get("rto_s"))
        if png is not None:
            found.append((png, f"timeline plot ({app})", AttachmentType.PNG))
        metrics = plots.promql_png(drill, app)
        if metrics is not None:
            found.append((metrics, f"PromQL objectives plot ({app})", AttachmentType.PNG))
    data = record.to_data()
    for name in ("figures", "verdicts"):
        found.append((json.dumps(data[name], indent=1), name, AttachmentType.JSON))
    found.append((json.dumps(data["timeline"]["events"], indent=1), "timeline", AttachmentType.JSON))
    series = (
        ("probe series", drill.probes),
        ("sentinel series", drill.sentinel),
        ("PromQL series", drill.promql),
    )
    for kind, rows in series:
        if rows:
            found.append(("".join(json.dumps(r) + "\n" for r in rows), kind, AttachmentType.JSON))
    return found


def attach(config: pytest.Config, item: pytest.Item, folder: Path) -> None:
    """Add the drill record in `folder` to the item's allure result, its status the record's verdict;
    nothing without --alluredir."""
    listener = config.pluginmanager.get_plugin("allure_listener")
    result = listener.allure_logger.get_test(None) if listener is not None else None
    if result is None:
        return
    drill = read_drill(folder)
    status = STATUS.get(drill.verdict, "broken")
    if drill.verdict in ("fail", "error") and result.status != status:  # the call alone decided it so far
        result.status, result.statusDetails = status, StatusDetails(message=drill.record.message)
    result.labels.extend(_labels(item, drill))
    result.steps.extend(_steps(drill))
    for body, name, kind in _attachments(drill):
        listener.allure_logger.attach_data(
            uuid4(), body, name=name, attachment_type=kind, parent_uuid=result.uuid
        )
