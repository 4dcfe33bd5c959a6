"""Measurement records: the raw samples every figure comes from, and the measured results and verdicts.

All are frozen dataclasses with to_dict() giving JSON-able dicts. Times are monotonic seconds (from
time.monotonic() of the process that took them). The functions that compute results live in measure.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class _Record:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProbeSample(_Record):
    """One probe request: sent and received are monotonic seconds, latency = received - sent.

    ok is False when no response came (connection error, timeout); then status is None and error says why.
    served_by names the cluster that answered, when the response said so.
    """

    target: str
    sent: float
    received: float
    ok: bool
    status: int | None
    error: str | None
    latency: float
    served_by: str | None
    address: str | None = None
    """The address the probe's connection went to (for a name, what it resolved to); None before one."""

    def __post_init__(self) -> None:
        if self.received < self.sent:
            raise ValueError(
                f"probe of {self.target}: received at {self.received} before sent at {self.sent}"
            )
        if not math.isclose(self.latency, self.received - self.sent, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(
                f"probe of {self.target}: latency {self.latency} is not received - sent "
                f"({self.received - self.sent}); build samples with ProbeSample.of(...)"
            )

    @classmethod
    def of(
        cls,
        target: str,
        sent: float,
        received: float,
        *,
        ok: bool = True,
        status: int | None = None,
        error: str | None = None,
        served_by: str | None = None,
        address: str | None = None,
    ) -> ProbeSample:
        """A sample with its latency computed from sent and received."""
        return cls(target, sent, received, ok, status, error, received - sent, served_by, address)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeSample:
        return cls(**data)


WriteOutcome = Literal["acked", "refused", "unknown"]


@dataclass(frozen=True)
class SentinelWrite(_Record):
    """One sentinel write: its sequence number, what became of it, and when.

    outcome: "acked" (a 2xx answer), "refused" (an answer that is not 2xx: the app said no) or "unknown" (no
    answer: timeout, connection error; the app may or may not have taken it). acked_at is the ack's time,
    None unless acked (an unacknowledged write promised nothing, so losing it is no loss). ended_at is when
    the attempt ended (the answer, or giving up); None in records made before it was kept. served_by names
    the cluster that answered, when the app declares a served-by header (None otherwise).
    """

    seq: int
    acked_at: float | None
    outcome: WriteOutcome
    ended_at: float | None = None
    served_by: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in ("acked", "refused", "unknown"):
            raise ValueError(f"sentinel write #{self.seq}: unknown outcome {self.outcome!r}")
        if (self.outcome == "acked") != (self.acked_at is not None):
            raise ValueError(
                f"sentinel write #{self.seq}: outcome {self.outcome!r} with acked_at {self.acked_at!r}; "
                "acked_at is set exactly when the write was acked"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SentinelWrite:
        """The record back from to_dict(); a record without an outcome (made before outcomes were kept) is
        acked when it has acked_at, else unknown."""
        if "outcome" not in data:
            data = {**data, "outcome": "unknown" if data.get("acked_at") is None else "acked"}
        return cls(**data)


@dataclass(frozen=True)
class Window(_Record):
    """An outage window: a maximal run of consecutive failed probes.

    start is the first failed probe's send time. end is the send time of the successful probe that ended the
    run (closed), or, when no probe followed, the last receive time among the run's probes (closed False).
    """

    start: float
    end: float
    failed_count: int
    closed: bool

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Interleaving(_Record):
    """Two clusters whose acknowledged writes interleave in time: both acknowledged writes from start to end
    (the overlap of their [first ack, last ack] spans); acks: every ack of either in it, as (time, cluster),
    in time order."""

    cluster: str
    other: str
    start: float
    end: float
    acks: tuple[tuple[float, str], ...]


RtoOutcome = Literal["no_failure", "recovered", "not_recovered", "no_data"]


@dataclass(frozen=True)
class RtoResult(_Record):
    """Measured RTO and the moments that decide it (see measure.rto).

    rto is None unless outcome is "no_failure" (rto 0) or "recovered". last_failure and recovery_start are
    send times. stable_probes and stable_span: the successes that confirmed stability and the span of their
    send times (when not recovered: every success since the last failure). stable_count and stable_seconds
    are the requirement; probes and failed count the probes sent at or after t0.
    """

    outcome: RtoOutcome
    t0: float
    rto: float | None
    last_failure: float | None
    recovery_start: float | None
    stable_probes: int
    stable_span: float
    stable_count: int
    stable_seconds: float
    probes: int
    failed: int
    last_cause: str | None = None
    """Why the last failed probe failed (its error, 5xx status or latency), None without failures."""


@dataclass(frozen=True)
class RpoResult(_Record):
    """Measured RPO over the pre-fault writes (acknowledged before t0), in order of (acked_at, seq).

    rpo = t0 - last_survivor.acked_at, where last_survivor is the newest pre-fault write that survived with
    every earlier pre-fault write; rpo = 0 when every pre-fault write survived (nothing lost). When even the
    oldest was lost, rpo = t0 - its ack time and lower_bound is True: the loss may reach back further than
    the sentinel's first write. rpo is None when no write was acknowledged before t0 (nothing to measure).
    newest_ack: the newest pre-fault ack; first_lost: the oldest lost pre-fault write; lost: missing
    pre-fault seqs; holes: those below the highest seq that survived (among all writes).
    """

    t0: float
    rpo: float | None
    lower_bound: bool
    pre_fault: int
    newest_ack: float | None
    last_survivor: SentinelWrite | None
    first_lost: SentinelWrite | None
    lost_count: int
    lost: tuple[int, ...]
    holes: tuple[int, ...]


@dataclass(frozen=True)
class MissedSlot(_Record):
    """A slot no probe went out for: "busy" (max_in_flight outstanding) or "late" (the prober woke after
    it: starved of CPU)."""

    target: str
    slot: float
    reason: Literal["busy", "late"]


@dataclass(frozen=True)
class Coverage(_Record):
    """Whether one target's probes cover [start, end) densely enough to judge anything (ok: no problems)."""

    start: float
    end: float
    expected_interval: float
    probes: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class PhaseBreakdown(_Record):
    """[start, end) split among phases (keyed "name" or "name@cluster"), plus the time no phase covers."""

    start: float
    end: float
    phases: dict[str, float]
    unattributed: float


Status = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class ReplicaLag(_Record):
    """How far one cluster's copy of the app's data was behind the primary at a moment, as the data store
    reports it (a PostgreSQL standby's replay position and the time of its newest replayed commit)."""

    cluster: str
    primary: str | None
    """The cluster whose copy was the primary (None when none or several answered as one)."""
    behind_s: float | None
    """From the newest commit the copy had replayed to the moment read (0 when it had replayed all the
    primary had written): the writes acknowledged since are not in it. None when unknown."""
    behind_bytes: int | None
    """The primary's write position less the copy's replay position (bytes of WAL)."""
    state: str
    """The primary's view of the copy's link (streaming, catchup, ...), "no walsender named CLUSTER"
    without one, or "no answer"."""
    error: str | None = None

    def describe(self) -> str:
        """e.g. "eu-west 10.4 s behind us-east (1.3 MB of WAL, streaming)"."""
        if self.error is not None:
            return f"{self.cluster} unknown ({self.error})"
        behind = "unknown" if self.behind_s is None else f"{self.behind_s:.3g} s behind"
        wal = "" if self.behind_bytes is None else f"{self.behind_bytes / 1e6:.3g} MB of WAL, "
        return f"{self.cluster} {behind} {self.primary or 'the primary'} ({wal}{self.state})"


@dataclass(frozen=True)
class Verdict(_Record):
    """An objective judged: what was expected, what was measured, a message saying when, and the moments."""

    status: Status
    objective: str
    expected: str
    measured: str
    message: str
    moments: dict[str, float | None]
