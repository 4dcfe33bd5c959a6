"""Why the drill's probes run in a process of their own: a thread prober beside a thread that holds the GIL
(JSON parsing, as the kubernetes client does with list responses) against the same prober in a child
process (harness.probeprocess), each at 50 Hz against one local endpoint. Optionally with a CPU hog
(`--hog`: a busy loop on every core, `--hog N`: N of them), as when other fleets run on the runner. The
probes run at traffic.PROBE_NICE where permitted (the first line says which). Prints sent and missed slots
and the share of the schedule kept for each; asserts nothing.

    .venv/bin/python bench/probe_isolation.py [--seconds 10] [--rate 50] [--hog [N]]
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
from harness.traffic import PROBE_NICE, Prober, raise_priority

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


def _may_raise() -> bool:
    """Whether probing threads get PROBE_NICE here (tried in a throwaway thread: ours stay as they are)."""
    raised: list[bool] = []
    thread = threading.Thread(target=lambda: raised.append(raise_priority()))
    thread.start()
    thread.join()
    return raised[0]


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
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--hog", type=int, nargs="?", const=cores, default=0, help="busy loops beside (alone: one per core)"
    )
    args = parser.parse_args()
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(args.hog)]
    for hog in hogs:
        hog.start()
    argv = [sys.executable, str(ENDPOINT), "--serve", "1"]
    try:
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as endpoint:
            assert endpoint.stdout is not None and endpoint.stdin is not None
            url = f"http://127.0.0.1:{endpoint.stdout.readline().split()[0]}/healthz"
            hogged = f", under {args.hog} busy loops on {cores} cores" if args.hog else ""
            priority = f"nice {PROBE_NICE}" if _may_raise() else "the harness's priority (not permitted)"
            beside = f"a GIL-holding thread{hogged}"
            print(f"{args.rate:g} Hz for {args.seconds:g} s beside {beside}; probes at {priority}")
            for kind in (Prober, ProbeProcess):
                _run(kind, url, args.seconds, args.rate)
            endpoint.stdin.close()
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


if __name__ == "__main__":
    main()
