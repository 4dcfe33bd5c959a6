"""Why the drill's probes run in a process of their own: a thread prober beside a thread that holds the GIL
(JSON parsing, as the kubernetes client does with list responses) against the same prober in a child
process (harness.probeprocess), each at 50 Hz against one local endpoint. Optionally with a CPU hog on
every core (`--hog`), as when another fleet starts on the runner. Prints sent and missed slots and the
share of the schedule kept for each; asserts nothing.

    .venv/bin/python bench/probe_isolation.py [--seconds 10] [--rate 50] [--hog]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.probeprocess import ProbeProcess
from harness.traffic import Prober

ENDPOINT = Path(__file__).with_name("probe_overhead.py")  # its --serve N answers 200 on N ports
DOCUMENT = json.dumps(
    {"items": [{"metadata": {"name": f"pod-{i}"}, "spec": {"n": list(range(20))}} for i in range(20_000)]}
)


def _hold_the_gil(stop: threading.Event) -> None:
    while not stop.is_set():
        json.loads(DOCUMENT)


def _hog() -> None:
    while True:
        pass


def _run(kind: type[Prober] | type[ProbeProcess], url: str, seconds: float, rate: float) -> None:
    stop = threading.Event()
    holder = threading.Thread(target=_hold_the_gil, args=(stop,), daemon=True)
    holder.start()
    try:
        with kind({"ep": url}, rate_hz=rate) as probes:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        stop.set()
        holder.join()
    missed = probes.missed("ep")
    sent = len(probes.samples("ep"))
    late = sum(m.reason == "late" for m in missed)
    kept = sent / max(1, sent + len(missed))
    print(
        f"  {kind.__name__:>12}: {sent} sent, {len(missed)} missed ({late} late): {kept:.0%} of the schedule"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--hog", action="store_true", help="a busy loop on every core beside")
    args = parser.parse_args()
    hogs = (
        [multiprocessing.Process(target=_hog, daemon=True) for _ in range(os.cpu_count() or 1)]
        if args.hog
        else []
    )
    for hog in hogs:
        hog.start()
    argv = [sys.executable, str(ENDPOINT), "--serve", "1"]
    try:
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as endpoint:
            assert endpoint.stdout is not None and endpoint.stdin is not None
            url = f"http://127.0.0.1:{endpoint.stdout.readline().split()[0]}/healthz"
            beside = "a GIL-holding thread" + ", under a CPU hog" * args.hog
            print(f"{args.rate:g} Hz for {args.seconds:g} s beside {beside}")
            for kind in (Prober, ProbeProcess):
                _run(kind, url, args.seconds, args.rate)
            endpoint.stdin.close()
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


if __name__ == "__main__":
    main()
