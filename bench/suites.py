"""Benchmark the drill suites on a local fleet: wall time of the gate and quarterly suites.

Prints figures and their ratio to the targets; asserts nothing. Starts a fleet of its own:
    python bench/suites.py
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.faults import signals_as_interrupts

TARGETS = {"gate": 60.0, "quarterly": 180.0}
PYTEST_OUTCOME = re.compile(r"^=* ?\d+ (passed|failed|error)")  # pytest's last line: "3 passed in 6.1s"


def fleetdrill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetdrill-suites-") as tmp:
        folder = Path(tmp)
        try:  # an interrupted `fleet up` leaves processes too: `fleet down` takes them down
            up = fleetdrill("fleet", "up", "--dir", str(folder / "fleet"))
            if up.returncode != 0:
                sys.exit(f"fleet up failed: {up.stderr.strip()}")
            for suite, target in TARGETS.items():
                started = time.monotonic()
                run = fleetdrill(
                    "run",
                    "--fleet",
                    str(folder / "fleet" / "fleet.yaml"),
                    "--suite",
                    suite,
                    "--report-dir",
                    str(folder / "reports"),
                    "--",
                    "--ledger",
                    str(folder / "ledger"),
                )
                seconds = time.monotonic() - started
                outcome = [line for line in run.stdout.splitlines() if PYTEST_OUTCOME.match(line)]
                ratio = f"target {target:.0f} s: {seconds / target:.2f}x"
                print(
                    f"{suite} suite: {seconds:.0f} s ({ratio}); {(outcome or ['no outcome'])[-1].strip('= ')}"
                )
        finally:
            fleetdrill("fleet", "down", "--dir", str(folder / "fleet"))


if __name__ == "__main__":
    with signals_as_interrupts():  # SIGTERM too takes the fleet down
        main()
