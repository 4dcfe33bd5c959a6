"""The drill record's type: what reports/RUN_ID/DRILL/record.json holds, as frozen dataclasses.

The writer (record.write) builds a DrillRecord and every reader (the HTML report, history, evidence pack,
allure, the terminal summary) gets one back from `DrillRecord.parse`, so no report reads the record by
string keys. Parsing checks every field's type; a record that does not fit is one line naming the file and
the field. Fields that older records lack take their defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from harness.errors import ConfigError
from harness.machine import MachineLoad
from harness.report.redact import redact_data
from harness.samples import Verdict
from harness.timeline import Event


@dataclass(frozen=True)
class RecordedCluster:
    """A cluster of the fleet as the drill saw it."""

    name: str
    region: str | None = None
    role: str = ""
    context: str | None = None


@dataclass(frozen=True)
class RecordedTimeline:
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class RecordedEnvironment:
    """The harness's versions and platform, and how busy its machine was during the drill."""

    versions: dict[str, str] = field(default_factory=dict)
    platform: str = ""
    runner: MachineLoad | None = None


@dataclass(frozen=True)
class RawFiles:
    """Where the raw series behind the figures are, relative to the record's folder."""

    probes: str = "probes.jsonl"
    sentinel: str = "sentinel.jsonl"
    dns: str = "dns.jsonl"
    """The global name's answers from its authoritative server and the runner's resolver (apps[].dns)."""
    promql: str = "promql.jsonl"
    """The series behind each PromQL objective (apps[].objectives.promql), times monotonic as the probes'."""


@dataclass(frozen=True)
class DrillRecord:
    """One drill run: its verdict and outcome, per app the objectives and measured figures, the verdicts,
    the timeline, the fleet's clusters and the environment it ran in."""

    drill: str
    title: str = ""
    run_id: str = ""
    fleet: str = ""
    verdict: str = "error"
    outcome: str = "error"
    message: str = ""
    objectives: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: tuple[Verdict, ...] = ()
    timeline: RecordedTimeline = RecordedTimeline()
    clusters: tuple[RecordedCluster, ...] = ()
    environment: RecordedEnvironment = RecordedEnvironment()
    raw: RawFiles = RawFiles()

    @property
    def events(self) -> tuple[Event, ...]:
        return self.timeline.events

    @property
    def loaded_runner(self) -> str:
        """ "measured on a loaded runner (2 CPUs, 97% busy, ...)" when the runner was loaded, else ""."""
        runner = self.environment.runner
        return f"measured on a loaded runner ({runner.describe()})" if runner and runner.loaded else ""

    @classmethod
    def parse(cls, data: Any, source: object) -> DrillRecord:
        """The record in `data` (decoded JSON), secrets masked; a ConfigError naming `source` and the first
        field that does not fit."""
        try:
            return _ADAPTER.validate_python(redact_data(data))
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "the record"
            raise ConfigError(
                f"{source}: field {where}: {problem['msg']}; expected a fleetdrill drill record"
            ) from None

    def to_data(self) -> dict[str, Any]:
        """JSON-able, secrets masked."""
        return redact_data(_ADAPTER.dump_python(self, mode="json", fallback=str))

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=1)


_ADAPTER = TypeAdapter(DrillRecord)
