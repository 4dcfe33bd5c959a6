"""The hand-over from the steps that inject a fault to the steps that revert it.

A provider's lose step may return what its restore step needs (an AWS FIS experiment id to stop): its
handle, kept by what the step acted on (a cluster, a node, a partition). The FaultStack writes each handle
to the fault's ledger entry as soon as its step returns and shows them on "fault.injected"; the revert gets
them back, in the drill or from the ledger in `fleetdrill recover`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


class Handover:
    """The handles of one fault by what each step acted on; `on_keep` gets them all whenever one is kept."""

    def __init__(
        self,
        handles: Mapping[str, str] | None = None,
        on_keep: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self._handles = dict(handles or {})
        self._on_keep = on_keep

    @property
    def handles(self) -> dict[str, str]:
        """Every handle kept so far."""
        return dict(self._handles)

    def keep(self, key: str, handle: str | None) -> None:
        """Keep what the step acting on `key` returned; a step that returned nothing leaves nothing."""
        if handle:
            self._handles[key] = handle
            if self._on_keep is not None:
                self._on_keep(self.handles)

    def get(self, key: str) -> str:
        """What the step acting on `key` returned; "" when it returned nothing or never returned (a crash)."""
        return self._handles.get(key, "")
