"""Which fleet numbers are taken on this machine, so fleets side by side never share addresses."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import netns
from harness.localfleet.addresses import MAX_FLEETS

REGISTRY = Path(os.environ.get("FLEETDRILL_RUN_DIR", "/run/fleetdrill"))


@contextmanager
def _locked() -> Iterator[None]:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with (REGISTRY / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
