"""What the catalogue's stress images run: real CPU and memory load, with stress/stress-ng options.

    python -m harness.localfleet.stress [--cpu N] [--cpu-load PCT] [--vm N] [--vm-bytes SIZE] [--timeout T]

Each --cpu worker is a process that spins (busy PCT of every 100 ms with --cpu-load). Each --vm worker
maps SIZE bytes (stress's suffixes: B, K, M, G, T in powers of 1024; stress-ng's PCT% of the available
memory) and writes every page, so the memory is resident and charged to the container's cgroup; it
holds it until the end (stress's --vm-hang 0, stress-ng's --vm-keep). The memory lives in this process,
so the kernel's OOM killer kills the container's main process, as it does a stress container's.
Options of other stressors (--io, --hdd, ...) are reported and ignored. Without --timeout it runs
until killed; with it, it exits 0 when the time is up.
"""

import argparse
import ctypes
import mmap
import os
import re
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
CHUNK = 64 << 20
PAGE = mmap.PAGESIZE
SIZE = re.compile(r"(\d+(?:\.\d+)?)([bkmgt%]?)", re.IGNORECASE)
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdy]?)", re.IGNORECASE)
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 31536000}
POWERS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def size(text: str) -> int:
    """Bytes from a stress size: 256M, 1g, 4096, 50% (of the available memory)."""
    match = SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (expected e.g. 256M, 1G or 50%)")
    number, unit = float(match[1]), match[2].lower()
    if unit == "%":
        return int(available_memory() * number / 100)
    return int(number * 1024 ** POWERS[unit])


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def duration(text: str) -> float:
    """Seconds from a stress timeout: 60, 30s, 5m, 1h."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r} (expected e.g. 60, 30s or 5m)")
    return float(match[1]) * SECONDS[match[2].lower()]


def spin(load: int) -> None:
    """A CPU worker: busy `load` percent of every 100 ms, until its parent dies."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    busy = 0.1 * load / 100
    while True:
        started = time.monotonic()
        while time.monotonic() - started < busy:
            pass
        if load < 100:
            time.sleep(0.1 - busy)


def hog(total: int) -> list[mmap.mmap]:
    """Map `total` bytes in chunks and write every page of them."""
    held = []
    while total > 0:
        chunk = mmap.mmap(-1, min(CHUNK, total))
        chunk[::PAGE] = b"\x01" * len(range(0, len(chunk), PAGE))
        held.append(chunk)
        total -= len(chunk)
    return held


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="stress", description=__doc__.splitlines()[0])
    top.add_argument("-c", "--cpu", type=int, help="CPU workers (0, as with stress-ng: one per CPU)")
    top.add_argument("-l", "--cpu-load", type=int, default=100, help="percent busy per CPU worker")
    top.add_argument("-m", "--vm", type=int, default=0, help="memory workers")
    top.add_argument("--vm-bytes", type=size, default=size("256M"), help="bytes per memory worker")
    top.add_argument("-t", "--timeout", type=duration, default=0.0, help="stop after this long")
    top.add_argument("-v", "--verbose", action="store_true")
    top.add_argument("--vm-hang", "--vm-keep", nargs="?", help=argparse.SUPPRESS)
    return top


def main(argv: list[str] | None = None) -> None:
    args, ignored = parser().parse_known_args(argv)
    pid = os.getpid()
    if ignored:
        print(
            f"stress: info: [{pid}] ignoring {' '.join(ignored)}: only --cpu and --vm are stressed",
            flush=True,
        )
    workers = 0 if args.cpu is None else args.cpu or os.cpu_count() or 1
    print(f"stress: info: [{pid}] dispatching hogs: {workers} cpu, 0 io, {args.vm} vm, 0 hdd", flush=True)
    started = time.monotonic()
    for _ in range(workers):
        if os.fork() == 0:
            spin(min(max(args.cpu_load, 1), 100))
    held = hog(args.vm * args.vm_bytes)
    print(f"stress: info: [{pid}] {sum(map(len, held)) >> 20} MiB resident", flush=True)
    if args.timeout:
        time.sleep(max(0.0, args.timeout - (time.monotonic() - started)))
        print(f"stress: info: [{pid}] successful run completed in {args.timeout:g}s", flush=True)
        sys.exit(0)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
