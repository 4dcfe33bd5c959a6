"""For unit tests: a fault in force while a file exists, and the deadline-bounded wait tests poll with."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.faults import Evidence, Fault, FaultContext


@dataclass(frozen=True)
class FileFault(Fault, kind="test-file"):
    """In force on each target while the file `folder/<target>` exists."""

    cuts_api: ClassVar[bool] = True  # as a cluster loss: the drill lease of its targets is held elsewhere
    folder: str

    def inject(self, ctx: FaultContext) -> None:
        for target in self.targets:
            (Path(self.folder) / target).touch()

    def revert(self, ctx: FaultContext) -> None:
        for target in self.targets:
            (Path(self.folder) / target).unlink(missing_ok=True)

    def effect(self, ctx: FaultContext, observed: object, started: object) -> Evidence:
        present = [target for target in self.targets if (Path(self.folder) / target).exists()]
        return Evidence(len(present) == len(self.targets), f"files present: {present}")


def wait_for(condition: Callable[[], object], deadline_s: float, what: str) -> None:
    """Poll condition until true; AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.02)
