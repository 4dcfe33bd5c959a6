"""Benchmark the drill suites on a local fleet: wall time of the gate and quarterly suites.

Prints figures and their ratio to the targets; asserts nothing. Starts a fleet of its own:
    python bench/suites.py
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"gate": 60.0, "quarterly": 180.0}


def fleetdrill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetdrill-suites-") as tmp:
        folder = Path(tmp)
        up = fleetdrill("fleet", "up", "--dir", str(folder / "fleet"))
        if up.returncode != 0:
            sys.exit(f"fleet up failed: {up.stderr.strip()}")
        try:
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
                outcome = [line for line in run.stdout.splitlines() if " passed" in line or " failed" in line]
                ratio = f"target {target:.0f} s: {seconds / target:.2f}x"
                print(
                    f"{suite} suite: {seconds:.0f} s ({ratio}); {(outcome or ['no outcome'])[-1].strip('= ')}"
                )
        finally:
            fleetdrill("fleet", "down", "--dir", str(folder / "fleet"))


if __name__ == "__main__":
    main()
