"""The fault ledger: the faults a drill put in force, on disk, so `recover` can revert them after a crash.

One JSON file, rewritten whole on each change: written to a temporary file in the same folder, fsynced,
renamed over the old one, then the folder is fsynced; a reader or a crash sees the old ledger or the new
one, never a torn one. Writers take an exclusive flock on `<ledger>.lock` around read-modify-write. An
entry is written "intended" before its fault acts, "applied" once injected, and removed once reverted; what
its injecting steps return (harness.faults.handover) is written to it as each returns.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from harness.errors import FleetDrillError
from harness.faults.base import KINDS, Fault, FaultContext, RevertError, describe_record, revert_order
from harness.faults.handover import Handover

State = Literal["intended", "applied", "reverted"]
STATES: tuple[State, ...] = get_args(State)
_VERSION = 1


def new_run_id() -> str:
    """The one maker of run ids (pytest sessions, `fleetdrill run`, Chaos Toolkit actions): the UTC time it
    started, then 8 random hex digits. Run ids sort by time and name report folders."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(4)


def holder_identity(run_id: str, host: str | None = None, pid: int | None = None) -> str:
    """Who holds a drill lease: the run id (unique per run), with host and pid (this process's by default)
    for humans; `fleetdrill recover` rebuilds it from a ledger entry (LedgerEntry.holder)."""
    host = socket.gethostname() if host is None else host
    return f"{run_id} on {host} pid {os.getpid() if pid is None else pid}"


class LedgerError(FleetDrillError):
    """The ledger file cannot be read or an entry is not in it."""


def fault_from_record(record: Mapping[str, Any]) -> Fault:
    """Rebuild a fault from Fault.to_record(), importing the module that defines its kind when needed."""
    kind, module = record.get("kind"), record.get("module")
    if kind not in KINDS and module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise FleetDrillError(f"fault kind {kind!r}: cannot import module {module!r}: {exc}") from None
    if kind not in KINDS:
        known = ", ".join(sorted(KINDS)) or "none"
        raise FleetDrillError(f"unknown fault kind {kind!r} from module {module!r} (known kinds: {known})")
    try:
        return KINDS[kind](targets=_frozen(record["targets"]), **_frozen(record.get("params", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise FleetDrillError(f"cannot rebuild fault {describe_record(record)}: {exc}") from None


def _frozen(value: Any) -> Any:
    """JSON data with its lists turned back into tuples (the top-level mapping stays a dict)."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


def _as_kept(fault: Fault) -> dict[str, Any]:
    """The record the ledger keeps; TypeError when it would not rebuild the fault after a crash."""
    try:
        record = json.loads(json.dumps(fault.to_record()))
        same = fault_from_record(record) == fault
    except (TypeError, ValueError, FleetDrillError):
        same = False
    if not same:
        raise TypeError(
            f"{fault.describe()}: its ledger record does not rebuild it; use JSON-able parameters "
            "(str, numbers, bools, None, tuples and dicts of them) in a module recover can import"
        )
    return record


@dataclass(frozen=True)
class LedgerEntry:
    """One fault in the ledger: its record (Fault.to_record), state, who put it there, when, and what its
    injecting steps returned."""

    id: str
    fault: dict[str, Any]
    state: State
    run_id: str
    pid: int
    host: str
    created_at: float
    """Wall-clock seconds since the epoch."""
    updated_at: float
    """When the state last changed."""
    handles: dict[str, str] = field(default_factory=dict)
    """What the fault's injecting steps returned, by what each acted on, for the steps that revert it."""

    def describe(self) -> str:
        """One line: the fault, its state, the run that applied it, and what its steps handed over."""
        since = datetime.fromtimestamp(self.updated_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        where = f"run {self.run_id}, pid {self.pid} on {self.host}"
        handed = ", ".join(f"{key}: {handle}" for key, handle in self.handles.items())
        handed = f"; handed over {handed}" if handed else ""
        return f"{describe_record(self.fault)} [{self.state} since {since}, {where}{handed}]"

    @property
    def holder(self) -> str:
        """The drill lease holder identity of the run that wrote this entry."""
        return holder_identity(self.run_id, self.host, self.pid)


class Ledger:
    """The ledger file at `path` (created on the first change; a missing file is an empty ledger)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def entries(self) -> list[LedgerEntry]:
        """Every entry, oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text)
            if data.get("version") != _VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {_VERSION}")
            found = [LedgerEntry(**entry) for entry in data["entries"]]
            if any(entry.state not in STATES for entry in found):
                raise ValueError(f"a state other than {', '.join(STATES)}")
            if not all(_texts(entry.handles) for entry in found):
                raise ValueError("handles other than a mapping of texts")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise LedgerError(
                f"{self.path}: not a fault ledger ({exc}); faults it lists may still be in force: "
                "revert them by hand, then delete the file"
            ) from None
        return found

    def open_entries(self) -> list[LedgerEntry]:
        """Entries whose fault may be in force (any state but reverted), oldest first."""
        return [entry for entry in self.entries() if entry.state != "reverted"]

    def left_behind(self) -> list[LedgerEntry]:
        """Open entries that no running drill will revert: their process is gone (or ran on another host,
        which this host cannot ask). `fleetdrill recover` reverts them."""
        return [entry for entry in self.open_entries() if not (_still_running(entry) or _ours(entry))]

    def add(self, fault: Fault, run_id: str) -> LedgerEntry:
        """Write `fault` as "intended" (call before it acts); TypeError if its record would not rebuild it."""
        record, now = _as_kept(fault), time.time()
        entry = LedgerEntry(
            secrets.token_hex(6), record, "intended", run_id, os.getpid(), socket.gethostname(), now, now
        )
        with self._change() as entries:
            entries.append(entry)
        return entry

    def mark(self, entry_id: str, state: State) -> LedgerEntry:
        """Set an entry's state; LedgerError when it is not in the ledger."""
        if state not in STATES:
            raise ValueError(f"expected a ledger state ({', '.join(STATES)}), got {state!r}")
        return self._update(entry_id, state=state, updated_at=time.time())

    def keep(self, entry_id: str, handles: Mapping[str, str]) -> LedgerEntry:
        """Set what an entry's injecting steps returned so far; LedgerError when it is not in the ledger."""
        return self._update(entry_id, handles=dict(handles))

    def _update(self, entry_id: str, **changes: Any) -> LedgerEntry:
        with self._change() as entries:
            i = self._index(entries, entry_id)
            entries[i] = dataclasses.replace(entries[i], **changes)
            return entries[i]

    def remove(self, entry_id: str) -> None:
        """Drop an entry; harmless when it is already gone."""
        with self._change() as entries:
            entries[:] = [entry for entry in entries if entry.id != entry_id]

    def _index(self, entries: list[LedgerEntry], entry_id: str) -> int:
        for i, entry in enumerate(entries):
            if entry.id == entry_id:
                return i
        raise LedgerError(f"{self.path}: no entry {entry_id!r}")

    @contextmanager
    def _change(self) -> Iterator[list[LedgerEntry]]:
        """Lock, read, let the block edit the entries, write them back atomically (unless it raised)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_name(self.path.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self.entries()
            yield entries
            self._write(entries)

    def _write(self, entries: list[LedgerEntry]) -> None:
        data = {"version": _VERSION, "entries": [dataclasses.asdict(entry) for entry in entries]}
        text = json.dumps(data, indent=1) + "\n"
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            tmp.replace(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


Outcome = Literal["reverted", "removed", "failed", "skipped"]


@dataclass(frozen=True)
class Recovered:
    """What recover did with one ledger entry; failed and skipped faults may still be in force."""

    entry: LedgerEntry
    outcome: Outcome
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("reverted", "removed")

    def line(self) -> str:
        """One line for the user."""
        return f"{self.outcome}: {self.entry.describe()}" + (f": {self.detail}" if self.detail else "")


class RecoverError(RevertError):
    """Some faults could not be recovered; `reports` says what happened to every entry."""

    def __init__(self, message: str, reports: list[Recovered]) -> None:
        super().__init__(message)
        self.reports = reports


def recover(ledger_path: str | Path, ctx: FaultContext, *, force: bool = False) -> list[Recovered]:
    """Revert every fault the ledger holds, newest first (recovery changes after every fault), and remove
    each one reverted; idempotent.

    Entries of a process still running on this host are skipped unless `force` (that drill reverts its own
    faults). A fault whose revert fails stays in the ledger; RecoverError then names every fault left.
    """
    ledger = Ledger(ledger_path)
    entries = revert_order(ledger.entries(), _is_recovery)
    reports = [_recover_one(ledger, entry, ctx, force) for entry in entries]
    left = [report for report in reports if not report.ok]
    if left:
        lines = "; ".join(report.line() for report in left)
        message = f"{len(left)} fault(s) may still be in force, kept in {ledger.path}: {lines}"
        raise RecoverError(message, reports)
    return reports


def _is_recovery(entry: LedgerEntry) -> bool:
    try:
        return fault_from_record(entry.fault).recovery
    except Exception:  # a record that does not rebuild is reported by _recover_one
        return False


def _recover_one(ledger: Ledger, entry: LedgerEntry, ctx: FaultContext, force: bool) -> Recovered:
    if entry.state == "reverted":
        ledger.remove(entry.id)
        return Recovered(entry, "removed")
    if not force and _still_running(entry):
        why = "its drill is still running (it reverts its own faults); stop it, or pass --force"
        return Recovered(entry, "skipped", why)
    try:
        fault_from_record(entry.fault).revert_handed(ctx, Handover(entry.handles))
    except Exception as exc:
        return Recovered(entry, "failed", f"{type(exc).__name__}: {exc}")
    ledger.remove(entry.id)
    return Recovered(entry, "reverted")


def _texts(value: object) -> bool:
    """`value` is a mapping of texts to texts (an entry's handles)."""
    return isinstance(value, dict) and all(isinstance(x, str) for item in value.items() for x in item)


def _ours(entry: LedgerEntry) -> bool:
    """Whether this process wrote `entry`."""
    return entry.host == socket.gethostname() and entry.pid == os.getpid()


def _still_running(entry: LedgerEntry) -> bool:
    """Whether the process that wrote `entry` runs, as far as this host can tell (not this process)."""
    if entry.host != socket.gethostname() or _ours(entry):
        return False
    try:
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
