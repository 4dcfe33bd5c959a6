"""Faults as data with a guaranteed revert: the Fault protocol, its registry, the FaultStack, signals.

Each fault kind registers by name, so the ledger (harness.faults.ledger) can rebuild a fault after a crash.
FaultStack is monkeypatch's undo stack for faults: each fault is in the ledger before it acts and is
reverted on every exit path; signals_as_interrupts makes SIGTERM and SIGHUP such a path.
"""

from __future__ import annotations

import _thread
import dataclasses
import hashlib
import json
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from harness.errors import FleetDrillError
from harness.faults.handover import Handover
from harness.permissions import Permission
from harness.timeline import Event, Timeline

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from harness.faults.ledger import Ledger
    from harness.samples import ProbeSample

T = TypeVar("T")
KINDS: dict[str, type[Fault]] = {}
"""Every registered fault class, by kind."""


class RevertError(FleetDrillError):
    """A fault could not be reverted: it stays in the fault ledger for `fleetdrill recover`."""


class FaultContext(Protocol):
    """How faults reach the fleet: a Kubernetes API client per cluster and the infrastructure provider."""

    def api_client(self, cluster: str) -> ApiClient:
        """The API client of the cluster with this name."""

    @property
    def infra(self) -> Any:
        """The infrastructure provider (harness.infra) for faults the API cannot express, or None."""

    @property
    def infra_effect_timeout_s(self) -> float | None:
        """How long a fault the provider injects has to show its effect (the fleet file's
        infrastructure.effect_timeout); None: the fault's own effect_deadline_s."""


class Observed(Protocol):
    """What the drill measures from outside the faulted part, for a fault's evidence of its effect."""

    def endpoint_probes(self, cluster: str, since: float) -> list[ProbeSample] | None:
        """The probes of the app endpoints in `cluster` sent since `since` (monotonic), oldest first; None
        when no endpoint of that cluster is probed."""


@dataclass(frozen=True)
class Evidence:
    """Whether a fault has taken effect, and what showed it (or what showed it had not), in one line."""

    effective: bool
    detail: str


@dataclass(frozen=True)
class KubeContext:
    """A FaultContext over ready-made API clients, by cluster name."""

    clients: Mapping[str, ApiClient] = field(default_factory=dict)
    infra: Any = None
    infra_effect_timeout_s: float | None = None

    def api_client(self, cluster: str) -> ApiClient:
        try:
            return self.clients[cluster]
        except KeyError:
            known = ", ".join(self.clients) or "none"
            raise FleetDrillError(f"no API client for cluster {cluster!r} (clients for: {known})") from None


@dataclass(frozen=True, kw_only=True)
class Fault(ABC):
    """A fault as data; a subclass adds its parameters as fields and implements inject and revert.

    Register a kind by naming it: `@dataclass(frozen=True) class ClusterLoss(Fault, kind="cluster-loss")`.
    Parameters must survive a JSON round trip (str, numbers, bools, None, tuples and dicts of them): the
    ledger keeps them that way across a crash, and the FaultStack refuses a fault that does not.
    """

    kind: ClassVar[str] = ""
    effect_deadline_s: ClassVar[float] = 30.0
    """How long after injection began its effect may take to show before the fault counts as not taken."""
    by_provider: ClassVar[bool] = False
    """The infrastructure provider injects it (infrastructure.effect_timeout bounds its effect's wait)."""
    cuts_api: ClassVar[bool] = False
    """The fault may take the target clusters' API servers out of reach (a cluster loss, a partition): no
    drill lease is held there while it is in force."""
    recovery: ClassVar[bool] = False
    """A change the drill made to recover (a failover), not a fault: never guarded as one, and undone only
    after every fault is reverted (failing back needs the lost cluster back)."""
    cuts_off: ClassVar[Literal["cluster", "region"] | None] = None
    """Where a harness running there is cut off from the fleet by it: in a target cluster (a cluster loss),
    or in a target's region (a partition); `fleetdrill doctor` warns such a runner (harness.placement)."""
    permissions: ClassVar[tuple[Permission, ...]] = ()
    """What its inject, revert and effect call in each target cluster's API (the namespace scope APP is the
    one the drills give it: the app's); `fleetdrill doctor` asks for them (harness.needs)."""
    targets: tuple[str, ...]
    """Names of the clusters the fault touches."""

    def __init_subclass__(cls, kind: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind:
            taken = KINDS.get(kind)
            if taken is not None:
                raise TypeError(f"fault kind {kind!r} of {_name(cls)} is already taken by {_name(taken)}")
            cls.kind = kind
            KINDS[kind] = cls

    def __post_init__(self) -> None:
        if not self.kind:
            raise TypeError(f'{_name(type(self))} has no fault kind: subclass Fault with kind="..."')
        if not are_names(self.targets):
            raise TypeError(
                f"{self.kind}: expected targets as a tuple of cluster names, got {self.targets!r}"
            )

    @property
    def params(self) -> dict[str, Any]:
        """The parameters: every field but targets."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "targets"}

    @property
    def key(self) -> str:
        """A short name derived from kind, targets and parameters: the same fault has the same key after a
        crash, so a revert finds the objects and marks its inject left (names, labels, annotations)."""
        record = {key: value for key, value in self.to_record().items() if key != "module"}
        text = json.dumps(record, sort_keys=True)
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"

    def describe(self) -> str:
        """One line: kind, targets and parameters."""
        return describe_record(self.to_record())

    def to_record(self) -> dict[str, Any]:
        """The fault as JSON-able data: kind, defining module, targets, params (see fault_from_record)."""
        return {
            "kind": self.kind,
            "module": type(self).__module__,
            "targets": list(self.targets),
            "params": self.params,
        }

    @abstractmethod
    def inject(self, ctx: FaultContext) -> None:
        """Make the fault happen; raise if it could not (the stack then reverts whatever was done)."""

    @abstractmethod
    def revert(self, ctx: FaultContext) -> None:
        """Undo the fault; harmless when it is already reverted, or was never or only partly injected."""

    def inject_handing(self, ctx: FaultContext, handover: Handover) -> None:
        """inject, keeping in `handover` what each step returned for the step that reverts it (the
        FaultStack's way in); a fault whose steps hand nothing over keeps this: inject."""
        self.inject(ctx)

    def revert_handed(self, ctx: FaultContext, handover: Handover) -> None:
        """revert with what inject_handing kept (read back from the ledger by recover); by default: revert."""
        self.revert(ctx)

    @abstractmethod
    def effect(self, ctx: FaultContext, observed: Observed, started: Event) -> Evidence:
        """What shows, from outside the faulted part, that the fault has taken effect since injection
        `started`; a drill polls it until effective or effect_deadline(ctx) passes (then: did not take
        effect)."""

    def effect_deadline(self, ctx: FaultContext) -> float:
        """Seconds after injection began that the effect may take to show: effect_deadline_s; for a fault
        the infrastructure provider injects, the fleet file's infrastructure.effect_timeout when set."""
        return (ctx.infra_effect_timeout_s if self.by_provider else None) or self.effect_deadline_s


def are_names(value: object) -> bool:
    """A fault's list of names (clusters, nodes, namespaces): a non-empty tuple of non-empty strings."""
    return isinstance(value, tuple) and bool(value) and all(n and isinstance(n, str) for n in value)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_record(record: Mapping[str, Any]) -> str:
    """One line for a fault record: `kind on a, b (param=value, ...)`."""
    params = ", ".join(f"{key}={value!r}" for key, value in record.get("params", {}).items())
    text = f"{record.get('kind')} on {', '.join(record.get('targets', ()))}"
    return f"{text} ({params})" if params else text


class _Interrupts:
    """Signal state: process-wide, like signal handlers."""

    shield_depth = 0
    deferred: BaseException | None = None
    pending: BaseException | None = None


def _on_signal(signum: int, frame: object) -> None:
    exc = _Interrupts.pending or KeyboardInterrupt(f"received {signal.Signals(signum).name}")
    _Interrupts.pending = None
    if _Interrupts.shield_depth and _Interrupts.deferred is None:
        _Interrupts.deferred = exc
        return
    raise exc


@contextmanager
def signals_as_interrupts(
    signums: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt in the main thread while the block runs.

    A signal arriving while a fault is being reverted is held until the revert is done; a second one is
    not (it interrupts a revert that hangs). Previous handlers are restored on exit. Main thread only.
    """
    previous = {signum: signal.signal(signum, _on_signal) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _Interrupts.pending = None


def interrupt_main_thread(exc: BaseException) -> None:
    """From any thread: raise `exc` in the main thread now (outside signals_as_interrupts: Ctrl-C)."""
    if signal.getsignal(signal.SIGINT) is _on_signal:
        _Interrupts.pending = exc
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
    else:
        _thread.interrupt_main()


@contextmanager
def _shielded() -> Iterator[None]:
    """Hold signals (see signals_as_interrupts) while the block runs; raise the first one after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Interrupts.shield_depth += 1
    try:
        yield
    finally:
        _Interrupts.shield_depth -= 1
        exc = _Interrupts.deferred
        if exc is not None and not _Interrupts.shield_depth:
            _Interrupts.deferred = None
            raise exc


def revert_order(items: list[T], is_recovery: Callable[[T], bool]) -> list[T]:
    """Faults newest first, then recovery changes newest first (see Fault.recovery)."""
    newest_first = list(reversed(items))
    return [i for i in newest_first if not is_recovery(i)] + [i for i in newest_first if is_recovery(i)]


Guard = Callable[[Fault, frozenset[str]], None]
"""Called with a fault and the clusters already faulted before it is applied; raises to refuse it."""


@dataclass(frozen=True, eq=False)
class _InForce:
    fault: Fault
    entry_id: str | None  # None in a dry run
    handover: Handover


class FaultStack:
    """The faults in force, newest last: each is in the ledger before it acts, reverted on every exit.

    `guard` is called before each fault acts (the safety rules, then the drill leases); `rules`, the safety
    rules alone, for `check`. A dry run only guards each fault, records it as "fault.planned" and keeps it
    in `planned`.
    """

    def __init__(
        self,
        ctx: FaultContext,
        ledger: Ledger,
        timeline: Timeline,
        run_id: str,
        *,
        guard: Guard | None = None,
        rules: Guard | None = None,
        dry_run: bool = False,
    ) -> None:
        self._ctx, self._ledger, self._timeline, self._run_id = ctx, ledger, timeline, run_id
        self._guard, self._rules, self.dry_run = guard, rules, dry_run
        self._in_force: list[_InForce] = []
        self.planned: list[Fault] = []

    def __enter__(self) -> FaultStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.undo_all()

    def check(self, faults: Iterable[Fault]) -> None:
        """Hold `faults` to the safety rules (allowlist, prod, blast radius) as if pushed in order on top of
        those in force, pushing none: a drill that injects several checks them first, so a refusal comes
        before its first fault, not halfway through. The rules only (no lease is taken): without them,
        nothing to check."""
        if self._rules is None:
            return
        faulted = set(self.faulted_clusters())
        for fault in faults:
            if not fault.recovery:
                self._rules(fault, frozenset(faulted))
                faulted |= set(fault.targets)

    def check_cluster(self, cluster: str) -> None:
        """Hold what a drill does to `cluster` that is no fault (the load a burst drill makes) to the
        allowlist and the prod guard (--allow-prod included); without rules, nothing to check."""
        if self._rules is not None:
            self._rules.check_cluster(cluster)

    def faulted_clusters(self) -> frozenset[str]:
        """Clusters some fault in force targets (recovery changes are not faults)."""
        faults = (item.fault for item in self._in_force if not item.fault.recovery)
        return frozenset(target for fault in faults for target in fault.targets)

    @contextmanager
    def applied(self, fault: Fault) -> Iterator[Event]:
        """Apply `fault` for the block, revert it on any exit; yields "fault.injected" (its detail's
        `started` is when injection began: t0) or, in a dry run, "fault.planned"."""
        item, event = self._apply(fault)
        try:
            yield event
        finally:
            self._revert(item)

    def push(self, fault: Fault) -> Event:
        """Apply `fault` until undo_all; returns its "fault.injected" event (detail `started`: t0)."""
        return self._apply(fault)[1]

    def undo_all(self, recoveries: bool = True) -> None:
        """Revert every fault in force, newest first, then (unless told not to) every recovery change, newest
        first; safe to call twice. RevertError names failures."""
        failures = []
        items = revert_order(self._in_force, lambda item: item.fault.recovery)
        for item in [item for item in items if recoveries or not item.fault.recovery]:
            try:
                self._revert(item)
            except RevertError as exc:
                failures.append(str(exc))
        if failures:
            raise RevertError("; ".join(failures))

    def in_force(self) -> list[Fault]:
        """The faults and recovery changes in force, oldest first."""
        return [item.fault for item in self._in_force]

    def forget(self, fault: Fault) -> None:
        """The drill undid this recovery change itself (failed back, timed on its timeline): out of the stack
        and the ledger, not reverted again."""
        for item in [item for item in self._in_force if item.fault == fault]:
            with _shielded():
                if item.entry_id is not None:
                    self._ledger.remove(item.entry_id)
                self._in_force.remove(item)

    def _apply(self, fault: Fault) -> tuple[_InForce, Event]:
        if self._guard is not None and not fault.recovery:
            self._guard(fault, self.faulted_clusters())
        if self.dry_run:
            item = _InForce(fault, None, Handover())
            self._in_force.append(item)
            self.planned.append(fault)
            return item, self._record("fault.planned", item)
        with _shielded():
            entry_id = self._ledger.add(fault, self._run_id).id
            item = _InForce(fault, entry_id, Handover(on_keep=lambda handles: self._keep(entry_id, handles)))
            self._in_force.append(item)
        started = self._record("fault.injecting", item)  # t0: a failure from here on may be the fault's
        try:
            fault.inject_handing(self._ctx, item.handover)
        except BaseException:
            self._revert(item)
            raise
        handed = {"handles": item.handover.handles} if item.handover.handles else {}
        event = self._record("fault.injected", item, started=started.t_mono, **handed)
        with _shielded():
            self._ledger.mark(entry_id, "applied")
        return item, event

    def _keep(self, entry_id: str, handles: dict[str, str]) -> None:
        """Write what the fault's steps returned so far to its ledger entry, before its next step runs."""
        with _shielded():
            self._ledger.keep(entry_id, handles)

    def _revert(self, item: _InForce) -> None:
        with _shielded():
            if item not in self._in_force:
                return
            if item.entry_id is not None:
                try:
                    item.fault.revert_handed(self._ctx, item.handover)
                except Exception as exc:
                    self._record("fault.revert_failed", item, error=f"{type(exc).__name__}: {exc}")
                    raise RevertError(
                        f"{item.fault.describe()}: revert failed ({type(exc).__name__}: {exc}); it stays in "
                        f"the fault ledger {self._ledger.path}: fix the cause, then run `fleetdrill recover`"
                    ) from exc
                self._ledger.remove(item.entry_id)
                self._record("fault.reverted", item)
            self._in_force.remove(item)

    def _record(self, name: str, item: _InForce, **extra: object) -> Event:
        """A fault's event (fault.*); a recovery change's is recovery.* (a failover is not a fault)."""
        record, targets = item.fault.to_record(), item.fault.targets
        detail = {"id": item.entry_id, **{key: record[key] for key in ("kind", "targets", "params")}, **extra}
        if item.fault.recovery:
            name = name.replace("fault.", "recovery.", 1)
        return self._timeline.record(name, targets[0] if len(targets) == 1 else None, detail)
