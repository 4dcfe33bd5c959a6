"""Which fleet numbers are taken on this machine, so fleets side by side never share addresses."""

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import netns
from harness.localfleet.addresses import MAX_FLEETS

REGISTRY = Path(os.environ.get("FLEETDRILL_RUN_DIR", "/run/fleetdrill"))
MOUNTPOINTS = REGISTRY / "mountpoints"
"""Mount paths node agents of any fleet had to create on this machine: fleets share them (/plugins,
/dev/termination-log), so the last one down removes them, whichever fleet made them."""


@contextmanager
def _locked() -> Iterator[None]:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with (REGISTRY / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record_mountpoint(path: Path) -> None:
    """Note a mount path a node agent created on this machine."""
    with _locked(), MOUNTPOINTS.open("a") as record:
        record.write(f"{path}\n")


def sweep_mountpoints(remove: Callable[[Path], bool]) -> None:
    """Offer every recorded mount path (deepest first) to remove(path); forget those it removed."""
    with _locked():
        if not MOUNTPOINTS.exists():
            return
        paths = {Path(line) for line in MOUNTPOINTS.read_text().splitlines() if line}
        kept = [path for path in sorted(paths, key=lambda p: len(p.parts), reverse=True) if not remove(path)]
        MOUNTPOINTS.write_text("".join(f"{path}\n" for path in kept))


def _claim_file(index: int) -> Path:
    return REGISTRY / f"fleet-{index}"


@dataclass(frozen=True)
class Claim:
    """Fleet folder that claimed a number, and the pid of the process that claimed it."""

    folder: Path
    pid: int


def claim(folder: Path) -> int:
    """The lowest fleet number neither claimed nor holding namespaces, claimed for folder."""
    with _locked():
        for index in range(MAX_FLEETS):
            if not _claim_file(index).exists() and not netns.names(f"fd{index}-"):
                _claim_file(index).write_text(f"{folder}\n{os.getpid()}\n")
                return index
    raise FleetDrillError(
        f"all {MAX_FLEETS} local fleet slots are in use: `fleetdrill fleet down` some of them"
    )


def release(index: int) -> None:
    with _locked():
        _claim_file(index).unlink(missing_ok=True)


def claims() -> dict[int, Claim]:
    """Every claimed fleet number and who claimed it."""
    if not REGISTRY.is_dir():
        return {}
    found = {}
    for path in REGISTRY.glob("fleet-*"):
        index = path.name.removeprefix("fleet-")
        lines = path.read_text().split("\n")
        if index.isdigit() and len(lines) >= 2 and lines[1].isdigit():
            found[int(index)] = Claim(Path(lines[0]), int(lines[1]))
    return found
