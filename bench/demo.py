"""The main job, again and again: `fleetdrill demo` on a fresh fleet N times, optionally beside a CPU hog.

Prints each run's outcome (passed, or the first line of what failed) and wall time, then passes of N;
asserts nothing. A failed run's reports (records, probes, timelines) are kept under --keep. The hog
(`--load`) keeps every core of the machine busy, as other jobs on a shared CI runner do, so a verdict that
depends on how busy the machine is shows here. `--shuffle SEED` runs the drills of run N in the order seed
SEED+N shuffles them into (the plugin's --shuffle), so a drill that leaves the fleet degraded for the next
one shows too. `--no-postgres` runs `fleetdrill demo --no-postgres` (the orders in the sample app's own
store, not in PostgreSQL).
    python bench/demo.py [--runs 5] [--load] [--no-postgres] [--shuffle SEED] [--keep DIR]
"""

import argparse
import json
import multiprocessing
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.faults import signals_as_interrupts

FAILED = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")


def fleetdrill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True)


def burn() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # forked under signals_as_interrupts: terminate() ends it
    while True:
        pass


@contextmanager
def hog(on: bool) -> Iterator[None]:
    """A busy loop on every core while the block runs (none when off)."""
    workers = [multiprocessing.Process(target=burn, daemon=True) for _ in range(multiprocessing.cpu_count())]
    for worker in workers if on else []:
        worker.start()
    try:
        yield
    finally:
        for worker in workers if on else []:
            worker.terminate()
            worker.join()


def one_demo(folder: Path, seed: int | None, postgres: bool) -> tuple[bool, float, str]:
    """A demo on a fresh fleet in folder (with postgres, the PostgreSQL one; else the app's own store), its
    drills shuffled by seed when set: passed, wall seconds (fleet up included), first failure."""
    started = time.monotonic()
    try:
        demo = fleetdrill(
            "demo",
            "--postgres" if postgres else "--no-postgres",
            "--dir",
            str(folder / "fleet"),
            "--report-dir",
            str(folder / "reports"),
            "--",
            "--ledger",
            str(folder / "ledger.json"),
            *(() if seed is None else ("--shuffle", str(seed))),
        )
    finally:
        fleetdrill("fleet", "down", "--dir", str(folder / "fleet"))
    seconds = time.monotonic() - started
    failures = [
        m.group(2) + (f": {m.group(3)}" if m.group(3) else "")
        for m in map(FAILED.match, demo.stdout.splitlines())
        if m
    ]
    why = failures[0] if failures else (demo.stderr.strip().splitlines() or [f"exit {demo.returncode}"])[-1]
    said = recorded_failures(folder / "reports")  # pytest drops the message when the drill's id is long
    return demo.returncode == 0, seconds, "" if demo.returncode == 0 else "; ".join([why, *said])[:600]


def recorded_failures(reports: Path) -> list[str]:
    """`DRILL: first line of its message` of every drill record that did not pass."""
    found = []
    for path in sorted(reports.glob("*/*/record.json")):
        record = json.loads(path.read_text())
        if record.get("verdict") != "pass":
            first = (str(record.get("message") or "").splitlines() or ["(no message)"])[0]
            found.append(f"{path.parent.name}: {first}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="how many demos (default 5)")
    parser.add_argument("--load", action="store_true", help="a CPU hog on every core beside them")
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the demo's PostgreSQL fleet (default; --no-postgres: the app's own store)",
    )
    parser.add_argument("--shuffle", type=int, metavar="SEED", help="run N's drills shuffled by SEED+N")
    parser.add_argument(
        "--keep",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"fleetdrill-demo-failures-{time.strftime('%Y%m%dT%H%M%S')}",
        help="where a failed run's reports are kept (run-N)",
    )
    args = parser.parse_args()
    passes = 0
    with hog(args.load):
        for run in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory(prefix="fleetdrill-demo-") as tmp:
                seed = None if args.shuffle is None else args.shuffle + run
                passed, seconds, why = one_demo(Path(tmp), seed, args.postgres)
                if not passed and (Path(tmp) / "reports").is_dir():
                    shutil.copytree(Path(tmp) / "reports", args.keep / f"run-{run}")
                    why += f" (reports kept in {args.keep / f'run-{run}'})"
            passes += passed
            print(
                f"demo {run}{'' if seed is None else f' (--shuffle {seed})'}: "
                f"{'passed' if passed else 'FAILED'} in {seconds:.0f} s" + (f": {why}" if why else "")
            )
    kind = (" with PostgreSQL" if args.postgres else " without PostgreSQL") + " under load" * args.load
    print(f"{passes} of {args.runs} demos{kind} passed")


if __name__ == "__main__":
    with signals_as_interrupts():  # SIGTERM too takes the fleet down (one_demo's finally)
        main()
