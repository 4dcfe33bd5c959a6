"""Where fleetdrill keeps its state by default (each overridable by option or environment)."""

import os
from pathlib import Path


def state_home() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "fleetdrill"


def default_fleet_dir() -> Path:
    """The embedded local fleet's folder: $FLEETDRILL_FLEET_DIR, else the state folder's `fleet`."""
    return Path(os.environ.get("FLEETDRILL_FLEET_DIR") or state_home() / "fleet")


def default_fleet_file() -> Path:
    """The fleet file drills use without --fleet: the one the running local fleet wrote."""
    return default_fleet_dir() / "fleet.yaml"


def default_ledger() -> Path:
    """The fault ledger drills write and `fleetdrill recover` reads ($FLEETDRILL_LEDGER overrides it)."""
    return Path(os.environ.get("FLEETDRILL_LEDGER") or state_home() / "ledger.json")
